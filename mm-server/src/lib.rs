//! mm-server

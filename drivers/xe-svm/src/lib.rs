//! xe-svm

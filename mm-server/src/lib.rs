//! The memory-pressure broker core (DESIGN.md 1, rule 5 and rule 7).
//!
//! It accounts VRAM per world (buffer objects, SVM) from the usage the GPU
//! server reports, and serves reservations: an allocation that does not fit
//! now is stalled here, in the broker, where the requester holds no page or
//! BO lock (rule 5), until room appears or its timeout passes. It holds no
//! lock of anyone else's. The eviction loop that makes room (equal pressure
//! on both worlds, rule 7) is issue 7; until then room appears when a
//! server releases or reports lower usage.

pub mod broker;

//! Fuzzes the pager's core with sequences of requests (not only its
//! decoders): `pager::testing::sequence` reads the input as a program of
//! clients' requests, faults, GPU migrations and session ends, and checks
//! isolation, budgets and that everything comes back.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pager::testing::sequence::run(data);
});

//! Fuzzes mm-server's broker with sequences of decoded `Pressure`
//! requests (`mm_server::sequence`), checked against a model of its
//! figures.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mm_server::sequence::run(data);
});

//! Fuzzes the pager_migrate decoders: frame header, requests, replies, error frames.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ipc_protocol::fuzzing::decode_frame::<ipc_protocol::interfaces::pager_migrate::PagerMigrate>(
        data,
    );
});

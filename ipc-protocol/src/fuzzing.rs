//! Decoder entry points for the cargo-fuzz targets in `fuzz/` (and a
//! bounded smoke run in the conformance suite). Each decodes arbitrary bytes
//! as a frame of one interface; whatever decodes must re-encode to the same
//! bytes (the encoding is canonical), otherwise this panics: a fuzz finding.

use crate::frame::Frame;
use crate::interfaces::*;
use crate::{Interface, Message, Writer};

/// `data[0] % 5` is the number of handles that "arrived" with the frame.
pub fn decode_frame<I: Interface>(data: &[u8]) {
    let Some((&h, bytes)) = data.split_first() else {
        return;
    };
    let handles = (h % 5) as usize;
    let Ok(frame) = Frame::parse(bytes, handles) else {
        return;
    };
    if let Ok(m) = I::Request::decode_payload(frame.header.opcode, frame.payload, handles) {
        check_canonical(&m, frame.payload);
    }
    if let Ok(m) = I::Reply::decode_payload(frame.header.opcode, frame.payload, handles) {
        check_canonical(&m, frame.payload);
    }
    let _ = crate::frame::ErrorPayload::<I::Error>::decode(frame.payload);
}

fn check_canonical<M: Message>(m: &M, payload: &[u8]) {
    let mut w = Writer::new();
    m.encode_payload(&mut w);
    assert_eq!(w.into_bytes(), payload, "non-canonical decode of {m:?}");
}

/// Every interface's decoders over one input.
pub fn decode_all(data: &[u8]) {
    decode_frame::<pager::Pager>(data);
    decode_frame::<pager_migrate::PagerMigrate>(data);
    decode_frame::<pager_reclaim::PagerReclaim>(data);
    decode_frame::<gpu::Gpu>(data);
    decode_frame::<gpu_notify::GpuNotify>(data);
    decode_frame::<gpu_shrink::GpuShrink>(data);
    decode_frame::<pressure::Pressure>(data);
}

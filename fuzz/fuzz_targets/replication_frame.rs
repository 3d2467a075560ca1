//! One CopyData payload of the replication sub-protocol (XLogData, keepalive) through the frame
//! parser, and an XLogData's data through the pgoutput decoder.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgcdc::source::frame::{self, Frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::XLogData { data, .. }) = frame::parse(Bytes::copy_from_slice(data)) {
        let _ = pgcdc::pgoutput::decode(&data, false);
        let _ = pgcdc::pgoutput::decode(&data, true);
    }
});

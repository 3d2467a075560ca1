//! A sequence of pgoutput messages (each a big-endian u32 length, then the message) through the
//! decoder and the row assembler, as the replication stream feeds them. Any byte string must
//! give errors, never a panic; the corpus (`corpus/pgoutput_decoder`) is real pgoutput captured
//! from a test cluster by `tests/fuzz_corpus.rs`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgcdc::changes::Assembler;
use pgcdc::pgoutput::{self, Message};

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(true);
    let mut changes = Vec::new();
    let mut in_stream = false;
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = (u32::from_be_bytes(*len) as usize).min(tail.len());
        let (message, tail) = tail.split_at(len);
        rest = tail;
        let Ok(message) = pgoutput::decode(&Bytes::copy_from_slice(message), in_stream) else {
            continue;
        };
        match &message {
            Message::StreamStart(_) => in_stream = true,
            Message::StreamStop => in_stream = false,
            _ => {}
        }
        // Streamed rows go to their own spool in pgcdc; here they meet the assembler's state
        // machine, which must reject them without panicking.
        let _ = assembler.apply(message, &mut changes);
        changes.clear();
    }
});

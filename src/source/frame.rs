//! The streaming-replication frames carried inside CopyData, as pure functions.
//!
//! Once START_REPLICATION succeeds the connection is in CopyBoth mode and every CopyData payload
//! starts with a one-byte kind: `w` (XLogData: a pgoutput message), `k` (primary keepalive) from
//! the server, and `r` (standby status update) from us. The layouts are fixed; see "Streaming
//! Replication Protocol" in the PostgreSQL docs (protocol-replication.html).

use bytes::{BufMut, Bytes, BytesMut};

use crate::lsn::Lsn;

const XLOG_DATA: u8 = b'w';
const PRIMARY_KEEPALIVE: u8 = b'k';
const STANDBY_STATUS_UPDATE: u8 = b'r';

/// A frame the server sends inside CopyData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A chunk of decoded WAL: exactly one pgoutput message for logical replication.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// The server's current end of WAL; `reply_requested` means "answer now or be dropped".
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("replication frame is empty")]
    Empty,
    #[error(
        "replication frame {kind:?} is {len} bytes, shorter than its fixed {needed}-byte header"
    )]
    Truncated {
        kind: char,
        len: usize,
        needed: usize,
    },
    #[error("unknown replication frame kind {0:?} (expected 'w' or 'k')")]
    UnknownKind(char),
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at + 8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Splits one CopyData payload into a [`Frame`]. Never panics on short or unknown input.
pub fn parse(payload: Bytes) -> Result<Frame, FrameError> {
    let kind = *payload.first().ok_or(FrameError::Empty)?;
    match kind {
        XLOG_DATA => {
            // kind, walStart, walEnd, sendTime, then the message.
            const HEADER: usize = 1 + 8 + 8 + 8;
            let truncated = || FrameError::Truncated {
                kind: 'w',
                len: payload.len(),
                needed: HEADER,
            };
            let wal_start = read_u64(&payload, 1).ok_or_else(truncated)?;
            let wal_end = read_u64(&payload, 9).ok_or_else(truncated)?;
            if payload.len() < HEADER {
                return Err(truncated());
            }
            Ok(Frame::XLogData {
                wal_start: Lsn::new(wal_start),
                wal_end: Lsn::new(wal_end),
                data: payload.slice(HEADER..),
            })
        }
        PRIMARY_KEEPALIVE => {
            // kind, walEnd, sendTime, replyRequested.
            const LEN: usize = 1 + 8 + 8 + 1;
            let wal_end = read_u64(&payload, 1);
            match (wal_end, payload.get(LEN - 1)) {
                (Some(wal_end), Some(&reply)) => Ok(Frame::Keepalive {
                    wal_end: Lsn::new(wal_end),
                    reply_requested: reply != 0,
                }),
                _ => Err(FrameError::Truncated {
                    kind: 'k',
                    len: payload.len(),
                    needed: LEN,
                }),
            }
        }
        other => Err(FrameError::UnknownKind(char::from(other))),
    }
}

/// The standby status update payload: what we have received (`write`), what is durable
/// (`flush`, which moves the slot's confirmed_flush_lsn), and the same for `apply`.
pub fn status_update(write: Lsn, flush: Lsn, now_unix_micros: i64, reply: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(34);
    buf.put_u8(STANDBY_STATUS_UPDATE);
    buf.put_u64(write.as_u64());
    buf.put_u64(flush.as_u64());
    buf.put_u64(flush.as_u64());
    buf.put_i64(crate::pg_time::from_unix_micros(now_unix_micros));
    buf.put_u8(u8::from(reply));
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata() {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(0x10);
        b.put_u64(0x20);
        b.put_i64(7);
        b.put_slice(b"Bpayload");
        let frame = parse(b.freeze()).unwrap();
        assert_eq!(
            frame,
            Frame::XLogData {
                wal_start: Lsn::new(0x10),
                wal_end: Lsn::new(0x20),
                data: Bytes::from_static(b"Bpayload"),
            }
        );
    }

    #[test]
    fn parses_keepalive() {
        let mut b = BytesMut::new();
        b.put_u8(b'k');
        b.put_u64(0xABCD);
        b.put_i64(1);
        b.put_u8(1);
        assert_eq!(
            parse(b.freeze()).unwrap(),
            Frame::Keepalive {
                wal_end: Lsn::new(0xABCD),
                reply_requested: true
            }
        );
    }

    #[test]
    fn short_and_unknown_frames_are_errors() {
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(1);
        k.put_i64(1);
        k.put_u8(0);
        let k = k.freeze();
        for len in 0..k.len() {
            assert!(parse(k.slice(..len)).is_err());
        }
        let w = Bytes::from(vec![b'w'; 24]);
        assert!(matches!(
            parse(w),
            Err(FrameError::Truncated { kind: 'w', .. })
        ));
        assert_eq!(
            parse(Bytes::from_static(b"z")),
            Err(FrameError::UnknownKind('z'))
        );
    }

    #[test]
    fn status_update_layout() {
        let b = status_update(
            Lsn::new(5),
            Lsn::new(3),
            crate::pg_time::PG_EPOCH_UNIX_MICROS + 42,
            true,
        );
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(u64::from_be_bytes(b[1..9].try_into().unwrap()), 5);
        assert_eq!(u64::from_be_bytes(b[9..17].try_into().unwrap()), 3);
        assert_eq!(i64::from_be_bytes(b[25..33].try_into().unwrap()), 42);
        assert_eq!(b[33], 1);
    }
}

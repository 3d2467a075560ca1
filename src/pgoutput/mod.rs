//! A pure decoder for the `pgoutput` logical replication protocol: bytes in, typed messages out.
//!
//! Contract:
//! - **Pure.** No I/O, no async, no logging, no global state. The only state the protocol needs —
//!   whether we are between Stream Start and Stream Stop — is passed in by the caller.
//! - **Never panics.** Every read goes through a bounds-checked cursor that returns
//!   [`DecodeError`]; direct slice indexing is denied by lint in this module. Counts read from the
//!   wire never drive an allocation larger than the message itself.
//! - **Zero-copy values.** Column values and logical-message payloads are [`Bytes::slice`]s of the
//!   input, so they share its allocation.
//! - **Strict.** A message must be consumed exactly: unknown tags, unknown enum bytes and trailing
//!   bytes are errors naming the message kind and the byte offset, never silently skipped.
//!
//! Input is the payload of one `XLogData` (`w`) CopyData message, i.e. what follows its 24-byte
//! header; the first byte is the message tag. Layouts are those of protocol versions 1 and 2 in
//! [Logical Replication Message Formats][formats]; the message flow (Begin … Commit, and the
//! streaming blocks of protocol v2) is described in [Logical Streaming Replication Protocol][proto].
//!
//! Not decoded: the protocol v3 two-phase messages (`b`, `P`, `K`, `r`, `p`) — pgcdc never enables
//! `two_phase` — and the protocol v4 parallel-streaming extension of Stream Abort. Both surface as
//! errors rather than being guessed at.
//!
//! [formats]: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
//! [proto]: https://www.postgresql.org/docs/current/protocol-logical-replication.html

#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::arithmetic_side_effects
)]
#![warn(missing_docs)]

mod error;
mod message;
mod tuple;

use bytes::Bytes;

pub use error::DecodeError;
pub use message::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, Origin, Relation,
    RelationId, ReplicaIdentity, StreamAbort, StreamCommit, StreamStart, Truncate, Type, Update,
    Xid,
};
pub use tuple::{Tuple, TupleData};

use cursor::Cursor;

/// Every tag and enum byte of the protocol, named as in the PostgreSQL docs.
pub mod tag {
    /// `B` Begin.
    pub const BEGIN: u8 = b'B';
    /// `C` Commit.
    pub const COMMIT: u8 = b'C';
    /// `O` Origin.
    pub const ORIGIN: u8 = b'O';
    /// `R` Relation.
    pub const RELATION: u8 = b'R';
    /// `Y` Type.
    pub const TYPE: u8 = b'Y';
    /// `I` Insert.
    pub const INSERT: u8 = b'I';
    /// `U` Update.
    pub const UPDATE: u8 = b'U';
    /// `D` Delete.
    pub const DELETE: u8 = b'D';
    /// `T` Truncate.
    pub const TRUNCATE: u8 = b'T';
    /// `M` logical decoding Message.
    pub const MESSAGE: u8 = b'M';
    /// `S` Stream Start (protocol v2).
    pub const STREAM_START: u8 = b'S';
    /// `E` Stream Stop (protocol v2).
    pub const STREAM_STOP: u8 = b'E';
    /// `c` Stream Commit (protocol v2).
    pub const STREAM_COMMIT: u8 = b'c';
    /// `A` Stream Abort (protocol v2).
    pub const STREAM_ABORT: u8 = b'A';

    /// `b` Begin Prepare (protocol v3, two-phase; not decoded).
    pub const BEGIN_PREPARE: u8 = b'b';
    /// `P` Prepare (protocol v3, two-phase; not decoded).
    pub const PREPARE: u8 = b'P';
    /// `K` Commit Prepared (protocol v3, two-phase; not decoded). Same byte as [`TUPLE_KEY`],
    /// which is fine: one is a message tag, the other a marker inside Update/Delete.
    pub const COMMIT_PREPARED: u8 = b'K';
    /// `r` Rollback Prepared (protocol v3, two-phase; not decoded).
    pub const ROLLBACK_PREPARED: u8 = b'r';
    /// `p` Stream Prepare (protocol v3, two-phase; not decoded).
    pub const STREAM_PREPARE: u8 = b'p';

    /// `N`: a new tuple follows (Insert, Update).
    pub const TUPLE_NEW: u8 = b'N';
    /// `K`: a key-only old tuple follows (Update, Delete).
    pub const TUPLE_KEY: u8 = b'K';
    /// `O`: a full old tuple follows (Update, Delete).
    pub const TUPLE_OLD: u8 = b'O';

    /// `n`: NULL column value in TupleData.
    pub const DATA_NULL: u8 = b'n';
    /// `u`: unchanged TOASTed column value in TupleData.
    pub const DATA_UNCHANGED_TOAST: u8 = b'u';
    /// `t`: text-format column value in TupleData.
    pub const DATA_TEXT: u8 = b't';
    /// `b`: binary-format column value in TupleData.
    pub const DATA_BINARY: u8 = b'b';

    /// `d`: replica identity DEFAULT.
    pub const REPLICA_IDENTITY_DEFAULT: u8 = b'd';
    /// `n`: replica identity NOTHING.
    pub const REPLICA_IDENTITY_NOTHING: u8 = b'n';
    /// `f`: replica identity FULL.
    pub const REPLICA_IDENTITY_FULL: u8 = b'f';
    /// `i`: replica identity USING INDEX.
    pub const REPLICA_IDENTITY_INDEX: u8 = b'i';
}

/// Flag bits inside the protocol's Int8 flag/option fields.
pub mod flags {
    /// Relation column flags: the column is part of the replica identity key.
    pub const COLUMN_KEY: u8 = 1;
    /// Truncate options: `CASCADE`.
    pub const TRUNCATE_CASCADE: u8 = 1;
    /// Truncate options: `RESTART IDENTITY`.
    pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;
    /// Message flags: the logical decoding message is transactional.
    pub const MESSAGE_TRANSACTIONAL: u8 = 1;
}

/// Decodes one pgoutput message.
///
/// `in_stream` must be true between a Stream Start and the matching Stream Stop: protocol v2 then
/// prefixes Relation, Type, Insert, Update, Delete, Truncate and Message with the streamed
/// transaction's xid (returned as `xid: Some(..)`), and nothing in the message itself says so.
/// Begin, Commit, Origin and the Stream messages have the same layout either way; the decoder does
/// not check that the message is legal in the current state — that is the caller's state machine.
///
/// The whole buffer must be one message: bytes left over after its last field are an error.
pub fn decode(buf: &Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::Truncated {
            message: "pgoutput",
            field: "message tag",
            at: 0,
            needed: 1,
            available: 0,
        });
    };
    let Some(kind) = kind_of(tag) else {
        return Err(DecodeError::UnknownTag { tag });
    };
    let mut cur = Cursor::new(buf, 1, kind);
    let msg = match tag {
        tag::BEGIN => Message::Begin(message::decode_begin(&mut cur)?),
        tag::COMMIT => Message::Commit(message::decode_commit(&mut cur)?),
        tag::ORIGIN => Message::Origin(message::decode_origin(&mut cur)?),
        tag::RELATION => Message::Relation(message::decode_relation(&mut cur, in_stream)?),
        tag::TYPE => Message::Type(message::decode_type(&mut cur, in_stream)?),
        tag::INSERT => Message::Insert(message::decode_insert(&mut cur, in_stream)?),
        tag::UPDATE => Message::Update(message::decode_update(&mut cur, in_stream)?),
        tag::DELETE => Message::Delete(message::decode_delete(&mut cur, in_stream)?),
        tag::TRUNCATE => Message::Truncate(message::decode_truncate(&mut cur, in_stream)?),
        tag::MESSAGE => Message::Message(message::decode_logical_message(&mut cur, in_stream)?),
        tag::STREAM_START => Message::StreamStart(message::decode_stream_start(&mut cur)?),
        tag::STREAM_STOP => Message::StreamStop,
        tag::STREAM_COMMIT => Message::StreamCommit(message::decode_stream_commit(&mut cur)?),
        tag::STREAM_ABORT => Message::StreamAbort(message::decode_stream_abort(&mut cur)?),
        // `kind_of` accepted only the tags above.
        _ => return Err(DecodeError::UnknownTag { tag }),
    };
    cur.finish()?;
    Ok(msg)
}

/// The docs' name for each decodable tag; `None` means [`DecodeError::UnknownTag`].
fn kind_of(tag: u8) -> Option<&'static str> {
    Some(match tag {
        tag::BEGIN => "Begin",
        tag::COMMIT => "Commit",
        tag::ORIGIN => "Origin",
        tag::RELATION => "Relation",
        tag::TYPE => "Type",
        tag::INSERT => "Insert",
        tag::UPDATE => "Update",
        tag::DELETE => "Delete",
        tag::TRUNCATE => "Truncate",
        tag::MESSAGE => "Message",
        tag::STREAM_START => "Stream Start",
        tag::STREAM_STOP => "Stream Stop",
        tag::STREAM_COMMIT => "Stream Commit",
        tag::STREAM_ABORT => "Stream Abort",
        _ => return None,
    })
}

mod cursor {
    //! The bounds-checked reader every decoder goes through: a forward-only reader over one
    //! message buffer whose every read returns `Result`.
    //!
    //! Contract: never panics, never indexes directly; offsets in errors are absolute positions in
    //! the buffer (tag byte = 0).

    use bytes::Bytes;

    use super::DecodeError;
    use crate::lsn::Lsn;

    pub(crate) struct Cursor<'a> {
        buf: &'a Bytes,
        pos: usize,
        message: &'static str,
    }

    impl<'a> Cursor<'a> {
        /// Starts reading `buf` at `pos`, attributing errors to `message`.
        pub(crate) fn new(buf: &'a Bytes, pos: usize, message: &'static str) -> Self {
            Cursor { buf, pos, message }
        }

        pub(crate) fn position(&self) -> usize {
            self.pos
        }

        pub(crate) fn message(&self) -> &'static str {
            self.message
        }

        pub(crate) fn remaining(&self) -> usize {
            self.buf.len().saturating_sub(self.pos)
        }

        fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
            DecodeError::Truncated {
                message: self.message,
                field,
                at: self.pos,
                needed,
                available: self.remaining(),
            }
        }

        /// Advances over `n` bytes and returns their range, or fails without moving.
        fn advance(
            &mut self,
            n: usize,
            field: &'static str,
        ) -> Result<std::ops::Range<usize>, DecodeError> {
            match self.pos.checked_add(n) {
                Some(end) if end <= self.buf.len() => {
                    let range = self.pos..end;
                    self.pos = end;
                    Ok(range)
                }
                _ => Err(self.truncated(field, n)),
            }
        }

        fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
            let start = self.pos;
            let range = self.advance(N, field)?;
            self.buf
                .get(range)
                .and_then(|s| <[u8; N]>::try_from(s).ok())
                .ok_or_else(|| {
                    // Unreachable after `advance`, but reported rather than asserted.
                    self.pos = start;
                    self.truncated(field, N)
                })
        }

        pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
            self.array::<1>(field).map(|[b]| b)
        }

        pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
            self.array(field).map(i32::from_be_bytes)
        }

        pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
            self.array(field).map(u32::from_be_bytes)
        }

        pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
            self.array(field).map(i64::from_be_bytes)
        }

        pub(crate) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
            self.array(field).map(|b| Lsn::new(u64::from_be_bytes(b)))
        }

        fn negative(&self, field: &'static str, at: usize, value: i32) -> DecodeError {
            DecodeError::NegativeLength {
                message: self.message,
                field,
                at,
                value,
            }
        }

        /// An `Int16` count; the protocol's counts are signed, so negative values are errors.
        pub(crate) fn count_i16(&mut self, field: &'static str) -> Result<usize, DecodeError> {
            let at = self.pos;
            let v = self.array(field).map(i16::from_be_bytes)?;
            usize::try_from(v).map_err(|_| self.negative(field, at, i32::from(v)))
        }

        /// An `Int32` length or count; negative values are errors.
        pub(crate) fn len_i32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
            let at = self.pos;
            let v = self.i32(field)?;
            usize::try_from(v).map_err(|_| self.negative(field, at, v))
        }

        /// `n` bytes as a zero-copy slice of the buffer.
        pub(crate) fn bytes(
            &mut self,
            n: usize,
            field: &'static str,
        ) -> Result<Bytes, DecodeError> {
            let range = self.advance(n, field)?;
            // `advance` checked `range.end <= len`, so `slice` cannot panic.
            Ok(self.buf.slice(range))
        }

        /// A NUL-terminated UTF-8 string; the terminator is consumed but not returned.
        pub(crate) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
            let start = self.pos;
            let rest = self.buf.get(start..).unwrap_or_default();
            let Some(len) = rest.iter().position(|&b| b == 0) else {
                return Err(self.truncated(field, rest.len().saturating_add(1)));
            };
            let raw = rest.get(..len).unwrap_or_default();
            let s = std::str::from_utf8(raw).map_err(|e| DecodeError::InvalidUtf8 {
                message: self.message,
                field,
                at: start.saturating_add(e.valid_up_to()),
            })?;
            let s = s.to_owned();
            // `len + 1` is within the buffer: the NUL sits at `start + len`.
            self.advance(len.saturating_add(1), field)?;
            Ok(s)
        }

        /// Fails if any byte is left: see [`DecodeError::TrailingBytes`].
        pub(crate) fn finish(self) -> Result<(), DecodeError> {
            match self.remaining() {
                0 => Ok(()),
                remaining => Err(DecodeError::TrailingBytes {
                    message: self.message,
                    at: self.pos,
                    remaining,
                }),
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    /// Test-only encoder: writes fields in wire order, exactly as the docs list them.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(t: u8) -> Enc {
            Enc(vec![t])
        }
        fn u8(mut self, v: u8) -> Enc {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Enc {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Enc {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Enc {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Enc {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Enc {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn xid(self, xid: Option<u32>) -> Enc {
            match xid {
                Some(x) => self.u32(x),
                None => self,
            }
        }
        fn str(mut self, s: &str) -> Enc {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, b: &[u8]) -> Enc {
            self.0.extend_from_slice(b);
            self
        }
        /// TupleData block.
        fn tuple(self, cols: &[TupleData]) -> Enc {
            let mut e = self.i16(cols.len() as i16);
            for c in cols {
                e = match c {
                    TupleData::Null => e.u8(b'n'),
                    TupleData::UnchangedToast => e.u8(b'u'),
                    TupleData::Text(v) => e.u8(b't').i32(v.len() as i32).raw(v),
                    TupleData::Binary(v) => e.u8(b'b').i32(v.len() as i32).raw(v),
                };
            }
            e
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(s: &'static str) -> TupleData {
        TupleData::Text(Bytes::from_static(s.as_bytes()))
    }

    const TS: i64 = 784_111_777_000_123; // 2024-11-06 roughly, µs since 2000-01-01
    const LSN_A: u64 = 0x16_B374_D848;
    const LSN_B: u64 = 0x16_B374_D8A0;

    fn row() -> Vec<TupleData> {
        vec![
            text("42"),
            TupleData::Null,
            TupleData::UnchangedToast,
            TupleData::Binary(Bytes::from_static(&[0, 1, 0xff])),
            text(""),
        ]
    }

    fn key_row() -> Vec<TupleData> {
        vec![
            text("42"),
            TupleData::Null,
            TupleData::Null,
            TupleData::Null,
            TupleData::Null,
        ]
    }

    /// Every data message that takes the streaming xid, encoded with `xid` (None = outside a
    /// stream block), paired with what it must decode to.
    fn xid_samples(xid: Option<u32>) -> Vec<(Bytes, Message)> {
        vec![
            (
                Enc::tag(b'R')
                    .xid(xid)
                    .u32(16_384)
                    .str("public")
                    .str("orders")
                    .u8(b'd')
                    .i16(3)
                    .u8(1)
                    .str("id")
                    .u32(20)
                    .i32(-1)
                    .u8(0)
                    .str("note")
                    .u32(1043)
                    .i32(68)
                    .u8(0)
                    .str("ünïcødé")
                    .u32(99_999)
                    .i32(-1)
                    .bytes(),
                Message::Relation(Relation {
                    xid,
                    id: 16_384,
                    namespace: "public".into(),
                    name: "orders".into(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: vec![
                        Column {
                            is_key: true,
                            name: "id".into(),
                            type_oid: 20,
                            type_modifier: -1,
                        },
                        Column {
                            is_key: false,
                            name: "note".into(),
                            type_oid: 1043,
                            type_modifier: 68,
                        },
                        Column {
                            is_key: false,
                            name: "ünïcødé".into(),
                            type_oid: 99_999,
                            type_modifier: -1,
                        },
                    ],
                }),
            ),
            (
                Enc::tag(b'R')
                    .xid(xid)
                    .u32(7)
                    .str("")
                    .str("empty")
                    .u8(b'f')
                    .i16(0)
                    .bytes(),
                Message::Relation(Relation {
                    xid,
                    id: 7,
                    namespace: String::new(),
                    name: "empty".into(),
                    replica_identity: ReplicaIdentity::Full,
                    columns: vec![],
                }),
            ),
            (
                Enc::tag(b'Y')
                    .xid(xid)
                    .u32(99_999)
                    .str("public")
                    .str("mood")
                    .bytes(),
                Message::Type(Type {
                    xid,
                    id: 99_999,
                    namespace: "public".into(),
                    name: "mood".into(),
                }),
            ),
            (
                Enc::tag(b'I')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'N')
                    .tuple(&row())
                    .bytes(),
                Message::Insert(Insert {
                    xid,
                    relation_id: 16_384,
                    new: Tuple(row()),
                }),
            ),
            (
                Enc::tag(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'N')
                    .tuple(&row())
                    .bytes(),
                Message::Update(Update {
                    xid,
                    relation_id: 16_384,
                    old: None,
                    new: Tuple(row()),
                }),
            ),
            (
                Enc::tag(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'K')
                    .tuple(&key_row())
                    .u8(b'N')
                    .tuple(&row())
                    .bytes(),
                Message::Update(Update {
                    xid,
                    relation_id: 16_384,
                    old: Some(OldTuple::Key(Tuple(key_row()))),
                    new: Tuple(row()),
                }),
            ),
            (
                Enc::tag(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'O')
                    .tuple(&row())
                    .u8(b'N')
                    .tuple(&row())
                    .bytes(),
                Message::Update(Update {
                    xid,
                    relation_id: 16_384,
                    old: Some(OldTuple::Full(Tuple(row()))),
                    new: Tuple(row()),
                }),
            ),
            (
                Enc::tag(b'D')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'K')
                    .tuple(&key_row())
                    .bytes(),
                Message::Delete(Delete {
                    xid,
                    relation_id: 16_384,
                    old: OldTuple::Key(Tuple(key_row())),
                }),
            ),
            (
                Enc::tag(b'D')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'O')
                    .tuple(&row())
                    .bytes(),
                Message::Delete(Delete {
                    xid,
                    relation_id: 16_384,
                    old: OldTuple::Full(Tuple(row())),
                }),
            ),
            (
                Enc::tag(b'T')
                    .xid(xid)
                    .i32(3)
                    .u8(3)
                    .u32(16_384)
                    .u32(16_390)
                    .u32(u32::MAX)
                    .bytes(),
                Message::Truncate(Truncate {
                    xid,
                    cascade: true,
                    restart_identity: true,
                    relation_ids: vec![16_384, 16_390, u32::MAX],
                }),
            ),
            (
                Enc::tag(b'T').xid(xid).i32(1).u8(2).u32(5).bytes(),
                Message::Truncate(Truncate {
                    xid,
                    cascade: false,
                    restart_identity: true,
                    relation_ids: vec![5],
                }),
            ),
            (
                Enc::tag(b'M')
                    .xid(xid)
                    .u8(1)
                    .u64(LSN_A)
                    .str("pgcdc")
                    .i32(4)
                    .raw(b"\0\xffok")
                    .bytes(),
                Message::Message(LogicalMessage {
                    xid,
                    transactional: true,
                    lsn: Lsn::new(LSN_A),
                    prefix: "pgcdc".into(),
                    content: Bytes::from_static(b"\0\xffok"),
                }),
            ),
            (
                Enc::tag(b'M')
                    .xid(xid)
                    .u8(0)
                    .u64(LSN_B)
                    .str("")
                    .i32(0)
                    .bytes(),
                Message::Message(LogicalMessage {
                    xid,
                    transactional: false,
                    lsn: Lsn::new(LSN_B),
                    prefix: String::new(),
                    content: Bytes::new(),
                }),
            ),
        ]
    }

    /// Messages whose layout does not depend on the stream state.
    fn plain_samples() -> Vec<(Bytes, Message)> {
        vec![
            (
                Enc::tag(b'B').u64(LSN_A).i64(TS).u32(771).bytes(),
                Message::Begin(Begin {
                    final_lsn: Lsn::new(LSN_A),
                    commit_ts: TS,
                    xid: 771,
                }),
            ),
            (
                Enc::tag(b'C').u8(0).u64(LSN_A).u64(LSN_B).i64(TS).bytes(),
                Message::Commit(Commit {
                    flags: 0,
                    commit_lsn: Lsn::new(LSN_A),
                    end_lsn: Lsn::new(LSN_B),
                    commit_ts: TS,
                }),
            ),
            (
                Enc::tag(b'O').u64(LSN_B).str("pg_16389").bytes(),
                Message::Origin(Origin {
                    commit_lsn: Lsn::new(LSN_B),
                    name: "pg_16389".into(),
                }),
            ),
            (
                Enc::tag(b'S').u32(900).u8(1).bytes(),
                Message::StreamStart(StreamStart {
                    xid: 900,
                    first_segment: true,
                }),
            ),
            (
                Enc::tag(b'S').u32(900).u8(0).bytes(),
                Message::StreamStart(StreamStart {
                    xid: 900,
                    first_segment: false,
                }),
            ),
            (Enc::tag(b'E').bytes(), Message::StreamStop),
            (
                Enc::tag(b'c')
                    .u32(900)
                    .u8(0)
                    .u64(LSN_A)
                    .u64(LSN_B)
                    .i64(-TS)
                    .bytes(),
                Message::StreamCommit(StreamCommit {
                    xid: 900,
                    flags: 0,
                    commit_lsn: Lsn::new(LSN_A),
                    end_lsn: Lsn::new(LSN_B),
                    commit_ts: -TS,
                }),
            ),
            (
                Enc::tag(b'A').u32(900).u32(901).bytes(),
                Message::StreamAbort(StreamAbort {
                    xid: 900,
                    subxid: 901,
                }),
            ),
        ]
    }

    /// Every sample with the `in_stream` flag it must be decoded with.
    fn all_samples() -> Vec<(Bytes, bool, Message)> {
        let mut out = Vec::new();
        for (b, m) in xid_samples(None) {
            out.push((b, false, m));
        }
        for (b, m) in xid_samples(Some(0xDEAD_BEEF)) {
            out.push((b, true, m));
        }
        for (b, m) in plain_samples() {
            out.push((b.clone(), false, m.clone()));
            out.push((b, true, m));
        }
        out
    }

    #[test]
    fn decodes_every_golden_message() {
        let samples = all_samples();
        let kinds: std::collections::BTreeSet<_> =
            samples.iter().map(|(_, _, m)| m.kind()).collect();
        assert_eq!(
            kinds.len(),
            14,
            "every Message variant is covered: {kinds:?}"
        );
        for (bytes, in_stream, expected) in samples {
            assert_eq!(
                decode(&bytes, in_stream).as_ref(),
                Ok(&expected),
                "bytes {bytes:02x?} in_stream={in_stream}"
            );
        }
    }

    #[test]
    fn begin_from_literal_bytes() {
        // Written out by hand rather than with `Enc`, so an encoder bug cannot hide a decoder bug.
        let raw = Bytes::from_static(&[
            b'B', // tag
            0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, // final LSN 16/B374D848
            0x00, 0x02, 0xC9, 0x2A, 0x6E, 0x1F, 0x9A, 0x3B, // commit ts
            0x00, 0x00, 0x03, 0x03, // xid 771
        ]);
        let Ok(Message::Begin(b)) = decode(&raw, false) else {
            panic!("not a Begin")
        };
        assert_eq!(b.final_lsn.to_string(), "16/B374D848");
        assert_eq!(b.commit_ts, 0x0002_C92A_6E1F_9A3B);
        assert_eq!(b.xid, 771);
    }

    #[test]
    fn insert_from_literal_bytes() {
        let raw = Bytes::from_static(&[
            b'I', 0, 0, 0x40, 0x00, // relation 16384
            b'N', 0, 3, // 3 columns
            b't', 0, 0, 0, 2, b'4', b'2', // '42'
            b'n', // NULL
            b'u', // unchanged toast
        ]);
        assert_eq!(
            decode(&raw, false),
            Ok(Message::Insert(Insert {
                xid: None,
                relation_id: 16_384,
                new: Tuple(vec![text("42"), TupleData::Null, TupleData::UnchangedToast]),
            }))
        );
    }

    #[test]
    fn stream_xid_is_read_only_when_in_stream() {
        // The same bytes mean different things depending on the caller's stream state: decoding
        // a streamed Insert as non-streamed misreads the xid as the relation id and then fails.
        let streamed = Enc::tag(b'I')
            .u32(900)
            .u32(16_384)
            .u8(b'N')
            .tuple(&[TupleData::Null])
            .bytes();
        assert!(matches!(
            decode(&streamed, true),
            Ok(Message::Insert(Insert {
                xid: Some(900),
                relation_id: 16_384,
                ..
            }))
        ));
        assert!(decode(&streamed, false).is_err());
    }

    #[test]
    fn every_truncated_prefix_is_an_error() {
        for (bytes, in_stream, _) in all_samples() {
            for len in 0..bytes.len() {
                let prefix = bytes.slice(..len);
                let r = decode(&prefix, in_stream);
                assert!(
                    matches!(r, Err(DecodeError::Truncated { .. })),
                    "prefix {len}/{} of {bytes:02x?} (in_stream={in_stream}) gave {r:?}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn truncation_error_names_message_field_and_offset() {
        let bytes = Enc::tag(b'C').u8(0).u64(LSN_A).u64(LSN_B).i64(TS).bytes();
        assert_eq!(
            decode(&bytes.slice(..12), false),
            Err(DecodeError::Truncated {
                message: "Commit",
                field: "end LSN",
                at: 10,
                needed: 8,
                available: 2,
            })
        );
        assert_eq!(
            decode(&Bytes::new(), false),
            Err(DecodeError::Truncated {
                message: "pgoutput",
                field: "message tag",
                at: 0,
                needed: 1,
                available: 0,
            })
        );
    }

    #[test]
    fn missing_string_terminator_is_truncated() {
        let bytes = Enc::tag(b'O').u64(LSN_A).raw(b"no_nul").bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::Truncated {
                message: "Origin",
                field: "origin name",
                at: 9,
                needed: 7,
                available: 6,
            })
        );
    }

    #[test]
    fn every_sample_with_trailing_byte_is_an_error() {
        for (bytes, in_stream, _) in all_samples() {
            let mut longer = bytes.to_vec();
            longer.push(0);
            let r = decode(&Bytes::from(longer), in_stream);
            assert_eq!(
                r.clone().err().map(|e| matches!(
                    e,
                    DecodeError::TrailingBytes { at, remaining: 1, .. } if at == bytes.len()
                )),
                Some(true),
                "{bytes:02x?} + 0x00 gave {r:?}"
            );
        }
    }

    #[test]
    fn parallel_stream_abort_fields_are_rejected_not_ignored() {
        let bytes = Enc::tag(b'A').u32(900).u32(900).u64(LSN_A).i64(TS).bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::TrailingBytes {
                message: "Stream Abort",
                at: 9,
                remaining: 16
            })
        );
    }

    #[test]
    fn unknown_tags_are_rejected() {
        for tag in [0u8, b'X', b'w', b'k', b'b', b'P', b'K', b'r', b'p', 0xff] {
            let bytes = Enc::tag(tag).raw(&[0; 32]).bytes();
            assert_eq!(decode(&bytes, false), Err(DecodeError::UnknownTag { tag }));
        }
    }

    #[test]
    fn unknown_tuple_kind_names_offset_and_byte() {
        let bytes = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(2)
            .u8(b'n')
            .u8(b'?')
            .bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::UnknownTupleKind {
                message: "Insert",
                at: 9,
                column: 1,
                kind: b'?'
            })
        );
    }

    #[test]
    fn unknown_replica_identity_is_rejected() {
        let bytes = Enc::tag(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'x')
            .i16(0)
            .bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::UnknownReplicaIdentity { at: 9, byte: b'x' })
        );
    }

    #[test]
    fn all_replica_identities_decode() {
        for (byte, expected) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            let bytes = Enc::tag(b'R')
                .u32(1)
                .str("s")
                .str("t")
                .u8(byte)
                .i16(0)
                .bytes();
            let Ok(Message::Relation(r)) = decode(&bytes, false) else {
                panic!("not a Relation")
            };
            assert_eq!(r.replica_identity, expected);
        }
    }

    #[test]
    fn non_utf8_names_the_field() {
        let bytes = Enc::tag(b'R')
            .u32(1)
            .str("public")
            .raw(b"ok\xc3(\0")
            .u8(b'd')
            .i16(0)
            .bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::InvalidUtf8 {
                message: "Relation",
                field: "relation name",
                at: 14,
            })
        );
        let bytes = Enc::tag(b'R')
            .u32(1)
            .str("public")
            .str("t")
            .u8(b'd')
            .i16(1)
            .u8(0)
            .raw(b"\xff\0")
            .u32(25)
            .i32(-1)
            .bytes();
        assert!(matches!(
            decode(&bytes, false),
            Err(DecodeError::InvalidUtf8 {
                field: "column name",
                ..
            })
        ));
    }

    #[test]
    fn bad_tuple_markers_are_rejected() {
        let cases = [
            (
                Enc::tag(b'I').u32(1).u8(b'K').tuple(&[]).bytes(),
                "Insert",
                5,
                b'K',
            ),
            (
                Enc::tag(b'U').u32(1).u8(b'X').tuple(&[]).bytes(),
                "Update",
                5,
                b'X',
            ),
            (
                Enc::tag(b'U')
                    .u32(1)
                    .u8(b'K')
                    .tuple(&[])
                    .u8(b'O')
                    .tuple(&[])
                    .bytes(),
                "Update",
                8,
                b'O',
            ),
            (
                Enc::tag(b'D').u32(1).u8(b'N').tuple(&[]).bytes(),
                "Delete",
                5,
                b'N',
            ),
        ];
        for (bytes, message, at, found) in cases {
            let r = decode(&bytes, false);
            assert!(
                matches!(
                    r,
                    Err(DecodeError::UnexpectedTupleMarker { message: m, at: a, found: f, .. })
                        if m == message && a == at && f == found
                ),
                "{bytes:02x?} gave {r:?}"
            );
        }
    }

    #[test]
    fn negative_counts_are_rejected() {
        let bytes = Enc::tag(b'T').i32(-1).u8(0).bytes();
        assert_eq!(
            decode(&bytes, false),
            Err(DecodeError::NegativeLength {
                message: "Truncate",
                field: "relation count",
                at: 1,
                value: -1
            })
        );
        let bytes = Enc::tag(b'M').u8(0).u64(0).str("p").i32(i32::MIN).bytes();
        assert!(matches!(
            decode(&bytes, false),
            Err(DecodeError::NegativeLength {
                field: "content length",
                ..
            })
        ));
        let bytes = Enc::tag(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'd')
            .i16(-3)
            .bytes();
        assert!(matches!(
            decode(&bytes, false),
            Err(DecodeError::NegativeLength {
                field: "column count",
                ..
            })
        ));
    }

    #[test]
    fn huge_counts_fail_cleanly() {
        let bytes = Enc::tag(b'T').i32(i32::MAX).u8(0).u32(1).bytes();
        assert!(matches!(
            decode(&bytes, false),
            Err(DecodeError::Truncated {
                field: "relation id",
                ..
            })
        ));
        let bytes = Enc::tag(b'M').u8(0).u64(0).str("p").i32(i32::MAX).bytes();
        assert!(matches!(
            decode(&bytes, false),
            Err(DecodeError::Truncated {
                field: "content",
                ..
            })
        ));
    }

    #[test]
    fn unchanged_toast_is_not_null() {
        assert_ne!(TupleData::UnchangedToast, TupleData::Null);
    }

    #[test]
    fn values_and_content_are_zero_copy() {
        let insert = Enc::tag(b'I').u32(1).u8(b'N').tuple(&row()).bytes();
        let range = insert.as_ptr_range();
        let Ok(Message::Insert(i)) = decode(&insert, false) else {
            panic!("not an Insert")
        };
        for v in &i.new.0 {
            if let TupleData::Text(b) | TupleData::Binary(b) = v
                && !b.is_empty()
            {
                assert!(range.contains(&b.as_ptr()));
            }
        }
        let msg = Enc::tag(b'M')
            .u8(1)
            .u64(0)
            .str("p")
            .i32(3)
            .raw(b"abc")
            .bytes();
        let range = msg.as_ptr_range();
        let Ok(Message::Message(m)) = decode(&msg, false) else {
            panic!("not a Message")
        };
        assert!(range.contains(&m.content.as_ptr()));
    }

    /// Deterministic xorshift64, so a failure reproduces from its iteration number.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        const TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrp";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..10_000 {
            let len = rng.below(64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Mostly valid tags and small tuple-ish bytes, so decoding gets past the first field.
            if let Some(first) = buf.first_mut()
                && rng.below(8) != 0
            {
                *first = TAGS[rng.below(TAGS.len() as u64) as usize];
            }
            if rng.below(2) == 0 {
                for b in buf.iter_mut().skip(1) {
                    if rng.below(3) == 0 {
                        const BYTES: &[u8] = b"\0\x01nutbNKOdfi";
                        *b = BYTES[rng.below(BYTES.len() as u64) as usize];
                    }
                }
            }
            let in_stream = rng.below(2) == 0;
            let r = std::panic::catch_unwind(|| decode(&Bytes::from(buf.clone()), in_stream));
            assert!(r.is_ok(), "iteration {i}: panic on {buf:02x?}");
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic() {
        let samples = all_samples();
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for i in 0..10_000 {
            let (bytes, in_stream, _) = &samples[rng.below(samples.len() as u64) as usize];
            let mut buf = bytes.to_vec();
            for _ in 0..=rng.below(3) {
                let pos = rng.below(buf.len() as u64) as usize;
                buf[pos] = rng.next() as u8;
            }
            let r = std::panic::catch_unwind(|| decode(&Bytes::from(buf.clone()), *in_stream));
            assert!(r.is_ok(), "iteration {i}: panic on {buf:02x?}");
        }
    }
}

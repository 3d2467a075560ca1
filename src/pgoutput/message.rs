//! The typed pgoutput messages and the per-message field decoders.
//!
//! Contract: pure and panic-free; each `decode_*` reads exactly the fields the PostgreSQL docs list
//! for that message (protocol versions 1 and 2) starting just after the tag byte, and leaves the
//! trailing-bytes check to [`decode`](super::decode). Field layouts follow
//! [Logical Replication Message Formats][formats]; the comments on each type repeat the quirks that
//! matter to a consumer.
//!
//! Integers are big-endian. LSNs are decoded into [`Lsn`]; timestamps are kept as the raw
//! `TimestampTz` (microseconds since 2000-01-01 00:00:00 UTC, the PostgreSQL epoch) because
//! converting them is a presentation concern.
//!
//! [formats]: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html

use bytes::Bytes;

use super::cursor::Cursor;
use super::tuple::{Tuple, decode_tuple};
use super::{DecodeError, flags, tag};
use crate::lsn::Lsn;

/// A relation's OID, as used by the server to refer back to a previous Relation message.
///
/// A plain alias (not a newtype) because it only ever flows from the decoder into a lookup table.
pub type RelationId = u32;

/// A PostgreSQL 32-bit transaction id (`TransactionId`), without epoch.
///
/// A plain alias: the decoder only transports it; wrap-around is irrelevant for matching a
/// Stream Start with its Stream Commit/Abort.
pub type Xid = u32;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: start of a (non-streamed) transaction.
    Begin(Begin),
    /// `C`: end of a (non-streamed) transaction.
    Commit(Commit),
    /// `O`: the transaction came from another replication origin.
    Origin(Origin),
    /// `R`: describes a relation; sent before the first change for it and after any schema change.
    Relation(Relation),
    /// `Y`: describes a non-built-in type used by a following Relation.
    Type(Type),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: one or more tables were truncated.
    Truncate(Truncate),
    /// `M`: a `pg_logical_emit_message` payload (only with the `messages` option).
    Message(LogicalMessage),
    /// `S`: start of a block of changes of an in-progress transaction (protocol v2 streaming).
    StreamStart(StreamStart),
    /// `E`: end of the current streamed block. It has no fields, not even an xid.
    StreamStop,
    /// `c`: a streamed transaction committed.
    StreamCommit(StreamCommit),
    /// `A`: a streamed (sub)transaction aborted.
    StreamAbort(StreamAbort),
}

impl Message {
    /// The message kind as named in the PostgreSQL docs, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Begin(_) => "Begin",
            Message::Commit(_) => "Commit",
            Message::Origin(_) => "Origin",
            Message::Relation(_) => "Relation",
            Message::Type(_) => "Type",
            Message::Insert(_) => "Insert",
            Message::Update(_) => "Update",
            Message::Delete(_) => "Delete",
            Message::Truncate(_) => "Truncate",
            Message::Message(_) => "Message",
            Message::StreamStart(_) => "Stream Start",
            Message::StreamStop => "Stream Stop",
            Message::StreamCommit(_) => "Stream Commit",
            Message::StreamAbort(_) => "Stream Abort",
        }
    }

    /// The (sub)transaction xid a message inside a stream block carries; `None` outside one and
    /// for messages that never carry it.
    pub fn stream_xid(&self) -> Option<Xid> {
        match self {
            Message::Relation(m) => m.xid,
            Message::Type(m) => m.xid,
            Message::Insert(m) => m.xid,
            Message::Update(m) => m.xid,
            Message::Delete(m) => m.xid,
            Message::Truncate(m) => m.xid,
            Message::Message(m) => m.xid,
            _ => None,
        }
    }
}

/// `B`: Int64 final LSN, Int64 commit timestamp, Int32 xid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record, i.e. where this transaction ends. Equal to the following
    /// [`Commit::commit_lsn`].
    pub final_lsn: Lsn,
    /// Commit time in µs since 2000-01-01 00:00:00 UTC. Known up front because pgoutput only
    /// sends a non-streamed transaction once it has committed.
    pub commit_ts: i64,
    /// Transaction id.
    pub xid: Xid,
}

/// `C`: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by PostgreSQL (always 0); kept raw rather than validated so a future flag
    /// does not break decoding.
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: the position to confirm as flushed once the transaction
    /// is durably written.
    pub end_lsn: Lsn,
    /// Commit time in µs since 2000-01-01 00:00:00 UTC.
    pub commit_ts: i64,
}

/// `O`: Int64 commit LSN on the origin server, String origin name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server (not a position in this server's WAL).
    pub commit_lsn: Lsn,
    /// Replication origin name.
    pub name: String,
}

/// `R`: [Int32 xid], Int32 relation OID, String namespace, String name, Int8 replica identity,
/// Int16 column count, then per column Int8 flags, String name, Int32 type OID, Int32 typmod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Xid of the streamed transaction this was sent in; `Some` only between Stream Start and
    /// Stream Stop.
    pub xid: Option<Xid>,
    /// Relation OID that later change messages refer to.
    pub id: RelationId,
    /// Schema name. pgoutput sends an empty string for `pg_catalog`.
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// `REPLICA IDENTITY` setting: decides what the old tuple of Update/Delete contains.
    pub replica_identity: ReplicaIdentity,
    /// Published columns, in the order tuple values are sent.
    pub columns: Vec<Column>,
}

/// The relation's `relreplident`, which decides what Update/Delete old tuples carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: primary key columns (old tuple is a `K` key tuple, only when a key column changed).
    Default,
    /// `n`: nothing; Update/Delete carry no usable old values.
    Nothing,
    /// `f`: all columns (old tuple is a full `O` tuple).
    Full,
    /// `i`: the columns of a chosen unique index (`K` tuple).
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Flag bit 1: the column is part of the replica identity key.
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// Type OID; for non-built-in types a [`Type`] message precedes the Relation.
    pub type_oid: u32,
    /// `atttypmod` (e.g. varchar length + 4); -1 when the type has none.
    pub type_modifier: i32,
}

/// `Y`: [Int32 xid], Int32 type OID, String namespace, String name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Type OID.
    pub id: u32,
    /// Schema name (empty for `pg_catalog`).
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// `I`: [Int32 xid], Int32 relation OID, Byte1 `N`, TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Relation the row belongs to.
    pub relation_id: RelationId,
    /// The inserted row.
    pub new: Tuple,
}

/// `U`: [Int32 xid], Int32 relation OID, optional (`K` | `O`) TupleData, Byte1 `N`, TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Relation the row belongs to.
    pub relation_id: RelationId,
    /// The old row image. With replica identity `DEFAULT`/`INDEX` it is only sent when a key
    /// column changed; with `FULL` always; with `NOTHING` never.
    pub old: Option<OldTuple>,
    /// The new row. Unmodified TOASTed columns arrive as [`TupleData::UnchangedToast`](super::TupleData::UnchangedToast).
    pub new: Tuple,
}

/// `D`: [Int32 xid], Int32 relation OID, (`K` | `O`) TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Relation the row belonged to.
    pub relation_id: RelationId,
    /// The deleted row's identity (key columns or the full row, per replica identity).
    pub old: OldTuple,
}

/// The old-row image of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns are meaningful; the other positions are
    /// [`TupleData::Null`](super::TupleData::Null) placeholders, not real NULLs.
    Key(Tuple),
    /// `O`: the full old row (replica identity `FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `T`: [Int32 xid], Int32 relation count, Int8 options, Int32 OID × count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Option bit 1: `TRUNCATE … CASCADE`.
    pub cascade: bool,
    /// Option bit 2: `TRUNCATE … RESTART IDENTITY`.
    pub restart_identity: bool,
    /// All truncated relations; one SQL TRUNCATE can name several tables, and cascading adds more.
    pub relation_ids: Vec<RelationId>,
}

/// `M`: [Int32 xid], Int8 flags, Int64 LSN, String prefix, Int32 length, Byte*n* content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Xid of the streamed transaction; `Some` only between Stream Start and Stream Stop.
    pub xid: Option<Xid>,
    /// Flag bit 1: emitted with `transactional = true`, so delivered inside its transaction;
    /// otherwise delivered immediately, outside any Begin/Commit.
    pub transactional: bool,
    /// LSN of the message record.
    pub lsn: Lsn,
    /// Prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// Arbitrary payload, a zero-copy slice of the input buffer.
    pub content: Bytes,
}

/// `S`: Int32 xid, Int8 first-segment flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed top-level transaction.
    pub xid: Xid,
    /// True for the first block of this transaction (the server sends 1).
    pub first_segment: bool,
}

/// `c`: Int32 xid, Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed top-level transaction that committed.
    pub xid: Xid,
    /// Currently unused by PostgreSQL (always 0); kept raw.
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time in µs since 2000-01-01 00:00:00 UTC.
    pub commit_ts: i64,
}

/// `A`: Int32 xid, Int32 subtransaction xid.
///
/// Only the protocol v2 fields are decoded. Protocol v4 with `streaming = parallel` (PG ≥ 16)
/// appends Int64 abort LSN and Int64 abort timestamp; pgcdc never requests that, so such a message
/// fails with [`DecodeError::TrailingBytes`] rather than being half-understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    /// The streamed top-level transaction.
    pub xid: Xid,
    /// The aborted subtransaction; equal to `xid` when the whole transaction aborted.
    pub subxid: Xid,
}

/// Reads the leading xid that protocol v2 adds to data messages inside a stream block.
fn stream_xid(cur: &mut Cursor<'_>, in_stream: bool) -> Result<Option<Xid>, DecodeError> {
    if in_stream {
        Ok(Some(cur.u32("xid")?))
    } else {
        Ok(None)
    }
}

pub(super) fn decode_begin(cur: &mut Cursor<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: cur.lsn("final LSN")?,
        commit_ts: cur.i64("commit timestamp")?,
        xid: cur.u32("xid")?,
    })
}

pub(super) fn decode_commit(cur: &mut Cursor<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: cur.u8("flags")?,
        commit_lsn: cur.lsn("commit LSN")?,
        end_lsn: cur.lsn("end LSN")?,
        commit_ts: cur.i64("commit timestamp")?,
    })
}

pub(super) fn decode_origin(cur: &mut Cursor<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: cur.lsn("commit LSN")?,
        name: cur.cstr("origin name")?,
    })
}

pub(super) fn decode_relation(
    cur: &mut Cursor<'_>,
    in_stream: bool,
) -> Result<Relation, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let id = cur.u32("relation id")?;
    let namespace = cur.cstr("namespace")?;
    let name = cur.cstr("relation name")?;
    let at = cur.position();
    let replica_identity = match cur.u8("replica identity")? {
        tag::REPLICA_IDENTITY_DEFAULT => ReplicaIdentity::Default,
        tag::REPLICA_IDENTITY_NOTHING => ReplicaIdentity::Nothing,
        tag::REPLICA_IDENTITY_FULL => ReplicaIdentity::Full,
        tag::REPLICA_IDENTITY_INDEX => ReplicaIdentity::Index,
        byte => return Err(DecodeError::UnknownReplicaIdentity { at, byte }),
    };
    let ncols = cur.count_i16("column count")?;
    // A column takes at least 10 bytes (flags, empty name's NUL, OID, typmod): bound the
    // preallocation by what the buffer can actually hold.
    let mut columns = Vec::with_capacity(ncols.min(cur.remaining() / 10));
    for _ in 0..ncols {
        let col_flags = cur.u8("column flags")?;
        columns.push(Column {
            is_key: col_flags & flags::COLUMN_KEY != 0,
            name: cur.cstr("column name")?,
            type_oid: cur.u32("column type OID")?,
            type_modifier: cur.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        xid,
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

pub(super) fn decode_type(cur: &mut Cursor<'_>, in_stream: bool) -> Result<Type, DecodeError> {
    Ok(Type {
        xid: stream_xid(cur, in_stream)?,
        id: cur.u32("type OID")?,
        namespace: cur.cstr("namespace")?,
        name: cur.cstr("type name")?,
    })
}

pub(super) fn decode_insert(cur: &mut Cursor<'_>, in_stream: bool) -> Result<Insert, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let relation_id = cur.u32("relation id")?;
    let at = cur.position();
    match cur.u8("tuple marker")? {
        tag::TUPLE_NEW => {}
        found => {
            return Err(DecodeError::UnexpectedTupleMarker {
                message: cur.message(),
                at,
                expected: "'N'",
                found,
            });
        }
    }
    Ok(Insert {
        xid,
        relation_id,
        new: decode_tuple(cur)?,
    })
}

pub(super) fn decode_update(cur: &mut Cursor<'_>, in_stream: bool) -> Result<Update, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let relation_id = cur.u32("relation id")?;
    let at = cur.position();
    let old = match cur.u8("tuple marker")? {
        tag::TUPLE_NEW => None,
        marker @ (tag::TUPLE_KEY | tag::TUPLE_OLD) => {
            let tuple = decode_tuple(cur)?;
            let at = cur.position();
            match cur.u8("tuple marker")? {
                tag::TUPLE_NEW => {}
                found => {
                    return Err(DecodeError::UnexpectedTupleMarker {
                        message: cur.message(),
                        at,
                        expected: "'N'",
                        found,
                    });
                }
            }
            Some(if marker == tag::TUPLE_KEY {
                OldTuple::Key(tuple)
            } else {
                OldTuple::Full(tuple)
            })
        }
        found => {
            return Err(DecodeError::UnexpectedTupleMarker {
                message: cur.message(),
                at,
                expected: "'K', 'O' or 'N'",
                found,
            });
        }
    };
    Ok(Update {
        xid,
        relation_id,
        old,
        new: decode_tuple(cur)?,
    })
}

pub(super) fn decode_delete(cur: &mut Cursor<'_>, in_stream: bool) -> Result<Delete, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let relation_id = cur.u32("relation id")?;
    let at = cur.position();
    let old = match cur.u8("tuple marker")? {
        tag::TUPLE_KEY => OldTuple::Key(decode_tuple(cur)?),
        tag::TUPLE_OLD => OldTuple::Full(decode_tuple(cur)?),
        found => {
            return Err(DecodeError::UnexpectedTupleMarker {
                message: cur.message(),
                at,
                expected: "'K' or 'O'",
                found,
            });
        }
    };
    Ok(Delete {
        xid,
        relation_id,
        old,
    })
}

pub(super) fn decode_truncate(
    cur: &mut Cursor<'_>,
    in_stream: bool,
) -> Result<Truncate, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let count = cur.len_i32("relation count")?;
    let options = cur.u8("options")?;
    let mut relation_ids = Vec::with_capacity(count.min(cur.remaining() / 4));
    for _ in 0..count {
        relation_ids.push(cur.u32("relation id")?);
    }
    Ok(Truncate {
        xid,
        cascade: options & flags::TRUNCATE_CASCADE != 0,
        restart_identity: options & flags::TRUNCATE_RESTART_IDENTITY != 0,
        relation_ids,
    })
}

pub(super) fn decode_logical_message(
    cur: &mut Cursor<'_>,
    in_stream: bool,
) -> Result<LogicalMessage, DecodeError> {
    let xid = stream_xid(cur, in_stream)?;
    let msg_flags = cur.u8("flags")?;
    let lsn = cur.lsn("message LSN")?;
    let prefix = cur.cstr("prefix")?;
    let len = cur.len_i32("content length")?;
    let content = cur.bytes(len, "content")?;
    Ok(LogicalMessage {
        xid,
        transactional: msg_flags & flags::MESSAGE_TRANSACTIONAL != 0,
        lsn,
        prefix,
        content,
    })
}

pub(super) fn decode_stream_start(cur: &mut Cursor<'_>) -> Result<StreamStart, DecodeError> {
    Ok(StreamStart {
        xid: cur.u32("xid")?,
        first_segment: cur.u8("first segment flag")? != 0,
    })
}

pub(super) fn decode_stream_commit(cur: &mut Cursor<'_>) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: cur.u32("xid")?,
        flags: cur.u8("flags")?,
        commit_lsn: cur.lsn("commit LSN")?,
        end_lsn: cur.lsn("end LSN")?,
        commit_ts: cur.i64("commit timestamp")?,
    })
}

pub(super) fn decode_stream_abort(cur: &mut Cursor<'_>) -> Result<StreamAbort, DecodeError> {
    Ok(StreamAbort {
        xid: cur.u32("xid")?,
        subxid: cur.u32("subtransaction xid")?,
    })
}

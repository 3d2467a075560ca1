//! One change row: what happened to one row of one table, ready to be written.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::lsn::Lsn;

/// The kind of change, written as the `_op` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    /// A row copied by the initial snapshot.
    Read,
    /// A logical decoding message (`pg_logical_emit_message`), in the `_messages` folder.
    Message,
    /// A copy of the table begins: once the matching [`Op::CopyEnd`] follows, every earlier row
    /// of the table is replaced by the rows after this one. Carries no values.
    CopyBegin,
    /// The copy that the last [`Op::CopyBegin`] began is complete. Carries no values.
    CopyEnd,
}

impl Op {
    /// A copied row or a copy marker: not a change any transaction of the source made.
    pub fn is_written_by_pgcdc(self) -> bool {
        matches!(self, Op::Read | Op::CopyBegin | Op::CopyEnd)
    }

    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
            Op::Truncate => "T",
            Op::Read => "R",
            Op::Message => "M",
            Op::CopyBegin => "B",
            Op::CopyEnd => "E",
        }
    }

    /// The inverse of [`Op::code`], from its one byte.
    pub fn from_code(code: u8) -> Option<Op> {
        Some(match code {
            b'I' => Op::Insert,
            b'U' => Op::Update,
            b'D' => Op::Delete,
            b'T' => Op::Truncate,
            b'R' => Op::Read,
            b'M' => Op::Message,
            b'B' => Op::CopyBegin,
            b'E' => Op::CopyEnd,
            _ => return None,
        })
    }
}

/// One column value as it travels to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Null,
    /// A TOASTed value the UPDATE did not touch, which PostgreSQL did not send. It is not NULL:
    /// the file lists the column in `_unchanged` and the warehouse keeps the previous value.
    Unchanged,
    /// The value in PostgreSQL's text output form.
    Text(Bytes),
}

/// The transaction a change belongs to. `xid` is absent for snapshot rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMeta {
    pub xid: Option<u32>,
    pub commit_lsn: Lsn,
    /// Microseconds since 2000-01-01 00:00:00 UTC, as PostgreSQL sends it.
    pub commit_ts: i64,
}

/// A captured table as described by its latest Relation message (or the catalog, for the
/// snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The SQL type name ([`super::type_name::sql_type`]), for the schema files.
    pub type_name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub is_key: bool,
}

impl Table {
    /// `schema.table`, the name of the table's folder in the sink; pgcdc's own streams (such as
    /// `_messages`) have no schema and keep their bare name.
    pub fn folder(&self) -> String {
        if self.schema.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }

    /// Whether rows of `other` can go into the same file as rows of `self`: the same columns
    /// with the same types and keys. Names alone are not enough: a file's schema document is the
    /// one of its first row, so a type change (`alter column … type bigint`) inside a window must
    /// start a new part, or its rows would be described by the old type's document and the new
    /// type would never get one.
    pub fn same_shape(&self, other: &Table) -> bool {
        self.columns == other.columns
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A change to one row, in the order it happened inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub table: Arc<Table>,
    pub op: Op,
    /// Position of the change inside its transaction, from 0; with the commit LSN it is the
    /// unique, monotonic key of a change.
    pub seq: u64,
    /// One field per column of `table`; empty for a truncate.
    pub fields: Vec<Field>,
}

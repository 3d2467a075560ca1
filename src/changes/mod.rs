//! Turns pgoutput messages into transactions of change rows.
//!
//! Pure: no I/O. It keeps the relation cache (pgoutput sends a Relation message before the first
//! change of a table in a session and again after its schema changes), numbers the changes of a
//! transaction, resolves unchanged TOAST values from the old tuple when REPLICA IDENTITY FULL
//! sent one, and writes a key change as a delete of the old key and the new row ([`key`]).

mod fields;
mod key;
pub mod normalise;
mod row;
pub mod type_name;

use std::collections::HashMap;
use std::sync::Arc;

pub use key::use_primary_key;
pub use row::{ChangeRow, ColumnInfo, Field, Op, Table, TxnMeta};

use crate::lsn::Lsn;
use bytes::Bytes;

use crate::control::{self, Control};
use crate::pgoutput::{LogicalMessage, Message, OldTuple, RelationId};
use fields::fields;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangesError {
    #[error(
        "pgoutput sent a {kind} for relation {id} before describing it with a Relation message"
    )]
    UnknownRelation { kind: &'static str, id: RelationId },
    #[error("pgoutput sent a {kind} outside a transaction (no Begin before it)")]
    OutsideTransaction { kind: &'static str },
    #[error("pgoutput sent Begin for a transaction while transaction {open} was still open")]
    NestedBegin { open: Lsn },
    #[error("{table}: a {kind} carries {got} columns but the relation has {expected}")]
    ColumnCount {
        table: String,
        kind: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("pgoutput sent a binary value for {table}.{column}, but pgcdc asks for text values")]
    BinaryValue { table: String, column: String },
    #[error(
        "pgoutput protocol v2 streaming message {kind} arrived, but pgcdc did not enable streaming"
    )]
    UnexpectedStreaming { kind: &'static str },
}

/// What one message amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Begin(TxnMeta),
    Row(ChangeRow),
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
    /// One of pgcdc's own control messages ([`crate::control`]), in the transaction that wrote
    /// it. Never written as a row.
    Control(Control),
}

/// The prefix of pgcdc's own heartbeat messages, which are never written.
pub const HEARTBEAT_PREFIX: &str = "pgcdc.heartbeat";

#[derive(Debug)]
pub struct Assembler {
    relations: HashMap<RelationId, Arc<Table>>,
    /// `(namespace, name)` of the non-built-in types pgoutput described with Type messages.
    types: HashMap<u32, (String, String)>,
    txn: Option<TxnMeta>,
    next_seq: u64,
    /// `Some` when logical decoding messages are written (the `_messages` pseudo-table).
    messages: Option<Arc<Table>>,
    /// Wall clock in PostgreSQL microseconds, for messages sent outside a transaction (they have
    /// no commit time). A field so tests can pin it.
    clock: fn() -> i64,
}

impl Assembler {
    /// `write_messages`: turn logical decoding messages into `_messages` rows.
    pub fn new(write_messages: bool) -> Assembler {
        Assembler {
            relations: HashMap::new(),
            types: HashMap::new(),
            txn: None,
            next_seq: 0,
            messages: write_messages.then(|| Arc::new(messages_table())),
            clock: || crate::pg_time::from_unix_micros(crate::pg_time::now_unix_micros()),
        }
    }

    /// Takes over the relations and types `other` learned. A streamed transaction's assembler
    /// learns its own (pgoutput describes every relation again inside each streamed
    /// transaction); once it commits, the server takes those descriptions as sent for later
    /// transactions too.
    pub fn adopt_relations(&mut self, other: &Assembler) {
        for (id, table) in &other.relations {
            self.relations.insert(*id, table.clone());
        }
        for (id, name) in &other.types {
            self.types.insert(*id, name.clone());
        }
    }

    /// Whether a transaction has begun and not yet committed.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Applies one message, appending what it produced to `out`.
    pub fn apply(&mut self, message: Message, out: &mut Vec<Change>) -> Result<(), ChangesError> {
        match message {
            Message::Begin(begin) => {
                if let Some(open) = self.txn {
                    return Err(ChangesError::NestedBegin {
                        open: open.commit_lsn,
                    });
                }
                let meta = TxnMeta {
                    xid: Some(begin.xid),
                    commit_lsn: begin.final_lsn,
                    commit_ts: begin.commit_ts,
                };
                self.txn = Some(meta);
                self.next_seq = 0;
                out.push(Change::Begin(meta));
            }
            Message::Commit(commit) => {
                if self.txn.take().is_none() {
                    return Err(ChangesError::OutsideTransaction { kind: "Commit" });
                }
                out.push(Change::Commit {
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                });
            }
            Message::Relation(relation) => {
                let table = Table {
                    schema: relation.namespace,
                    name: relation.name,
                    columns: relation
                        .columns
                        .into_iter()
                        .map(|c| ColumnInfo {
                            type_name: type_name::sql_type(
                                c.type_oid,
                                c.type_modifier,
                                self.types
                                    .get(&c.type_oid)
                                    .map(|(ns, name)| (ns.as_str(), name.as_str())),
                            ),
                            name: c.name,
                            type_oid: c.type_oid,
                            type_modifier: c.type_modifier,
                            is_key: c.is_key,
                        })
                        .collect(),
                };
                self.relations.insert(relation.id, Arc::new(table));
            }
            Message::Insert(insert) => {
                let table = self.relation("Insert", insert.relation_id)?;
                let fields = fields(&table, "Insert", &insert.new, None)?;
                self.push_row(out, "Insert", table, Op::Insert, fields)?;
            }
            Message::Update(update) => {
                let table = self.relation("Update", update.relation_id)?;
                // A key change is written as a delete of the old key, then the new row at the
                // next `_seq`, so a replay by key does not keep the old row alive. PostgreSQL
                // sends the old key ('K') when the update changed the replica identity, and
                // also when a key value is stored out of line, changed or not; under REPLICA
                // IDENTITY FULL it sends the whole old row ('O') with every update. So the key
                // columns ([`key`]) of both rows tell, whichever was sent; the delete of a
                // FULL table then carries the whole old row.
                let old = update.old.as_ref().map(OldTuple::tuple);
                let moved_from = old.filter(|old| {
                    key::key_changed(table.columns.iter().map(|c| c.is_key), old, &update.new)
                });
                if let Some(old) = moved_from {
                    let fields = fields(&table, "Update", old, None)?;
                    self.push_row(out, "Update", table.clone(), Op::Delete, fields)?;
                }
                // An unchanged TOAST value of the new row is taken from the old tuple where it
                // has one: every column of a full row, the key columns of a key tuple (its other
                // columns are NULL there, and stay unchanged).
                let fields = fields(&table, "Update", &update.new, old)?;
                self.push_row(out, "Update", table, Op::Update, fields)?;
            }
            Message::Delete(delete) => {
                let table = self.relation("Delete", delete.relation_id)?;
                let fields = fields(&table, "Delete", delete.old.tuple(), None)?;
                self.push_row(out, "Delete", table, Op::Delete, fields)?;
            }
            Message::Truncate(truncate) => {
                for id in truncate.relation_ids {
                    let table = self.relation("Truncate", id)?;
                    let fields = vec![Field::Null; table.columns.len()];
                    self.push_row(out, "Truncate", table, Op::Truncate, fields)?;
                }
            }
            Message::Message(message) => self.message(message, out)?,
            Message::Type(t) => {
                self.types.insert(t.id, (t.namespace, t.name));
            }
            // Origins carry nothing pgcdc writes.
            Message::Origin(_) => {}
            Message::StreamStart(_) => {
                return Err(ChangesError::UnexpectedStreaming {
                    kind: "Stream Start",
                });
            }
            Message::StreamStop => {
                return Err(ChangesError::UnexpectedStreaming {
                    kind: "Stream Stop",
                });
            }
            Message::StreamCommit(_) => {
                return Err(ChangesError::UnexpectedStreaming {
                    kind: "Stream Commit",
                });
            }
            Message::StreamAbort(_) => {
                return Err(ChangesError::UnexpectedStreaming {
                    kind: "Stream Abort",
                });
            }
        }
        Ok(())
    }

    /// A logical decoding message becomes a `_messages` row. One sent outside a transaction
    /// (`transactional = false`) arrives at its own WAL position, between the transactions that
    /// committed before and after it, so it is written as a one-row transaction at that LSN.
    fn message(
        &mut self,
        message: LogicalMessage,
        out: &mut Vec<Change>,
    ) -> Result<(), ChangesError> {
        if message.prefix == control::PREFIX {
            match Control::parse(&message.content) {
                Ok(control) => out.push(Change::Control(control)),
                Err(e) => {
                    tracing::warn!(lsn = %message.lsn, error = %e, "Ignoring a control message")
                }
            }
            return Ok(());
        }
        let Some(table) = self.messages.clone() else {
            return Ok(());
        };
        if message.prefix == HEARTBEAT_PREFIX {
            return Ok(());
        }
        let mut content = Vec::with_capacity(2 + 2 * message.content.len());
        content.extend_from_slice(b"\\x");
        for byte in message.content.iter() {
            content.extend_from_slice(format!("{byte:02x}").as_bytes());
        }
        let fields = vec![
            Field::Text(Bytes::from(message.lsn.to_string())),
            Field::Text(Bytes::from_static(if message.transactional {
                b"t"
            } else {
                b"f"
            })),
            Field::Text(Bytes::from(message.prefix)),
            Field::Text(Bytes::from(content)),
        ];
        if self.txn.is_some() {
            return self.push_row(out, "Message", table, Op::Message, fields);
        }
        let meta = TxnMeta {
            xid: None,
            commit_lsn: message.lsn,
            commit_ts: (self.clock)(),
        };
        self.txn = Some(meta);
        self.next_seq = 0;
        out.push(Change::Begin(meta));
        self.push_row(out, "Message", table, Op::Message, fields)?;
        self.txn = None;
        out.push(Change::Commit {
            commit_lsn: message.lsn,
            end_lsn: message.lsn,
        });
        Ok(())
    }

    fn relation(&self, kind: &'static str, id: RelationId) -> Result<Arc<Table>, ChangesError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or(ChangesError::UnknownRelation { kind, id })
    }

    fn push_row(
        &mut self,
        out: &mut Vec<Change>,
        kind: &'static str,
        table: Arc<Table>,
        op: Op,
        fields: Vec<Field>,
    ) -> Result<(), ChangesError> {
        if self.txn.is_none() {
            return Err(ChangesError::OutsideTransaction { kind });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        out.push(Change::Row(ChangeRow {
            table,
            op,
            seq,
            fields,
        }));
        Ok(())
    }
}

/// The columns of a `_messages` file.
fn messages_table() -> Table {
    let column = |name: &str, type_oid| ColumnInfo {
        name: name.to_owned(),
        type_name: type_name::sql_type(type_oid, -1, None),
        type_oid,
        type_modifier: -1,
        is_key: false,
    };
    Table {
        schema: String::new(),
        name: "_messages".to_owned(),
        columns: vec![
            column("lsn", 3220),
            column("transactional", 16),
            column("prefix", 25),
            column("content", 17),
        ],
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pgoutput::{
        Begin, Column, Commit, Delete, Insert, Relation, ReplicaIdentity, Truncate, Tuple,
        TupleData, Update,
    };

    fn relation(id: u32) -> Message {
        Message::Relation(Relation {
            xid: None,
            id,
            namespace: "public".into(),
            name: format!("t{id}"),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                Column {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                Column {
                    is_key: false,
                    name: "body".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
            ],
        })
    }

    fn text(s: &str) -> TupleData {
        TupleData::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn begin() -> Message {
        Message::Begin(Begin {
            final_lsn: Lsn::new(100),
            commit_ts: 0,
            xid: 7,
        })
    }

    fn rows(out: &[Change]) -> Vec<&ChangeRow> {
        out.iter()
            .filter_map(|c| match c {
                Change::Row(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn numbers_changes_and_brackets_transactions() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.apply(relation(1), &mut out).unwrap();
        a.apply(begin(), &mut out).unwrap();
        assert!(a.in_transaction());
        for i in 0..3 {
            a.apply(
                Message::Insert(Insert {
                    xid: None,
                    relation_id: 1,
                    new: Tuple(vec![text(&i.to_string()), TupleData::Null]),
                }),
                &mut out,
            )
            .unwrap();
        }
        a.apply(
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn::new(100),
                end_lsn: Lsn::new(120),
                commit_ts: 0,
            }),
            &mut out,
        )
        .unwrap();
        assert!(!a.in_transaction());
        assert_eq!(out.len(), 5);
        let seqs: Vec<u64> = rows(&out).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(rows(&out)[0].fields[1], Field::Null);
        assert_eq!(
            out[4],
            Change::Commit {
                commit_lsn: Lsn::new(100),
                end_lsn: Lsn::new(120)
            }
        );
    }

    #[test]
    fn unchanged_toast_is_not_null_and_uses_full_old_tuple() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.apply(relation(1), &mut out).unwrap();
        a.apply(begin(), &mut out).unwrap();
        a.apply(
            Message::Update(Update {
                xid: None,
                relation_id: 1,
                old: None,
                new: Tuple(vec![text("1"), TupleData::UnchangedToast]),
            }),
            &mut out,
        )
        .unwrap();
        a.apply(
            Message::Update(Update {
                xid: None,
                relation_id: 1,
                old: Some(OldTuple::Full(Tuple(vec![text("1"), text("big")]))),
                new: Tuple(vec![text("1"), TupleData::UnchangedToast]),
            }),
            &mut out,
        )
        .unwrap();
        let rows = rows(&out);
        assert_eq!(rows[0].fields[1], Field::Unchanged);
        assert_eq!(rows[1].fields[1], Field::Text(Bytes::from_static(b"big")));
    }

    #[test]
    fn a_key_change_deletes_the_old_key_first() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.apply(relation(1), &mut out).unwrap();
        a.apply(begin(), &mut out).unwrap();
        a.apply(
            Message::Update(Update {
                xid: None,
                relation_id: 1,
                old: Some(OldTuple::Key(Tuple(vec![text("1"), TupleData::Null]))),
                new: Tuple(vec![text("2"), text("moved")]),
            }),
            &mut out,
        )
        .unwrap();
        let rows = rows(&out);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].op, rows[0].seq), (Op::Delete, 0));
        assert_eq!(rows[0].fields[0], Field::Text(Bytes::from_static(b"1")));
        assert_eq!((rows[1].op, rows[1].seq), (Op::Update, 1));
        assert_eq!(rows[1].fields[0], Field::Text(Bytes::from_static(b"2")));
    }

    #[test]
    fn truncate_writes_one_row_per_table_and_delete_keeps_key() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.apply(relation(1), &mut out).unwrap();
        a.apply(relation(2), &mut out).unwrap();
        a.apply(begin(), &mut out).unwrap();
        a.apply(
            Message::Delete(Delete {
                xid: None,
                relation_id: 1,
                old: OldTuple::Key(Tuple(vec![text("5"), TupleData::Null])),
            }),
            &mut out,
        )
        .unwrap();
        a.apply(
            Message::Truncate(Truncate {
                xid: None,
                cascade: false,
                restart_identity: false,
                relation_ids: vec![1, 2],
            }),
            &mut out,
        )
        .unwrap();
        let rows = rows(&out);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].op, Op::Delete);
        assert_eq!(rows[0].fields[0], Field::Text(Bytes::from_static(b"5")));
        assert_eq!(rows[1].op, Op::Truncate);
        assert_eq!(rows[1].table.name, "t1");
        assert_eq!(rows[2].table.name, "t2");
        assert_eq!(rows[2].seq, 2);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        let insert = |id| {
            Message::Insert(Insert {
                xid: None,
                relation_id: id,
                new: Tuple(vec![text("1")]),
            })
        };
        assert_eq!(
            a.apply(insert(9), &mut out),
            Err(ChangesError::UnknownRelation {
                kind: "Insert",
                id: 9
            })
        );
        a.apply(relation(1), &mut out).unwrap();
        assert_eq!(
            a.apply(insert(1), &mut out),
            Err(ChangesError::ColumnCount {
                table: "public.t1".into(),
                kind: "Insert",
                got: 1,
                expected: 2
            })
        );
        a.apply(begin(), &mut out).unwrap();
        assert!(matches!(
            a.apply(begin(), &mut out),
            Err(ChangesError::NestedBegin { .. })
        ));
    }
}

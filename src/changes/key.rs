//! What a table's key is, and when an update moved a row to another key.
//!
//! A replay applies rows by key (README, "The file format"), so an update that changes the key
//! must be written as a delete of the old key followed by the new row, or the old key's row
//! stays in the replay for ever. Under the default replica identity and `USING INDEX`, pgoutput
//! says so itself: it sends the old key (a `K` tuple) only when the update changed it. Under
//! `REPLICA IDENTITY FULL` it sends the whole old row (an `O` tuple) with every update and flags
//! every column as part of the key, so neither tells a key change from an ordinary update.
//! pgcdc therefore keys a FULL table by its primary key, which the pipeline reads from the
//! catalog when the table's Relation message arrives ([`use_primary_key`]), and compares the
//! key columns of the old and the new row ([`key_changed`]).

use crate::pgoutput::{Relation, ReplicaIdentity, Tuple, TupleData};

/// Flags the columns of `primary_key` (names, from the catalog) as the key of a `REPLICA
/// IDENTITY FULL` relation, in place of pgoutput's flags (every column). Returns whether it did.
///
/// Left as pgoutput sent it, so keyed by every column: any other identity (pgoutput's flags are
/// the identity's columns already), a table without a primary key, and a primary key with a
/// column the relation does not carry (not published; under FULL PostgreSQL refuses updates of
/// such a table anyway). Keyed by every column, an update that changes any value is a key
/// change: a delete of the old row, then the new one, which is what a replay by every column
/// needs.
pub fn use_primary_key(relation: &mut Relation, primary_key: &[String]) -> bool {
    if relation.replica_identity != ReplicaIdentity::Full || primary_key.is_empty() {
        return false;
    }
    let present = primary_key
        .iter()
        .all(|k| relation.columns.iter().any(|c| &c.name == k));
    if !present {
        return false;
    }
    for column in &mut relation.columns {
        column.is_key = primary_key.contains(&column.name);
    }
    true
}

/// Whether an update whose whole old row is `old` moved the row to another key: some key
/// column (`is_key[i]`) holds another value in `new`. A new value PostgreSQL did not send
/// (unchanged TOAST) is the old one. An old value that is not known (an unchanged-TOAST marker,
/// which full old tuples do not carry in practice) cannot show a change, so it counts as the
/// same: writing a delete of an unknown key would be worse than writing none.
pub fn key_changed(is_key: impl Iterator<Item = bool>, old: &Tuple, new: &Tuple) -> bool {
    is_key
        .zip(old.columns().iter().zip(new.columns()))
        .any(|(key, (old, new))| {
            key && !matches!(old, TupleData::UnchangedToast)
                && !matches!(new, TupleData::UnchangedToast)
                && old != new
        })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pgoutput::Column;

    fn relation(identity: ReplicaIdentity, names: &[&str]) -> Relation {
        Relation {
            xid: None,
            id: 1,
            namespace: "public".into(),
            name: "s".into(),
            replica_identity: identity,
            columns: names
                .iter()
                .map(|name| Column {
                    is_key: true,
                    name: (*name).into(),
                    type_oid: 23,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn keys(relation: &Relation) -> Vec<bool> {
        relation.columns.iter().map(|c| c.is_key).collect()
    }

    fn text(s: &str) -> TupleData {
        TupleData::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_full_relation_is_keyed_by_its_primary_key() {
        let mut r = relation(ReplicaIdentity::Full, &["a", "id", "b", "region"]);
        assert!(use_primary_key(&mut r, &["region".into(), "id".into()]));
        assert_eq!(keys(&r), [false, true, false, true]);
    }

    #[test]
    fn other_identities_and_missing_keys_keep_pgoutputs_flags() {
        for identity in [ReplicaIdentity::Default, ReplicaIdentity::Index] {
            let mut r = relation(identity, &["id", "v"]);
            assert!(!use_primary_key(&mut r, &["v".into()]));
            assert_eq!(keys(&r), [true, true]);
        }
        // No primary key: every column, as pgoutput flags them.
        let mut r = relation(ReplicaIdentity::Full, &["id", "v"]);
        assert!(!use_primary_key(&mut r, &[]));
        assert_eq!(keys(&r), [true, true]);
        // A key column the relation does not carry.
        assert!(!use_primary_key(&mut r, &["id".into(), "gone".into()]));
        assert_eq!(keys(&r), [true, true]);
    }

    #[test]
    fn only_a_changed_key_column_is_a_key_change() {
        let is_key = || [true, false, true].into_iter();
        let old = Tuple(vec![text("1"), text("a"), text("x")]);
        let same_key = Tuple(vec![text("1"), text("b"), text("x")]);
        assert!(!key_changed(is_key(), &old, &same_key));
        let moved = Tuple(vec![text("1"), text("a"), text("y")]);
        assert!(key_changed(is_key(), &old, &moved));
        let to_null = Tuple(vec![TupleData::Null, text("a"), text("x")]);
        assert!(key_changed(is_key(), &old, &to_null));
        // An unchanged TOASTed key column is the old value.
        let unchanged = Tuple(vec![text("1"), text("a"), TupleData::UnchangedToast]);
        assert!(!key_changed(is_key(), &old, &unchanged));
        let unknown_old = Tuple(vec![text("1"), text("a"), TupleData::UnchangedToast]);
        assert!(!key_changed(is_key(), &unknown_old, &moved));
    }

    #[test]
    fn keyed_by_every_column_any_change_moves_the_row() {
        let is_key = || [true, true].into_iter();
        let old = Tuple(vec![text("1"), text("a")]);
        assert!(key_changed(
            is_key(),
            &old,
            &Tuple(vec![text("1"), text("b")])
        ));
        assert!(!key_changed(is_key(), &old, &old.clone()));
    }

    /// The rule end to end through the assembler: a FULL table keyed by its primary key.
    mod assembled {
        use bytes::Bytes;

        use super::*;
        use crate::changes::{Assembler, Change, ChangeRow, Field, Op};
        use crate::lsn::Lsn;
        use crate::pgoutput::{Begin, Message, OldTuple, Update};

        fn update(old: Tuple, new: Tuple) -> Message {
            Message::Update(Update {
                xid: None,
                relation_id: 1,
                old: Some(OldTuple::Full(old)),
                new,
            })
        }

        /// The rows `updates` become in one transaction of table `s (id, body, note)` under
        /// REPLICA IDENTITY FULL with primary key `id`.
        fn rows_of(updates: Vec<Message>) -> Vec<ChangeRow> {
            let mut r = relation(ReplicaIdentity::Full, &["id", "body", "note"]);
            assert!(use_primary_key(&mut r, &["id".into()]));
            rows_in_one_transaction(r, updates)
        }

        /// The rows `messages` become in one transaction of the table `relation` describes.
        fn rows_in_one_transaction(relation: Relation, messages: Vec<Message>) -> Vec<ChangeRow> {
            let mut a = Assembler::new(false);
            let mut out = Vec::new();
            a.apply(Message::Relation(relation), &mut out).unwrap();
            a.apply(
                Message::Begin(Begin {
                    final_lsn: Lsn::new(100),
                    commit_ts: 0,
                    xid: 7,
                }),
                &mut out,
            )
            .unwrap();
            for m in messages {
                a.apply(m, &mut out).unwrap();
            }
            out.into_iter()
                .filter_map(|c| match c {
                    Change::Row(r) => Some(r),
                    _ => None,
                })
                .collect()
        }

        fn field(s: &str) -> Field {
            Field::Text(Bytes::copy_from_slice(s.as_bytes()))
        }

        #[test]
        fn a_key_change_is_the_old_row_deleted_then_the_new_row() {
            let rows = rows_of(vec![update(
                Tuple(vec![text("3"), text("big"), text("n")]),
                Tuple(vec![text("10"), TupleData::UnchangedToast, text("m")]),
            )]);
            assert_eq!(rows.len(), 2);
            assert_eq!((rows[0].op, rows[0].seq), (Op::Delete, 0));
            // The delete carries the whole old row: FULL sent it.
            assert_eq!(rows[0].fields, [field("3"), field("big"), field("n")]);
            assert_eq!((rows[1].op, rows[1].seq), (Op::Update, 1));
            // The unchanged TOAST value comes from the old row, as for any FULL update.
            assert_eq!(rows[1].fields, [field("10"), field("big"), field("m")]);
            let schema_key: Vec<bool> = rows[1].table.columns.iter().map(|c| c.is_key).collect();
            assert_eq!(schema_key, [true, false, false]);
        }

        /// Default identity, key `id` stored out of line: PostgreSQL sends the old key ('K')
        /// with every update, changed or not, and the new row leaves the key unchanged.
        #[test]
        fn an_unchanged_out_of_line_key_sent_as_old_key_is_no_key_change() {
            let mut r = relation(ReplicaIdentity::Default, &["id", "v"]);
            r.columns[1].is_key = false;
            let key_tuple = |id: &str| Tuple(vec![text(id), TupleData::Null]);
            let update = |old: Tuple, new: Vec<TupleData>| {
                Message::Update(Update {
                    xid: None,
                    relation_id: 1,
                    old: Some(OldTuple::Key(old)),
                    new: Tuple(new),
                })
            };
            let rows = rows_in_one_transaction(
                r,
                vec![
                    // The key unchanged: one update, the key taken from the old key.
                    update(
                        key_tuple("long id"),
                        vec![TupleData::UnchangedToast, text("2")],
                    ),
                    // The key changed: the old key's delete, then the new row.
                    update(key_tuple("long id"), vec![text("other id"), text("3")]),
                ],
            );
            let rows: Vec<(Op, Vec<Field>)> = rows.into_iter().map(|r| (r.op, r.fields)).collect();
            assert_eq!(
                rows,
                [
                    (Op::Update, vec![field("long id"), field("2")]),
                    (Op::Delete, vec![field("long id"), Field::Null]),
                    (Op::Update, vec![field("other id"), field("3")]),
                ]
            );
        }

        #[test]
        fn an_ordinary_update_stays_one_row_and_chained_changes_follow_each_other() {
            let rows = rows_of(vec![
                update(
                    Tuple(vec![text("1"), text("big"), text("n")]),
                    Tuple(vec![text("1"), TupleData::UnchangedToast, text("m")]),
                ),
                update(
                    Tuple(vec![text("1"), text("big"), text("m")]),
                    Tuple(vec![text("2"), text("big"), text("m")]),
                ),
                update(
                    Tuple(vec![text("2"), text("big"), text("m")]),
                    Tuple(vec![text("3"), text("big"), text("m")]),
                ),
            ]);
            let ops: Vec<(Op, u64, Field)> = rows
                .iter()
                .map(|r| (r.op, r.seq, r.fields[0].clone()))
                .collect();
            assert_eq!(
                ops,
                [
                    (Op::Update, 0, field("1")),
                    (Op::Delete, 1, field("1")),
                    (Op::Update, 2, field("2")),
                    (Op::Delete, 3, field("2")),
                    (Op::Update, 4, field("3")),
                ]
            );
            assert_eq!(rows[0].fields[1], field("big"));
        }
    }
}

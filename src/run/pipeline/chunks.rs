//! Chunked copies as the stream sees them: pgcdc's control messages, a chunk's rows placed at
//! its high watermark, and the stream's rows on tables being copied, remembered for the
//! watermark rule.
//!
//! Apart from [`super::apply`] because it is the copies' business: with no copy under way, a
//! row of the stream costs one check here.

use std::sync::Arc;

use super::{Pipeline, SEAL_AFTER_CHUNK_ROWS};
use crate::changes::{Op, Table};
use crate::control::Control;
use crate::run::copy::{self, Placement, window};
use crate::run::error::RunError;

impl Pipeline<'_> {
    /// One of pgcdc's control messages, in the open transaction.
    pub(super) fn control(&mut self, control: &Control) -> Result<(), RunError> {
        let Some(meta) = self.txn else {
            return Ok(());
        };
        if self.skip_txn || control.slot() != self.slot {
            return Ok(());
        }
        match control {
            Control::Low { chunk, table, .. } => {
                // An earlier process's watermark would open a window nothing ever closes.
                if !self.backfill.owns(*chunk) {
                    return Ok(());
                }
                if let Some(folder) = self.backfill.copying(table).cloned() {
                    self.backfill.windows.low(*chunk, folder);
                }
            }
            Control::Begin { table, run, .. } => {
                if let Some(t) = self.backfill.begin(table, *run, meta.commit_lsn) {
                    self.inject_marker(&t, Op::CopyBegin)?;
                }
            }
            Control::High { chunk, .. } => {
                if let Some(placement) = self.backfill.high(*chunk) {
                    self.place(placement)?;
                }
            }
            Control::Snapshot { tables, .. } => {
                for table in tables {
                    self.backfill.request(table);
                }
            }
        }
        Ok(())
    }

    /// Writes a chunk's rows into the open transaction (the high watermark's), except the keys
    /// the stream changed meanwhile; then the `E` row if it was the copy's last chunk.
    fn place(&mut self, placement: Placement) -> Result<(), RunError> {
        let Placement {
            table,
            rows,
            changed,
            ends,
        } = placement;
        let mut placed = 0;
        for (line, key) in rows.rows() {
            let seq = self.injected_seq;
            match changed.get(key) {
                None => {
                    self.write_row(&table, Op::Read, seq, |out| out.extend_from_slice(line))?;
                }
                Some(window::Fate::Settled) => continue,
                Some(window::Fate::Partial(partials)) => {
                    self.write_row(&table, Op::Read, seq, |out| {
                        window::lay_over(line, partials, out)
                    })?;
                }
            }
            self.injected_seq += 1;
            placed += 1;
        }
        if ends {
            self.inject_marker(&table, Op::CopyEnd)?;
        }
        // Chunks of small tables share windows (500 tables need not make 500 files).
        self.seal_after_commit |= placed >= SEAL_AFTER_CHUNK_ROWS;
        Ok(())
    }

    /// A `B` or `E` row: no values, only its place in the stream.
    fn inject_marker(&mut self, table: &Arc<Table>, op: Op) -> Result<(), RunError> {
        let seq = self.injected_seq;
        self.injected_seq += 1;
        let columns = table.columns.len();
        self.write_row(table, op, seq, |out| {
            out.extend(std::iter::repeat_n(b',', columns))
        })
    }

    /// A row of the stream on a table being copied: remembered for the watermark rule.
    /// `encode` writes the row's `_unchanged` and fields, needed only while a window is open.
    pub(super) fn observe(
        &mut self,
        table: &Arc<Table>,
        op: Op,
        seq: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.backfill.is_idle() {
            return;
        }
        let folder = table.folder();
        let Some(copying) = self.backfill.copying(&folder).cloned() else {
            return;
        };
        if self.backfill.shape_differs(&folder, table) {
            // Checked on every row of the table, not only inside a chunk's window: a change
            // between windows would otherwise let the copy end with its old columns or key.
            self.backfill.restart(
                &folder,
                "the table's columns or key changed during its copy",
            );
            return;
        }
        self.backfill.windows.touch(&copying);
        let watching = self.backfill.windows.watching(&folder);
        // Outside a window only an update may matter: one that leaves a TOASTed value
        // unchanged has its key read again.
        let rereading = op == Op::Update && self.backfill.wants_rereads(&folder);
        if !watching && !rereading {
            return;
        }
        if op == Op::Truncate {
            self.backfill
                .windows
                .redo(&folder, "the table was truncated in the window");
            return;
        }
        // A key change is its old key's `D` and, at the next `_seq`, the new key's row.
        let follows_a_delete =
            std::mem::replace(&mut self.observed_delete, (op == Op::Delete).then_some(seq))
                .is_some_and(|d| d + 1 == seq);
        // The key columns, in the copy's key order; a resumed copy not planned yet knows no key
        // of its own, but its rereads need one: the stream's key (the replica identity) is it.
        let (positions, names_count): (Vec<usize>, Option<usize>) =
            match self.backfill.key_names(&folder) {
                Some(names) => (
                    names
                        .iter()
                        .filter_map(|n| table.columns.iter().position(|c| c.name == *n))
                        .collect(),
                    Some(names.len()),
                ),
                None if rereading => (
                    (0..table.columns.len())
                        .filter(|&i| table.columns.get(i).is_some_and(|c| c.is_key))
                        .collect(),
                    None,
                ),
                None => return,
            };
        if names_count.is_some_and(|n| n != positions.len()) {
            // Same shape, so not reached; kept so a key the table lacks can never be matched.
            self.backfill.restart(
                &folder,
                "the table's columns or key changed during its copy",
            );
            return;
        }
        self.scratch.clear();
        encode(&mut self.scratch);
        let mut key = Vec::new();
        let unchanged = copy::encoded_key(&self.scratch, &positions, &mut key);
        if rereading && unchanged && !positions.is_empty() {
            // The row may have moved into blocks a chunk already read (a non-HOT update), and
            // this row lacks the value: only reading the key again brings it. Keys to read are
            // in column order, whatever the key's own order.
            let mut in_column_order = positions.clone();
            in_column_order.sort_unstable();
            let values = copy::key_values(&self.scratch, &in_column_order);
            self.backfill.reread(&folder, values);
        }
        if !watching || names_count.is_none() {
            return;
        }
        let touch = match copy::unchanged_positions(&self.scratch, table) {
            Some(_) if unchanged && op == Op::Update && follows_a_delete => {
                self.backfill.windows.redo(
                    &folder,
                    "a key change in the window left a TOASTed value unchanged",
                );
                return;
            }
            Some(left_out) if unchanged && op == Op::Update => {
                window::Touch::Partial(window::Partial {
                    line: self.scratch.clone(),
                    unchanged: left_out,
                })
            }
            None if unchanged => {
                // `_unchanged` names no column of the table: nothing to lay over safely.
                self.backfill
                    .windows
                    .redo(&folder, "the table's columns changed in the window");
                return;
            }
            _ => window::Touch::Whole,
        };
        self.backfill.windows.changed(&copying, &key, touch);
    }
}

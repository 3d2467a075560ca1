//! Decoded messages into the open transaction: the assembler's changes, streamed transactions
//! replayed at their commit, and each row into the window unless the checkpoint or the sink
//! already holds it.
//!
//! The path every row of the stream takes, apart from the loop that feeds it and from the
//! windows' way to the sink.

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::Pipeline;
use crate::changes::{Change, Op, Table};
use crate::encode as csv;
use crate::lsn::Lsn;
use crate::metrics;
use crate::pg_time;
use crate::pgoutput::{Begin, Commit, Message, StreamCommit};
use crate::run::error::RunError;
use crate::source::Stream;

impl Pipeline<'_> {
    /// Runs one decoded message through the assembler and the window.
    pub(super) fn apply_message(
        &mut self,
        mut message: Message,
        lsn: Lsn,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.primary_keys.resolve(&mut message)?;
        self.changes.clear();
        self.assembler
            .apply(message, &mut self.changes)
            .map_err(|source| RunError::Changes { lsn, source })?;
        let changes = std::mem::take(&mut self.changes);
        for change in &changes {
            self.apply(change, stream)?;
        }
        self.changes = changes;
        Ok(())
    }

    /// A message inside a stream block: decoded and encoded now, written at its commit.
    pub(super) fn spool_streamed(
        &mut self,
        mut message: Message,
        lsn: Lsn,
    ) -> Result<(), RunError> {
        self.primary_keys.resolve(&mut message)?;
        let subxid = message.stream_xid();
        let Some(txn) = self.streamed.current_txn() else {
            return Ok(());
        };
        self.changes.clear();
        txn.assembler
            .apply(message, &mut self.changes)
            .map_err(|source| RunError::Changes { lsn, source })?;
        if let Err(source) = self
            .streamed
            .spool_rows(subxid, &self.changes, &mut self.record)
        {
            return Err(self.spool_error(source));
        }
        Ok(())
    }

    /// Stream Commit: the spooled rows enter the window as one transaction, in commit order.
    pub(super) fn replay_streamed(
        &mut self,
        commit: &StreamCommit,
        stream: &Stream,
    ) -> Result<(), RunError> {
        let lsn = commit.commit_lsn;
        let committed = self
            .streamed
            .commit(commit.xid)
            .map_err(|e| self.spool_error(e))?;
        if let Some((txn, _)) = &committed {
            self.assembler.adopt_relations(&txn.assembler);
        }
        self.apply_message(
            Message::Begin(Begin {
                final_lsn: lsn,
                commit_ts: commit.commit_ts,
                xid: commit.xid,
            }),
            lsn,
            stream,
        )?;
        if let Some((txn, mut replay)) = committed {
            let mut record = std::mem::take(&mut self.record);
            while replay
                .next_record(&mut record)
                .map_err(|e| self.spool_error(e))?
            {
                let Some((table, op, seq, encoded)) = txn.decode(&record) else {
                    return Err(self.spool_error(std::io::Error::other(
                        "a streamed transaction's spool record is damaged",
                    )));
                };
                self.injected_seq = self.injected_seq.max(seq + 1);
                if !self.skip_txn {
                    self.observe(&table, op, seq, |out| out.extend_from_slice(encoded));
                }
                self.write_row(&table, op, seq, |line| line.extend_from_slice(encoded))?;
            }
            self.record = record;
        }
        self.apply_message(
            Message::Commit(Commit {
                flags: commit.flags,
                commit_lsn: lsn,
                end_lsn: commit.end_lsn,
                commit_ts: commit.commit_ts,
            }),
            lsn,
            stream,
        )
    }

    /// Writes one row of the open transaction into the window, unless the checkpoint or the
    /// table's durable files already hold it. `encode` appends the line after the metadata
    /// columns (`_unchanged` and the fields).
    pub(super) fn write_row(
        &mut self,
        table: &Arc<Table>,
        op: Op,
        seq: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RunError> {
        let Some(meta) = self.txn else {
            return Ok(());
        };
        if self.skip_txn {
            return Ok(());
        }
        if !self
            .row_target
            .as_ref()
            .is_some_and(|t| t.op == op && Arc::ptr_eq(&t.table, table))
        {
            let folder = table.folder();
            let series = metrics::get().tables.table(&folder);
            self.row_target = Some(RowTarget {
                table: table.clone(),
                folder,
                op,
                series,
            });
        }
        let Some(target) = &self.row_target else {
            return Ok(());
        };
        if self
            .durable
            .get(target.folder.as_str())
            .is_some_and(|&lsn| meta.commit_lsn <= lsn)
        {
            return Ok(());
        }
        if self.batcher.is_empty() {
            self.window_opened.push_back(pg_time::now_unix_micros());
            self.show_window_age();
        }
        if let Err(source) = self
            .batcher
            .push_encoded(table, op, seq, Instant::now(), encode)
        {
            return Err(RunError::Spool {
                dir: self.sink.spool_dir().display().to_string(),
                source,
            });
        }
        if let Some(rows) = target.series.rows(target.op.code()) {
            rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.txn_has_rows = true;
        Ok(())
    }

    fn apply(&mut self, change: &Change, stream: &Stream) -> Result<(), RunError> {
        match change {
            Change::Begin(meta) => {
                self.txn = Some(*meta);
                self.injected_seq = 0;
                self.observed_delete = None;
                self.last_commit_unix_us = pg_time::to_unix_micros(meta.commit_ts);
                self.skip_txn = self.ack.covers(meta.commit_lsn);
                if self.skip_txn {
                    debug!(commit_lsn = %meta.commit_lsn, "Skipping a transaction the checkpoint covers");
                } else {
                    self.batcher.begin(*meta);
                }
            }
            Change::Row(row) => {
                self.injected_seq = self.injected_seq.max(row.seq + 1);
                if !self.skip_txn {
                    self.observe(&row.table, row.op, row.seq, |out| {
                        csv::encode_unchanged_and_fields(out, row)
                    });
                }
                self.write_row(&row.table, row.op, row.seq, |line| {
                    csv::encode_unchanged_and_fields(line, row)
                })?;
            }
            Change::Commit {
                commit_lsn,
                end_lsn,
            } => {
                let xid = self.txn.and_then(|t| t.xid);
                self.txn = None;
                if self.skip_txn {
                    self.backfill.windows.abandon();
                } else {
                    self.backfill.windows.commit(xid, *commit_lsn);
                }
                self.ack.received(*commit_lsn, *end_lsn);
                metrics::get().transactions.inc();
                if self.skip_txn {
                    self.skip_txn = false;
                    return Ok(());
                }
                if std::mem::take(&mut self.txn_has_rows) {
                    self.window_commits.push(self.last_commit_unix_us);
                }
                let due = self.batcher.commit(*commit_lsn, *end_lsn, Instant::now())
                    | (std::mem::take(&mut self.seal_after_commit) && !self.batcher.is_empty());
                if due {
                    self.seal_and_submit()?;
                } else if self.batcher.is_empty() {
                    // A transaction with nothing for us: acknowledge it without a file, but
                    // write the checkpoint at most once per status interval.
                    if let Some(flush) = self.advance_idle(None, false)? {
                        stream.feedback.flushed(flush);
                    }
                }
            }
            Change::Control(control) => self.control(control)?,
        }
        Ok(())
    }
}

/// The table and operation of the last row written, so a run of rows of one table does not build
/// its folder name or look up its row counter once per row.
pub(super) struct RowTarget {
    table: Arc<Table>,
    folder: String,
    op: Op,
    series: Arc<metrics::TableSeries>,
}

//! The event loop: replication events into transactions, transactions into windows, closed
//! windows to the upload thread, and durable windows into the checkpoint and the server's
//! flush position by the rule in [`super::ack`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info};

use super::ack::{Ack, Position};
use super::added::{AddedTables, TableCopy};
use super::backfill::{self, Backfill, Placement, window};
use super::error::RunError;
use super::journal::{Entry, Journal};
use super::keys::PrimaryKeys;
use super::publish::{self, Outcome, Upload};
use crate::batch::Batcher;
use crate::changes::{Assembler, Change, Op, Table, TxnMeta};
use crate::checkpoint::Checkpoint;
use crate::config::{Config, Messages};
use crate::control::Control;
use crate::encode as csv;
use crate::lsn::Lsn;
use crate::metrics;
use crate::pg_time;
use crate::pgoutput::{self, Begin, Commit, Message, StreamCommit};
use crate::schema_file::KnownSchemas;
use crate::sink::Sink;
use crate::source::{SourceError, SourceEvent, Stream};
use crate::streamed::StreamedTxns;

/// What the pipeline starts from, out of start-up.
pub(super) struct Parts {
    pub checkpoint: Checkpoint,
    pub batcher: Batcher,
    pub added: AddedTables,
    pub durable: BTreeMap<String, Lsn>,
    pub schemas: KnownSchemas,
    pub streamed: StreamedTxns,
}

/// Streams until shutdown (Ok, everything durable checkpointed) or an error.
pub(super) fn run(
    config: &Config,
    handle: &Handle,
    sink: &dyn Sink,
    parts: Parts,
    journal: &Journal,
    stream: Stream,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Parts {
        checkpoint,
        batcher,
        added,
        durable,
        schemas,
        streamed,
    } = parts;
    let schemas = Mutex::new(schemas);
    let (uploads, jobs) = publish::queue();
    let (done, uploaded) = tokio::sync::mpsc::unbounded_channel();
    std::thread::scope(|scope| {
        let schemas = &schemas;
        scope.spawn(move || publish::uploader(sink, schemas, journal, jobs, done));
        let ack = Ack::new(
            Position {
                commit: checkpoint.commit_lsn,
                flush: checkpoint.flush_lsn,
            },
            config.source.status_interval,
            Instant::now(),
        );
        let mut backfill = Backfill::new(config, handle);
        backfill.resume(&checkpoint.copies);
        let mut pipeline = Pipeline {
            sink,
            slot: config.source.slot.as_str().to_owned(),
            backfill,
            injected_seq: 0,
            seal_after_commit: false,
            observed_delete: None,
            scratch: Vec::new(),
            uploads,
            uploaded,
            ack,
            window_opened: VecDeque::new(),
            batcher,
            assembler: Assembler::new(config.source.messages == Messages::Write),
            primary_keys: PrimaryKeys::new(&config.source, handle),
            streamed,
            record: Vec::new(),
            row_target: None,
            added,
            schemas,
            journal,
            checkpoint,
            durable,
            skip_txn: false,
            txn: None,
            changes: Vec::new(),
            last_commit_unix_us: 0,
            txn_has_rows: false,
            window_commits: Vec::new(),
        };
        // Dropping the pipeline closes the upload queue, which ends the thread.
        pipeline.stream(handle, stream, shutdown)
    })
}

/// A chunk with at least this many rows closes its window at its commit, so a crash reads at
/// most that chunk again; smaller chunks wait for the window's usual close.
const SEAL_AFTER_CHUNK_ROWS: usize = 1024;

/// Events taken from the channel per wake-up: one `block_on` per message would park and wake
/// the pipeline thread a million times for a million-row transaction.
const EVENT_BATCH: usize = 1024;

enum Wake {
    /// `n` events were moved into the inbox; 0 means the channel closed.
    Events(usize),
    Deadline,
    Shutdown,
    Copied(Result<TableCopy, RunError>),
    Backfill(Result<backfill::Event, RunError>),
    Uploaded(Upload, Result<Option<Entry>, RunError>),
}

struct Pipeline<'a> {
    sink: &'a dyn Sink,
    slot: String,
    /// Chunked copies of tables beside the stream.
    backfill: Backfill,
    /// The `_seq` of the next row pgcdc adds to the open transaction (copy rows and markers at
    /// a watermark): after every row the transaction had.
    injected_seq: u64,
    /// A chunk of at least [`SEAL_AFTER_CHUNK_ROWS`] rows was placed in the open transaction:
    /// its window closes at the commit, so a crash reads at most that chunk again.
    seal_after_commit: bool,
    /// The `_seq` of the last delete `observe` saw in the open transaction.
    observed_delete: Option<u64>,
    /// Scratch for encoding a row whose key a copy's window needs.
    scratch: Vec<u8>,
    batcher: Batcher,
    assembler: Assembler,
    /// The keys of REPLICA IDENTITY FULL tables, set on their Relation messages before the
    /// assembler (or a streamed transaction's) sees them.
    primary_keys: PrimaryKeys,
    /// Streamed transactions (protocol 2) waiting for their Stream Commit or Abort: their
    /// spool files, and what decoding them needs.
    streamed: StreamedTxns,
    /// Scratch for one spool record.
    record: Vec<u8>,
    row_target: Option<RowTarget>,
    /// Copies of tables that joined the publication.
    added: AddedTables,
    /// Schema files already in the sink (shared with the upload thread).
    schemas: &'a Mutex<KnownSchemas>,
    /// What is about to be written and no checkpoint covers yet (shared with the upload thread).
    journal: &'a Journal,
    /// Closed windows to the upload thread, and their outcomes back.
    uploads: std::sync::mpsc::SyncSender<Upload>,
    uploaded: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    /// What may be reported as flushed; counts the windows in flight.
    ack: Ack,
    /// Opening times (Unix µs) of the windows not yet durable, oldest first: one per pending
    /// upload (0 for a window without rows), then the open window's if it has rows.
    window_opened: VecDeque<i64>,
    checkpoint: Checkpoint,
    /// Per table folder: the last commit already durable in the sink (from file names).
    durable: BTreeMap<String, Lsn>,
    /// Whether the open transaction is already covered by the checkpoint.
    skip_txn: bool,
    txn: Option<TxnMeta>,
    changes: Vec<Change>,
    /// Commit time (Unix µs) of the last transaction received, for the lag in seconds.
    last_commit_unix_us: i64,
    /// Whether the open transaction wrote rows into the window.
    txn_has_rows: bool,
    /// Commit times of the window's transactions, observed as commit-to-durable latency when
    /// the window's checkpoint is written.
    window_commits: Vec<i64>,
}

impl Pipeline<'_> {
    fn stream(
        &mut self,
        handle: &Handle,
        mut stream: Stream,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let mut stopping = *shutdown.borrow();
        let mut inbox = Vec::with_capacity(EVENT_BATCH);
        loop {
            if stopping && !self.assembler.in_transaction() {
                self.seal_and_submit()?;
                self.drain_uploads(handle, &stream)?;
                self.advance_idle(None, true)?;
                info!(checkpoint = %self.checkpoint.commit_lsn, flush = %self.checkpoint.flush_lsn, "Shut down cleanly");
                stream.feedback.flushed(self.checkpoint.flush_lsn);
                handle.block_on(stream.stop())?;
                return Ok(());
            }
            let deadline = self
                .batcher
                .deadline()
                .filter(|_| !self.assembler.in_transaction());
            let copies = &mut self.added.results;
            let chunks = &mut self.backfill.events;
            let uploaded = &mut self.uploaded;
            let uploading = self.ack.uploads_pending() > 0;
            let wake = handle.block_on(async {
                tokio::select! {
                    biased;
                    changed = shutdown.changed(), if !stopping => {
                        let _ = changed;
                        Wake::Shutdown
                    }
                    Some((upload, result)) = uploaded.recv(), if uploading => {
                        Wake::Uploaded(upload, result)
                    }
                    Some(copied) = copies.recv() => Wake::Copied(copied),
                    Some(event) = chunks.recv() => Wake::Backfill(event),
                    n = stream.events.recv_many(&mut inbox, EVENT_BATCH) => Wake::Events(n),
                    _ = sleep_until(deadline), if deadline.is_some() => Wake::Deadline,
                }
            });
            match wake {
                Wake::Shutdown => {
                    info!("Shutdown requested: closing the open window");
                    stopping = true;
                }
                Wake::Uploaded(upload, result) => self.on_uploaded(upload, result, &stream)?,
                Wake::Copied(copied) => self.publish_copy(copied?)?,
                Wake::Backfill(event) => {
                    if let Some(folder) = self.backfill.on_event(event?)
                        && !self.added.is_pending(&folder)
                    {
                        self.added.request(vec![folder]);
                    }
                }
                Wake::Deadline => {
                    if self.batcher.is_due(Instant::now()) {
                        self.seal_and_submit()?;
                    }
                }
                Wake::Events(0) => {
                    // The socket task ended. Windows already handed over still become durable
                    // and checkpointed, so a reconnect does not read them again; then the task
                    // tells why it ended.
                    self.drain_uploads(handle, &stream)?;
                    return Err(match handle.block_on(stream.join()) {
                        Err(e) => RunError::Source(e),
                        Ok(()) => RunError::Source(SourceError::Closed),
                    });
                }
                Wake::Events(_) => {
                    for event in inbox.drain(..) {
                        self.handle_event(event, &stream)?;
                    }
                }
            }
        }
    }

    fn handle_event(&mut self, event: SourceEvent, stream: &Stream) -> Result<(), RunError> {
        match event {
            SourceEvent::Keepalive { wal_end } => {
                if let Some(flush) = self.advance_idle(Some(wal_end), false)? {
                    stream.feedback.flushed(flush);
                }
            }
            SourceEvent::Data { wal_start, data } => {
                metrics::get()
                    .received_lsn
                    .set(metrics::lsn_value(wal_start));
                let in_stream = self.streamed.current().is_some();
                let message =
                    pgoutput::decode(&data, in_stream).map_err(|source| RunError::Decode {
                        lsn: wal_start,
                        source,
                    })?;
                match message {
                    Message::StreamStart(start) => self
                        .streamed
                        .start(start.xid, start.first_segment)
                        .map_err(|e| self.spool_error(e))?,
                    Message::StreamStop => self.streamed.stop(),
                    Message::StreamAbort(abort) => {
                        debug!(
                            xid = abort.xid,
                            subxid = abort.subxid,
                            "Streamed transaction aborted; discarding what was spooled"
                        );
                        self.streamed
                            .abort(abort.xid, abort.subxid)
                            .map_err(|e| self.spool_error(e))?;
                    }
                    Message::StreamCommit(commit) => self.replay_streamed(&commit, stream)?,
                    message if in_stream => self.spool_streamed(message, wal_start)?,
                    message => self.apply_message(message, wal_start, stream)?,
                }
            }
        }
        Ok(())
    }

    /// Runs one decoded message through the assembler and the window.
    fn apply_message(
        &mut self,
        mut message: Message,
        lsn: Lsn,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.notice_relation(&message);
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
    fn spool_streamed(&mut self, mut message: Message, lsn: Lsn) -> Result<(), RunError> {
        self.notice_relation(&message);
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
    fn replay_streamed(&mut self, commit: &StreamCommit, stream: &Stream) -> Result<(), RunError> {
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

    /// A Relation for a table whose existing rows are not covered yet starts copying them.
    fn notice_relation(&mut self, message: &Message) {
        if let Message::Relation(relation) = message {
            let folder = format!("{}.{}", relation.namespace, relation.name);
            if !self.checkpoint.covers_table(&folder) && !self.added.is_pending(&folder) {
                self.added.request(vec![folder]);
            }
        }
    }

    /// Writes one row of the open transaction into the window, unless the checkpoint or the
    /// table's durable files already hold it. `encode` appends the line after the metadata
    /// columns (`_unchanged` and the fields).
    fn write_row(
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

    /// Publishes the rows copied from tables that joined the publication; from now on the
    /// stream's changes to them at or before the copy's LSN are skipped, as the copy holds them.
    fn publish_copy(&mut self, copy: TableCopy) -> Result<(), RunError> {
        let entry = {
            let mut known = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
            publish::publish(self.sink, &copy.sealed, &mut known, self.journal)?
        };
        for folder in &copy.folders {
            let entry = self.durable.entry(folder.clone()).or_default();
            *entry = (*entry).max(copy.lsn);
            self.checkpoint.cover_table(folder, copy.lsn);
            // A table copied whole instead of in chunks: that copy is complete.
            self.checkpoint.copies.remove(folder);
            self.backfill.whole_copy_done(folder);
        }
        self.added.finished(&copy.folders);
        self.save_checkpoint(self.ack.durable())?;
        if let Some(entry) = entry {
            self.journal.settle(entry);
        }
        info!(tables = ?copy.folders, rows = copy.rows, lsn = %copy.lsn, "Existing rows of new tables are durable");
        Ok(())
    }

    fn spool_error(&self, source: std::io::Error) -> RunError {
        RunError::Spool {
            dir: self.sink.spool_dir().display().to_string(),
            source,
        }
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

    /// One of pgcdc's control messages, in the open transaction.
    fn control(&mut self, control: &Control) -> Result<(), RunError> {
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
    fn observe(&mut self, table: &Arc<Table>, op: Op, seq: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.backfill.is_idle() {
            return;
        }
        let folder = table.folder();
        let Some(copying) = self.backfill.copying(&folder).cloned() else {
            return;
        };
        self.backfill.windows.touch(&copying);
        if !self.backfill.windows.watching(&folder) {
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
        let Some(names) = self.backfill.key_names(&folder) else {
            return;
        };
        let positions: Vec<usize> = names
            .iter()
            .filter_map(|n| table.columns.iter().position(|c| c.name == *n))
            .collect();
        if positions.len() != names.len() || !self.backfill.same_shape(&folder, table) {
            // The stream's table is not the one the copy reads (a column added, dropped or
            // renamed since it was planned): reading the chunks again with the old columns
            // would never match, and the rows copied so far lack the new ones.
            self.backfill
                .restart(&folder, "the table's columns changed during its copy");
            return;
        }
        self.scratch.clear();
        encode(&mut self.scratch);
        let mut key = Vec::new();
        let unchanged = backfill::encoded_key(&self.scratch, &positions, &mut key);
        let touch = match backfill::unchanged_positions(&self.scratch, table) {
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

    /// Closes the window and hands it to the upload thread. Blocks while an earlier window is
    /// still waiting behind the one uploading, which bounds the spool.
    fn seal_and_submit(&mut self) -> Result<(), RunError> {
        let sealed = self.batcher.seal().map_err(|source| RunError::Spool {
            dir: self.sink.spool_dir().display().to_string(),
            source,
        })?;
        // A window with rows brings its opening time along: it stays the age of the oldest
        // change not yet durable until the upload is done.
        if !self.batcher_opened() {
            self.window_opened.push_back(0);
        }
        let upload = Upload {
            sealed,
            window_commits: std::mem::take(&mut self.window_commits),
            last_commit_unix_us: self.last_commit_unix_us,
            started: Instant::now(),
            progress: std::mem::take(&mut self.backfill.progress),
        };
        if self.uploads.send(upload).is_err() {
            // The upload thread stopped on an error; its report is waiting.
            while let Ok((_, result)) = self.uploaded.try_recv() {
                result?;
            }
            return Err(RunError::Spool {
                dir: self.sink.spool_dir().display().to_string(),
                source: std::io::Error::other("the upload thread stopped"),
            });
        }
        self.ack.submitted();
        Ok(())
    }

    /// Whether the open window's opening time is the last entry of `window_opened` (one entry per
    /// pending upload, then one for the open window if it has rows).
    fn batcher_opened(&self) -> bool {
        self.window_opened.len() > self.ack.uploads_pending()
    }

    /// `pgcdc_window_age_seconds` follows the oldest change not yet durable: in an upload, or in
    /// the open window.
    fn show_window_age(&self) {
        let oldest = self.window_opened.iter().copied().find(|&t| t > 0);
        metrics::live()
            .window_opened_us
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
    }

    /// Waits for every window handed to the upload thread and applies the outcomes.
    fn drain_uploads(&mut self, handle: &Handle, stream: &Stream) -> Result<(), RunError> {
        while self.ack.uploads_pending() > 0 {
            match handle.block_on(self.uploaded.recv()) {
                Some((upload, result)) => self.on_uploaded(upload, result, stream)?,
                None => {
                    return Err(RunError::Spool {
                        dir: self.sink.spool_dir().display().to_string(),
                        source: std::io::Error::other("the upload thread stopped"),
                    });
                }
            }
        }
        Ok(())
    }

    /// A window's files are durable (or failed): record it, checkpoint, acknowledge.
    fn on_uploaded(
        &mut self,
        upload: Upload,
        result: Result<Option<Entry>, RunError>,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.ack.upload_finished();
        let entry = result?;
        self.window_opened.pop_front();
        self.show_window_age();
        let flushed = self.window_durable(upload)?;
        // The checkpoint covers the window now (it was written, or already past it).
        if let Some(entry) = entry {
            self.journal.settle(entry);
        }
        if let Some(flush) = flushed {
            stream.feedback.flushed(flush);
        }
        Ok(())
    }

    /// Records that a window's files are published; returns the new flush position.
    fn window_durable(&mut self, upload: Upload) -> Result<Option<Lsn>, RunError> {
        let Upload {
            sealed,
            window_commits,
            last_commit_unix_us,
            started,
            progress,
        } = upload;
        for p in progress {
            backfill::apply(&mut self.checkpoint.copies, p);
        }
        let m = metrics::get();
        let live = metrics::live();
        if let Some(last) = sealed.files.iter().map(|f| f.key.last).max() {
            m.written_lsn.set(metrics::lsn_value(last));
            live.caught_up_us
                .fetch_max(last_commit_unix_us, Ordering::Relaxed);
        }
        for file in &sealed.files {
            let entry = self.durable.entry(file.key.folder.clone()).or_default();
            *entry = (*entry).max(file.key.last);
        }
        let Some(position) = self.ack.window_durable(sealed.last_commit) else {
            return Ok(None);
        };
        self.save_checkpoint(position)?;
        m.flush_seconds.observe(started.elapsed().as_secs_f64());
        let now = pg_time::now_unix_micros();
        for committed in window_commits {
            m.commit_to_durable
                .observe((now - committed).max(0) as f64 / 1e6);
        }
        Ok(Some(self.checkpoint.flush_lsn))
    }

    /// With nothing buffered, everything received is durable or was never ours, so the server's
    /// position can be confirmed and the slot does not hold WAL for an idle table.
    fn advance_idle(&mut self, wal_end: Option<Lsn>, force: bool) -> Result<Option<Lsn>, RunError> {
        let buffered = !self.batcher.is_empty() || self.assembler.in_transaction();
        let mut force = force;
        if !buffered && self.ack.uploads_pending() == 0 && !self.backfill.progress.is_empty() {
            // Everything written before it is durable: the copies' progress counts now.
            for p in std::mem::take(&mut self.backfill.progress) {
                backfill::apply(&mut self.checkpoint.copies, p);
            }
            force = true;
        }
        if !buffered && self.ack.uploads_pending() == 0 {
            // Nothing pending: pgcdc is caught up as of now.
            metrics::live()
                .caught_up_us
                .fetch_max(pg_time::now_unix_micros(), Ordering::Relaxed);
        }
        let Some(position) = self.ack.idle(buffered, wal_end, force, Instant::now()) else {
            return Ok(None);
        };
        self.save_checkpoint(position)?;
        Ok(Some(position.flush))
    }

    /// Writes the checkpoint, moved to `position` (unchanged when it is already there).
    fn save_checkpoint(&mut self, position: Position) -> Result<(), RunError> {
        self.checkpoint.advance(position.commit, position.flush);
        // Every schema file written so far, so a restart need not list the sink for them. Copied
        // only when it changed: it has an entry per table, and a window rarely adds one.
        {
            let schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
            if self.checkpoint.schemas.as_ref() != Some(schemas.by_folder()) {
                self.checkpoint.schemas = Some(schemas.by_folder().clone());
            }
        }
        self.checkpoint.save(self.sink)?;
        self.ack.saved(Instant::now());
        metrics::get()
            .acknowledged_lsn
            .set(metrics::lsn_value(self.checkpoint.flush_lsn));
        debug!(commit_lsn = %self.checkpoint.commit_lsn, flush_lsn = %self.checkpoint.flush_lsn, "Checkpoint written");
        Ok(())
    }
}

/// The table and operation of the last row written, so a run of rows of one table does not build
/// its folder name or look up its row counter once per row.
struct RowTarget {
    table: Arc<Table>,
    folder: String,
    op: Op,
    series: Arc<metrics::TableSeries>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

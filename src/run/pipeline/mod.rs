//! The event loop: replication events into transactions, transactions into windows, closed
//! windows to the upload thread, and durable windows into the checkpoint and the server's
//! flush position by the rule in [`super::ack`].
//!
//! The files, by job:
//! - `mod.rs`: [`Pipeline`] and its loop: what wakes it, and each replication event to its
//!   handler;
//! - [`apply`]: decoded messages into the open transaction and the window, streamed
//!   transactions included;
//! - [`chunks`]: chunked copies in the stream: pgcdc's control messages, chunks placed at their
//!   high watermark, the stream rows the watermark rule needs;
//! - [`durable`]: windows sealed and handed to the upload thread, and what their durability
//!   moves: the checkpoint and the flush position;
//! - [`tables`]: which tables are copied beyond what rows say: joining or leaving the
//!   publication, partitions changed, whole-table copies made durable.

mod apply;
mod chunks;
mod durable;
mod tables;

use apply::RowTarget;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info};

use super::ack::{Ack, Position};
use super::catalog;
use super::copy::whole::{AddedTables, TableCopy};
use super::copy::{self, Backfill};
use super::error::RunError;
use super::journal::{Entry, Journal};
use super::keys::PrimaryKeys;
use super::publish::{self, Outcome, Upload};
use crate::batch::Batcher;
use crate::changes::{Assembler, Change, TxnMeta};
use crate::checkpoint::Checkpoint;
use crate::config::{Config, Messages};
use crate::lsn::Lsn;
use crate::metrics;
use crate::pgoutput::{self, Message};
use crate::schema_file::KnownSchemas;
use crate::sink::Sink;
use crate::source::{SourceError, SourceEvent, Stream};
use crate::streamed::StreamedTxns;

/// What the pipeline starts from, out of start-up.
pub(super) struct Parts {
    pub checkpoint: Checkpoint,
    pub batcher: Batcher,
    pub added: AddedTables,
    /// Published tables whose existing rows no copy covers yet.
    pub uncovered: Vec<String>,
    /// Whether the server sends the watermarks chunked copies need (PostgreSQL 14+).
    pub chunked: bool,
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
        uncovered,
        chunked,
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
            chunked,
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
        for folder in uncovered {
            pipeline.copy_existing_rows(folder);
        }
        // Roots whose partitions changed before a crash or a reconnect, not copied yet.
        for root in pipeline.checkpoint.recopy.clone() {
            pipeline.copy_root_again(root);
        }
        let (seen, catalog) = tokio::sync::mpsc::unbounded_channel();
        let watch = handle.spawn(catalog::watch(config.source.clone(), seen));
        // Dropping the pipeline closes the upload queue, which ends the thread.
        let result = pipeline.stream(handle, stream, shutdown, catalog);
        watch.abort();
        result
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
    Backfill(Result<copy::Event, RunError>),
    Catalog(catalog::Snapshot),
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
    /// Whether tables are copied in chunks ([`Parts::chunked`]).
    chunked: bool,
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
        mut catalog: tokio::sync::mpsc::UnboundedReceiver<catalog::Snapshot>,
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
                    Some(seen) = catalog.recv() => Wake::Catalog(seen),
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
                    if let Some(folder) = self.backfill.on_event(event?) {
                        self.copy_whole(folder);
                    }
                }
                Wake::Catalog(now) => self.on_catalog(now)?,
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

    fn spool_error(&self, source: std::io::Error) -> RunError {
        RunError::Spool {
            dir: self.sink.spool_dir().display().to_string(),
            source,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

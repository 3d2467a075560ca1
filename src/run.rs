//! `pgcdc run`: wires source → pgoutput → changes → batch → sink → checkpoint.
//!
//! The pipeline runs on a blocking thread of its own (decoding, CSV encoding, compression and
//! fsyncs are CPU and disk work), while the replication socket lives on its own async task. The
//! pipeline waits for events, the window deadline or shutdown with `Handle::block_on`.
//!
//! The acknowledgement rule: a position is reported as flushed only after the files holding
//! everything before it are published and the checkpoint says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::added_tables::{AddedTables, TableCopy};
use crate::backoff::Backoff;
use crate::batch::csv;
use crate::batch::{Batcher, Sealed};
use crate::changes::{Assembler, Change, ChangesError, Op, Table, TxnMeta};
use crate::checkpoint::{Checkpoint, CheckpointError, SnapshotState};
use crate::config::{Config, Messages, SinkTarget, SlotAhead};
use crate::lsn::Lsn;
use crate::metrics;
use crate::pg_time;
use crate::pgoutput::{self, Begin, Commit, DecodeError, Message, StreamCommit};
use crate::publication::Publications;
use crate::schema_file::KnownSchemas;
use crate::sink::{LocalSink, ObjectKey, S3Sink, Sink, SinkError, key};
use crate::snapshot::{self, PublishedTable, SnapshotError, Transcoder};
use crate::source::{Connection, SourceError, SourceEvent, Stream, slot};
use crate::streamed::StreamedTxns;

/// Events buffered between the socket task and the pipeline.
const CHANNEL_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot decode the pgoutput message at {lsn}: {source}")]
    Decode { lsn: Lsn, source: DecodeError },
    #[error("at {lsn}: {source}")]
    Changes { lsn: Lsn, source: ChangesError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot write spool file in {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error(
        "replication slot {slot} is in use by another process (pid {pid}); stop the other pgcdc or consumer first"
    )]
    SlotInUse { slot: String, pid: i32 },
    #[error(
        "source.failover needs PostgreSQL 17 or later, and the server is {server_version}: set failover = false (a failover then needs `pgcdc slot reset`) or upgrade"
    )]
    FailoverUnsupported { server_version: u32 },
    #[error(
        "replication slot {slot} uses the {plugin} plugin; pgcdc needs a pgoutput slot: drop it or choose another source.slot"
    )]
    WrongPlugin { slot: String, plugin: String },
    #[error(
        "replication slot {slot} does not exist, but checkpoint {key} shows pgcdc streamed from it up to {flush}: changes made since then are lost to the slot. Run `pgcdc slot reset --yes` to recreate it and take a fresh snapshot"
    )]
    SlotLost {
        slot: String,
        key: String,
        flush: Lsn,
    },
    #[error(
        "replication slot {slot} was invalidated by the server ({reason}): the WAL it needed is gone (see max_slot_wal_keep_size). Run `pgcdc slot reset --yes` to recreate it and take a fresh snapshot"
    )]
    SlotInvalidated { slot: String, reason: String },
    #[error(
        "replication slot {slot} has confirmed changes up to {slot_lsn}, but checkpoint {key} shows pgcdc made only up to {checkpoint} durable: the slot was advanced, recreated or failed over behind pgcdc's back, and the changes in between are not in the files. Run `pgcdc slot reset --yes` to recreate the slot and take a fresh snapshot, or set source.on_slot_ahead = \"gap\" to record a gap marker and continue"
    )]
    SlotAhead {
        slot: String,
        key: String,
        slot_lsn: Lsn,
        checkpoint: Lsn,
    },
    #[error("cannot open a SQL connection for the snapshot: {0}")]
    SqlConnect(tokio_postgres::Error),
}

impl RunError {
    /// A short, bounded label for `pgcdc_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Source(_) | RunError::SqlConnect(_) => "source",
            RunError::Decode { .. } | RunError::Changes { .. } => "decode",
            RunError::Sink(_) | RunError::Spool { .. } => "sink",
            RunError::Checkpoint(_) => "checkpoint",
            RunError::Snapshot(_) => "snapshot",
            RunError::SlotInUse { .. }
            | RunError::FailoverUnsupported { .. }
            | RunError::WrongPlugin { .. }
            | RunError::SlotLost { .. }
            | RunError::SlotAhead { .. }
            | RunError::SlotInvalidated { .. } => "slot",
        }
    }

    /// Whether reconnecting may cure it (only tried once pgcdc has streamed: a setup that never
    /// worked fails at once, so a typo is not retried forever).
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Source(e) => e.is_transient(),
            RunError::SqlConnect(_) | RunError::SlotInUse { .. } => true,
            _ => false,
        }
    }
}

/// Runs until `shutdown` fires (then closes the window, makes it durable and returns Ok) or an
/// error stops the pipeline. Once streaming worked, a lost connection or a restarting server is
/// ridden out: pgcdc reconnects with capped backoff and resumes from the checkpoint, dropping the
/// window it had not made durable (the server sends those transactions again).
pub fn run(
    config: &Config,
    handle: &Handle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut streamed_before = false;
    loop {
        let mut streamed = false;
        let error = match run_once(config, handle, shutdown.clone(), &mut streamed) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        streamed_before |= streamed;
        if !streamed_before || !error.is_transient() {
            return Err(error);
        }
        if streamed {
            backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        }
        let delay = backoff.next_delay();
        warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "Replication interrupted; reconnecting");
        metrics::get().reconnects.inc();
        let stop = handle.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = shutdown.wait_for(|stop| *stop) => true,
            }
        });
        if stop {
            info!("Shutdown requested while reconnecting; everything durable is checkpointed");
            return Ok(());
        }
    }
}

fn run_once(
    config: &Config,
    handle: &Handle,
    shutdown: watch::Receiver<bool>,
    streamed: &mut bool,
) -> Result<(), RunError> {
    let slot_name = config.source.slot.as_str();
    let sink = open_sink(config, handle, &shutdown)?;
    let sink = sink.as_ref();
    clear_spool(sink)?;

    let mut conn = handle.block_on(Connection::connect(&config.source))?;
    handle.block_on(slot::check_prerequisites(
        &mut conn,
        &config.source.publications,
    ))?;
    let system = handle.block_on(slot::identify_system(&mut conn))?;
    info!(
        system_id = %system.system_id,
        timeline = system.timeline,
        wal = %system.wal_position,
        "Connected for replication"
    );

    let version = handle.block_on(slot::server_version_num(&mut conn))?;
    if config.source.failover && version < slot::FAILOVER_SINCE {
        return Err(RunError::FailoverUnsupported {
            server_version: version,
        });
    }

    let mut checkpoint = Checkpoint::load(sink, slot_name)?;
    let mut existing = handle.block_on(slot::find_slot(&mut conn, slot_name))?;

    if let Some(ck) = &checkpoint
        && ck.snapshot == SnapshotState::Pending
    {
        warn!(
            slot = slot_name,
            "A previous snapshot was interrupted; removing its slot and files and starting over"
        );
        if let Some(lsn) = ck.snapshot_lsn {
            delete_snapshot_files(sink, lsn)?;
        }
        if existing.take().is_some() {
            handle.block_on(slot::drop_slot(&mut conn, slot_name))?;
        }
        checkpoint = None;
    }

    let mut batcher = Batcher::new(
        sink.spool_dir(),
        config.batch.format,
        config.batch.max_file_bytes,
        config.batch.window,
    );

    let checkpoint = match (existing, checkpoint) {
        (Some(found), ck) => {
            if let Some(pid) = found.active_pid {
                return Err(RunError::SlotInUse {
                    slot: slot_name.to_owned(),
                    pid,
                });
            }
            if found.wal_status.as_deref() == Some("lost") {
                return Err(RunError::SlotInvalidated {
                    slot: slot_name.to_owned(),
                    reason: "wal_status is lost".to_owned(),
                });
            }
            if found.plugin != "pgoutput" {
                return Err(RunError::WrongPlugin {
                    slot: slot_name.to_owned(),
                    plugin: found.plugin,
                });
            }
            if config.source.failover && found.failover == Some(false) {
                info!(
                    slot = slot_name,
                    "The slot is not a failover slot and source.failover is on: making it one"
                );
                handle.block_on(slot::enable_failover(&mut conn, slot_name))?;
            }
            match ck {
                Some(ck) => check_slot_position(config, sink, ck, found.confirmed_flush)?,
                None => {
                    info!(
                        slot = slot_name,
                        "Slot exists and has no checkpoint: streaming from it without a snapshot"
                    );
                    let mut ck = Checkpoint::new(slot_name, SnapshotState::Skipped);
                    if let Some(lsn) = found.confirmed_flush {
                        ck.advance(lsn, lsn);
                    }
                    ck.save(sink)?;
                    ck
                }
            }
        }
        (None, Some(ck)) => {
            return Err(RunError::SlotLost {
                slot: slot_name.to_owned(),
                key: format!("{}/{}", sink.location(), key::checkpoint_key(slot_name)),
                flush: ck.flush_lsn,
            });
        }
        (None, None) => initial_snapshot(config, handle, sink, &mut conn, &mut batcher)?,
    };

    let mut checkpoint = checkpoint;
    if let Some(previous) = checkpoint.timeline
        && previous != system.timeline
    {
        warn!(
            from = previous,
            to = system.timeline,
            "The server's timeline changed since pgcdc last connected: it was promoted (failover) or restored; the slot's position was checked against the checkpoint"
        );
    }
    if checkpoint.timeline != Some(system.timeline) {
        checkpoint.timeline = Some(system.timeline);
        checkpoint.save(sink)?;
    }
    let published = handle.block_on(slot::publication_tables(
        &mut conn,
        &config.source.publications,
    ))?;
    if checkpoint.tables.is_none() {
        // Written before pgcdc tracked tables, or the slot predates pgcdc: what is published now
        // was covered by the stream from the start.
        for folder in &published {
            checkpoint.cover_table(folder, checkpoint.commit_lsn);
        }
        checkpoint.save(sink)?;
    }
    let spool_copies = sink.spool_dir().join("copies");
    let mut added = AddedTables::new(config, handle, spool_copies.clone()).map_err(|source| {
        RunError::Spool {
            dir: spool_copies.display().to_string(),
            source,
        }
    })?;
    let uncovered: Vec<String> = published
        .into_iter()
        .filter(|f| !checkpoint.covers_table(f))
        .collect();
    if !uncovered.is_empty() {
        added.request(uncovered);
    }

    let listing = sink.list()?;
    let durable = key::durable_positions(listing.iter().map(String::as_str));
    let schemas = KnownSchemas::from_keys(listing.iter().map(String::as_str));
    for stale in &durable.incomplete {
        info!(key = %stale, "Removing an incomplete part set left by a crash; its rows will be written again");
        sink.delete(stale)?;
    }
    metrics::get()
        .acknowledged_lsn
        .set(metrics::lsn_value(checkpoint.flush_lsn));

    let protocol = slot::Protocol::negotiate(
        version,
        config.source.streaming,
        config.source.messages == Messages::Write,
    );
    info!(
        server_version = version,
        proto_version = protocol.version,
        streaming = protocol.streaming,
        messages = protocol.messages,
        "Chose the pgoutput protocol"
    );
    if config.source.messages == Messages::Write && !protocol.messages {
        // Not an error: the rows still flow; only the `_messages` folder stays empty.
        warn!(
            server_version = version,
            "messages = \"write\" needs PostgreSQL 14 or later; this server sends no logical \
             decoding messages, so none are written"
        );
    }
    let command = slot::start_replication_command(
        slot_name,
        &config.source.publications,
        Lsn::ZERO,
        protocol,
    );
    let write_messages = config.source.messages == Messages::Write;
    let streamed_txns = StreamedTxns::open(sink.spool_dir().join("streams"), write_messages)
        .map_err(|source| RunError::Spool {
            dir: sink.spool_dir().join("streams").display().to_string(),
            source,
        })?;
    let stream = handle
        .block_on(Stream::start(
            conn,
            &command,
            checkpoint.flush_lsn,
            config.source.status_interval,
            CHANNEL_CAPACITY,
        ))
        .map_err(|e| match e {
            // object_not_in_prerequisite_state: "can no longer get changes from replication slot"
            SourceError::Server(err) if err.code == "55000" => RunError::SlotInvalidated {
                slot: slot_name.to_owned(),
                reason: err.message,
            },
            other => RunError::Source(other),
        })?;
    *streamed = true;
    metrics::live().streaming.store(true, Ordering::Relaxed);
    info!(
        slot = slot_name,
        publication = %config.source.publications,
        checkpoint = %checkpoint.commit_lsn,
        "Streaming changes"
    );

    let schemas = std::sync::Mutex::new(schemas);
    // Files of a closed window are published on a thread of their own while the next window
    // fills; at most one more window waits behind the one uploading.
    let (uploads, jobs) = std::sync::mpsc::sync_channel::<Upload>(1);
    let (done, uploaded) = tokio::sync::mpsc::unbounded_channel();
    let result = std::thread::scope(|scope| {
        let schemas = &schemas;
        scope.spawn(move || {
            for upload in jobs {
                let result = {
                    let mut known = schemas.lock().unwrap_or_else(|e| e.into_inner());
                    publish(sink, &upload.sealed, &mut known)
                };
                let failed = result.is_err();
                if done.send((upload, result)).is_err() || failed {
                    break;
                }
            }
        });
        let mut pipeline = Pipeline {
            sink,
            uploads,
            uploaded,
            pending_uploads: 0,
            window_opened: std::collections::VecDeque::new(),
            batcher,
            assembler: Assembler::new(config.source.messages == Messages::Write),
            streamed: streamed_txns,
            record: Vec::new(),
            row_target: None,
            added,
            schemas,
            checkpoint,
            durable: durable.positions,
            last_commit: None,
            skip_txn: false,
            txn: None,
            last_checkpoint_write: Instant::now(),
            status_interval: config.source.status_interval,
            changes: Vec::new(),
            last_commit_unix_us: 0,
            txn_has_rows: false,
            window_commits: Vec::new(),
        };
        // Dropping the pipeline closes the upload queue, which ends the thread.
        pipeline.stream(handle, stream, shutdown)
    });
    let live = metrics::live();
    live.streaming.store(false, Ordering::Relaxed);
    live.window_opened_us.store(0, Ordering::Relaxed);
    if let Err(e) = &result {
        debug!(error = %e, "Pipeline stopped");
        metrics::get().errors.with_label_values(&[e.kind()]).inc();
    }
    result
}

/// Refuses to go on, or records a gap, when the slot has confirmed more than the checkpoint says
/// is durable: the server would never send the changes in between again.
fn check_slot_position(
    config: &Config,
    sink: &dyn Sink,
    mut ck: Checkpoint,
    slot_lsn: Option<Lsn>,
) -> Result<Checkpoint, RunError> {
    let Some(slot_lsn) = slot_lsn.filter(|&lsn| lsn > ck.flush_lsn) else {
        return Ok(ck);
    };
    let slot = config.source.slot.as_str();
    match config.source.on_slot_ahead {
        SlotAhead::Stop => Err(RunError::SlotAhead {
            slot: slot.to_owned(),
            key: format!("{}/{}", sink.location(), key::checkpoint_key(slot)),
            slot_lsn,
            checkpoint: ck.flush_lsn,
        }),
        SlotAhead::Gap => {
            let marker = crate::slot_admin::write_gap_marker(
                sink,
                slot,
                "slot-ahead",
                Some(ck.flush_lsn),
                Some(slot_lsn),
                false,
            )?;
            warn!(
                slot,
                checkpoint = %ck.flush_lsn,
                slot_position = %slot_lsn,
                marker = %marker,
                "The slot is ahead of the checkpoint: changes in between are missing from the files; continuing from the slot (source.on_slot_ahead = gap)"
            );
            ck.advance(slot_lsn, slot_lsn);
            ck.save(sink)?;
            Ok(ck)
        }
    }
}

/// Opens the configured sink; an S3 sink is checked for reachability and write access first.
fn open_sink(
    config: &Config,
    handle: &Handle,
    shutdown: &watch::Receiver<bool>,
) -> Result<Box<dyn Sink>, RunError> {
    let slot = config.source.slot.as_str();
    Ok(match &config.sink.target {
        SinkTarget::Local(root) => Box::new(LocalSink::open(root, slot)?),
        SinkTarget::S3(target) => {
            let (sink, info) = handle.block_on(S3Sink::connect(target, shutdown.clone()))?;
            handle.block_on(sink.check_writable(slot))?;
            sink.log_info(&info);
            Box::new(sink)
        }
    })
}

/// Spool files left by a previous run were never published; their rows will be sent again.
fn clear_spool(sink: &dyn Sink) -> Result<(), RunError> {
    let dir = sink.spool_dir();
    let spool_error = |source| RunError::Spool {
        dir: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(&dir).map_err(spool_error)? {
        let path = entry.map_err(spool_error)?.path();
        if path.is_file() {
            std::fs::remove_file(&path).map_err(spool_error)?;
        }
    }
    Ok(())
}

fn delete_snapshot_files(sink: &dyn Sink, lsn: Lsn) -> Result<(), RunError> {
    for k in sink.list()? {
        if let Some(parsed) = ObjectKey::parse(&k)
            && parsed.first == lsn
            && parsed.last == lsn
        {
            sink.delete(&k)?;
        }
    }
    Ok(())
}

/// Creates the slot with an exported snapshot and copies the published tables inside it.
fn initial_snapshot(
    config: &Config,
    handle: &Handle,
    sink: &dyn Sink,
    conn: &mut Connection,
    batcher: &mut Batcher,
) -> Result<Checkpoint, RunError> {
    let slot_name = config.source.slot.as_str();
    // Recorded before the slot exists, so a crash at any later point is recognised as an
    // interrupted snapshot rather than a slot someone else made.
    let mut ck = Checkpoint::new(slot_name, SnapshotState::Pending);
    ck.save(sink)?;
    let created = handle.block_on(slot::create_slot(conn, slot_name, config.source.failover))?;
    ck.snapshot_lsn = Some(created.consistent_point);
    ck.save(sink)?;
    info!(slot = slot_name, consistent_point = %created.consistent_point, "Created replication slot; copying existing rows");

    let (client, connection) = handle
        .block_on(crate::source::sql_connect(&config.source))
        .map_err(RunError::SqlConnect)?;
    let connection_task = handle.spawn(connection);
    let started = Instant::now();
    let (rows, tables) = copy_into_batcher(
        handle,
        &client,
        &created,
        &config.source.publications,
        |_| true,
        batcher,
    )?;
    drop(client);
    connection_task.abort();
    let sealed = batcher.seal().map_err(|source| RunError::Spool {
        dir: sink.spool_dir().display().to_string(),
        source,
    })?;
    publish(sink, &sealed, &mut KnownSchemas::default())?;
    ck.snapshot = SnapshotState::Done;
    for table in &tables {
        ck.cover_table(&table.folder(), created.consistent_point);
    }
    ck.advance(created.consistent_point, created.consistent_point);
    ck.save(sink)?;
    info!(
        rows,
        tables = tables.len(),
        files = sealed.files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Snapshot complete"
    );
    Ok(ck)
}

/// Copies the published projection of the tables `wanted` selects inside the snapshot `created`
/// exported, as one transaction of `_op = R` rows at its consistent point. Returns the rows
/// copied and the tables.
pub(crate) fn copy_into_batcher(
    handle: &Handle,
    client: &tokio_postgres::Client,
    created: &slot::CreatedSlot,
    publications: &Publications,
    wanted: impl Fn(&Table) -> bool,
    batcher: &mut Batcher,
) -> Result<(u64, Vec<Arc<Table>>), RunError> {
    handle.block_on(snapshot::enter(client, &created.snapshot_name))?;
    let tables: Vec<PublishedTable> = handle
        .block_on(snapshot::published_tables(client, publications))?
        .into_iter()
        .filter(|t| wanted(&t.table))
        .collect();
    for t in tables.iter().filter(|t| t.row_filter.is_some()) {
        info!(table = %t.table, row_filter = t.row_filter.as_deref().unwrap_or_default(), "Copying only the rows the publication's row filter admits");
    }
    batcher.begin(TxnMeta {
        xid: None,
        commit_lsn: created.consistent_point,
        commit_ts: pg_time::from_unix_micros(pg_time::now_unix_micros()),
    });
    let mut seq = 0u64;
    let mut transcoders: Vec<Transcoder> =
        tables.iter().map(|t| Transcoder::new(&t.table)).collect();
    // The window's clock: the snapshot is sealed as soon as the copy ends.
    let now = Instant::now();
    let rows = handle.block_on(snapshot::copy_tables(client, &tables, |index, line| {
        let (Some(table), Some(transcoder)) = (
            tables.get(index).map(|t| &t.table),
            transcoders.get_mut(index),
        ) else {
            return Ok(());
        };
        let mut fields = 0;
        batcher
            .push_encoded(table, Op::Read, seq, now, |out| {
                fields = transcoder.transcode(line, out);
            })
            .map_err(|source| SnapshotError::Write {
                table: table.to_string(),
                source,
            })?;
        if fields != table.columns.len() {
            return Err(SnapshotError::Shape {
                table: table.to_string(),
                got: fields,
                expected: table.columns.len(),
            });
        }
        seq += 1;
        Ok(())
    }))?;
    handle.block_on(snapshot::leave(client))?;
    batcher.commit(
        created.consistent_point,
        created.consistent_point,
        Instant::now(),
    );
    Ok((rows, tables.into_iter().map(|t| t.table).collect()))
}

/// Publishes the files of a closed window, in order (parts in index order), each after the
/// schema file that describes its columns.
fn publish(sink: &dyn Sink, sealed: &Sealed, schemas: &mut KnownSchemas) -> Result<(), RunError> {
    let m = metrics::get();
    for file in &sealed.files {
        schemas.ensure(sink, &file.table, file.first_row)?;
        sink.publish(&file.spool_path, file.key.as_str())?;
        m.files.with_label_values(&[&file.key.folder]).inc();
        m.bytes
            .with_label_values(&[&file.key.folder])
            .inc_by(file.bytes);
        info!(key = %file.key.as_str(), rows = file.rows, bytes = file.bytes, "File written");
    }
    Ok(())
}

/// Events taken from the channel per wake-up: one `block_on` per message would park and wake
/// the pipeline thread a million times for a million-row transaction.
const EVENT_BATCH: usize = 1024;

enum Wake {
    /// `n` events were moved into the inbox; 0 means the channel closed.
    Events(usize),
    Deadline,
    Shutdown,
    Copied(Result<TableCopy, RunError>),
    Uploaded(Upload, Result<(), RunError>),
}

/// A closed window on its way to the sink.
struct Upload {
    sealed: Sealed,
    /// Commit times of its transactions, for the commit-to-durable histogram.
    window_commits: Vec<i64>,
    last_commit_unix_us: i64,
    started: Instant,
}

struct Pipeline<'a> {
    sink: &'a dyn Sink,
    batcher: Batcher,
    assembler: Assembler,
    /// Streamed transactions (protocol 2) waiting for their Stream Commit or Abort: their
    /// spool files, and what decoding them needs.
    streamed: StreamedTxns,
    /// Scratch for one spool record.
    record: Vec<u8>,
    row_target: Option<RowTarget>,
    /// Copies of tables that joined the publication.
    added: AddedTables,
    /// Schema files already in the sink (shared with the upload thread).
    schemas: &'a std::sync::Mutex<KnownSchemas>,
    /// Closed windows to the upload thread, and their outcomes back.
    uploads: std::sync::mpsc::SyncSender<Upload>,
    uploaded: tokio::sync::mpsc::UnboundedReceiver<(Upload, Result<(), RunError>)>,
    /// Windows handed to the upload thread whose outcome has not been applied yet. While any
    /// is pending, nothing past them may be acknowledged.
    pending_uploads: usize,
    /// Opening times (Unix µs) of the windows not yet durable, oldest first: one per pending
    /// upload (0 for a window without rows), then the open window's if it has rows.
    window_opened: std::collections::VecDeque<i64>,
    checkpoint: Checkpoint,
    /// Per table folder: the last commit already durable in the sink (from file names).
    durable: BTreeMap<String, Lsn>,
    /// Commit and end LSN of the last transaction received.
    last_commit: Option<(Lsn, Lsn)>,
    /// Whether the open transaction is already covered by the checkpoint.
    skip_txn: bool,
    txn: Option<TxnMeta>,
    last_checkpoint_write: Instant,
    status_interval: Duration,
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
            let uploaded = &mut self.uploaded;
            let uploading = self.pending_uploads > 0;
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
                Wake::Deadline => {
                    if self.batcher.is_due(Instant::now()) {
                        self.seal_and_submit()?;
                    }
                }
                Wake::Events(0) => {
                    // The socket task ended: it tells why.
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
        message: Message,
        lsn: Lsn,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.notice_relation(&message);
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
    fn spool_streamed(&mut self, message: Message, lsn: Lsn) -> Result<(), RunError> {
        self.notice_relation(&message);
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
            let counter = metrics::get()
                .rows
                .with_label_values(&[folder.as_str(), op.code()]);
            self.row_target = Some(RowTarget {
                table: table.clone(),
                folder,
                op,
                counter,
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
        target.counter.inc();
        self.txn_has_rows = true;
        Ok(())
    }

    /// Publishes the rows copied from tables that joined the publication; from now on the
    /// stream's changes to them at or before the copy's LSN are skipped, as the copy holds them.
    fn publish_copy(&mut self, copy: TableCopy) -> Result<(), RunError> {
        {
            let mut known = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
            publish(self.sink, &copy.sealed, &mut known)?;
        }
        for folder in &copy.folders {
            let entry = self.durable.entry(folder.clone()).or_default();
            *entry = (*entry).max(copy.lsn);
            self.checkpoint.cover_table(folder, copy.lsn);
        }
        self.added.finished(&copy.folders);
        self.save_checkpoint()?;
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
                self.last_commit_unix_us = pg_time::to_unix_micros(meta.commit_ts);
                self.skip_txn = meta.commit_lsn <= self.checkpoint.commit_lsn;
                if self.skip_txn {
                    debug!(commit_lsn = %meta.commit_lsn, "Skipping a transaction the checkpoint covers");
                } else {
                    self.batcher.begin(*meta);
                }
            }
            Change::Row(row) => {
                self.write_row(&row.table, row.op, row.seq, |line| {
                    csv::encode_unchanged_and_fields(line, row)
                })?;
            }
            Change::Commit {
                commit_lsn,
                end_lsn,
            } => {
                self.txn = None;
                self.last_commit = Some((*commit_lsn, *end_lsn));
                metrics::get().transactions.inc();
                if self.skip_txn {
                    self.skip_txn = false;
                    return Ok(());
                }
                if std::mem::take(&mut self.txn_has_rows) {
                    self.window_commits.push(self.last_commit_unix_us);
                }
                let due = self.batcher.commit(*commit_lsn, *end_lsn, Instant::now());
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
        }
        Ok(())
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
        self.pending_uploads += 1;
        Ok(())
    }

    /// Whether the open window's opening time is the last entry of `window_opened` (one entry per
    /// pending upload, then one for the open window if it has rows).
    fn batcher_opened(&self) -> bool {
        self.window_opened.len() > self.pending_uploads
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
        while self.pending_uploads > 0 {
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
        result: Result<(), RunError>,
        stream: &Stream,
    ) -> Result<(), RunError> {
        self.pending_uploads = self.pending_uploads.saturating_sub(1);
        result?;
        self.window_opened.pop_front();
        self.show_window_age();
        if let Some(flush) = self.window_durable(upload)? {
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
        } = upload;
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
        let Some((commit_lsn, end_lsn)) = sealed.last_commit else {
            return Ok(None);
        };
        if commit_lsn <= self.checkpoint.commit_lsn && end_lsn <= self.checkpoint.flush_lsn {
            return Ok(None);
        }
        self.checkpoint.advance(commit_lsn, end_lsn);
        self.save_checkpoint()?;
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
        if !self.batcher.is_empty() || self.assembler.in_transaction() || self.pending_uploads > 0 {
            return Ok(None);
        }
        // Nothing pending: pgcdc is caught up as of now.
        metrics::live()
            .caught_up_us
            .fetch_max(pg_time::now_unix_micros(), Ordering::Relaxed);
        let (commit, end) = self.last_commit.unwrap_or_default();
        let flush = end.max(wal_end.unwrap_or_default());
        if flush <= self.checkpoint.flush_lsn {
            return Ok(None);
        }
        if !force && self.last_checkpoint_write.elapsed() < self.status_interval {
            return Ok(None);
        }
        self.checkpoint.advance(commit, flush);
        self.save_checkpoint()?;
        Ok(Some(self.checkpoint.flush_lsn))
    }

    fn save_checkpoint(&mut self) -> Result<(), RunError> {
        self.checkpoint.save(self.sink)?;
        self.last_checkpoint_write = Instant::now();
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
    counter: prometheus::IntCounter,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

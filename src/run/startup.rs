//! Start-up and reconnect: reconciling the slot, the checkpoint and the sink before streaming.
//!
//! Every start, and every reconnect, goes through here: a missing slot with a checkpoint is a lost
//! slot, a slot ahead of the checkpoint is a gap, an interrupted snapshot starts over, and files a
//! crash left half-written (an incomplete part set) are removed so their rows are written again.
//! May import the stages (`source`, `sink`, `checkpoint`, `batch`, `schema_file`) and `run`'s
//! own `copy` and `added`; nothing imports it but `run`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use super::copy::first;
use super::copy::whole::AddedTables;
use super::error::{Durable, RunError};
use super::journal::Journal;
use crate::batch::Batcher;
use crate::checkpoint::{Checkpoint, SnapshotState};
use crate::config::{Config, SinkTarget, SlotAhead};
use crate::layout::{self as key, ObjectKey};
use crate::lsn::Lsn;
use crate::metrics;
use crate::schema_file::KnownSchemas;
use crate::sink::{LocalSink, S3Sink, Sink};
use crate::source::{Connection, slot};

/// What streaming starts from.
pub(super) struct Started {
    pub conn: Connection,
    pub server_version: u32,
    pub checkpoint: Checkpoint,
    /// Holds the initial snapshot's rows until they are published (then empty).
    pub batcher: Batcher,
    pub added: AddedTables,
    /// Published tables whose existing rows no copy covers yet.
    pub uncovered: Vec<String>,
    /// Per table folder: the last commit already durable in the sink (from file names).
    pub durable: BTreeMap<String, Lsn>,
    /// Schema files already in the sink.
    pub schemas: KnownSchemas,
}

/// Connects and reconciles the slot, the checkpoint and the sink: what is durable, what must be
/// copied (first start, an interrupted snapshot, tables joining the publication), what a crash
/// left half-written. Returns with the replication connection ready for START_REPLICATION.
pub(super) fn start(
    config: &Config,
    handle: &Handle,
    sink: &dyn Sink,
    journal: &Journal,
) -> Result<Started, RunError> {
    let slot_name = config.source.slot.as_str();
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
    let found = handle.block_on(slot::find_slot(&mut conn, slot_name))?;
    let mut existing = wait_for_release(handle, &mut conn, slot_name, found)?;

    if let Some(ck) = &checkpoint
        && ck.snapshot == SnapshotState::Pending
    {
        warn!(
            slot = slot_name,
            "A previous snapshot was interrupted; removing its slot and files and starting over"
        );
        if let Some(lsn) = ck.snapshot_lsn {
            delete_snapshot_files(sink, ck, lsn)?;
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
        config.batch.open_files,
    );

    let checkpoint = match (existing, checkpoint) {
        // `wait_for_release` returned it unheld.
        (Some(found), ck) => {
            if let Some(reason) = found.invalidation() {
                return Err(RunError::SlotInvalidated {
                    slot: slot_name.to_owned(),
                    reason,
                    durable: Durable(ck.as_ref().map(|ck| ck.flush_lsn)),
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
        (None, None) => first::initial_snapshot(
            config,
            handle,
            sink,
            journal,
            &mut conn,
            &mut batcher,
            version >= 140_000,
        )?,
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
    metrics::init_tables(&published);
    if checkpoint.tables.is_none() {
        // Written before pgcdc tracked tables, or the slot predates pgcdc: what is published now
        // was covered by the stream from the start.
        for folder in &published {
            checkpoint.cover_table(folder, checkpoint.commit_lsn);
        }
        checkpoint.save(sink)?;
    }
    let spool_copies = sink.spool_dir().join("copies");
    let added = AddedTables::new(config, handle, spool_copies.clone()).map_err(|source| {
        RunError::Spool {
            dir: spool_copies.display().to_string(),
            source,
        }
    })?;
    // Copied once the pipeline runs, by the engine the server allows.
    let uncovered: Vec<String> = published
        .into_iter()
        .filter(|f| !checkpoint.covers_table(f) && !checkpoint.copies.contains_key(f))
        .collect();

    let (mut durable, schemas) = written_since(sink, &checkpoint)?;
    // A copy of a table that joined the publication holds its rows as of the copy's LSN, which
    // may lie past the checkpoint: the stream's changes up to it are in the copy already.
    for (folder, &lsn) in checkpoint.tables.iter().flatten() {
        let entry = durable.positions.entry(folder.clone()).or_insert(lsn);
        *entry = (*entry).max(lsn);
    }
    for stale in &durable.incomplete {
        info!(key = %stale, "Removing an incomplete part set left by a crash; its rows will be written again");
        sink.delete(stale)?;
    }
    metrics::get()
        .acknowledged_lsn
        .set(metrics::lsn_value(checkpoint.flush_lsn));

    Ok(Started {
        conn,
        server_version: version,
        checkpoint,
        batcher,
        added,
        uncovered,
        durable: durable.positions,
        schemas,
    })
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
pub(super) fn open_sink(
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

/// How long a start waits for a slot that another process holds. A pgcdc that was killed (or
/// lost its connection) leaves its walsender behind until the server notices the closed socket:
/// milliseconds when the walsender is sending, longer when it is waiting. A supervisor that
/// restarts pgcdc at once must not find the slot "in use" by a process that is already gone.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Returns the slot once no process holds it, re-reading it every 100 ms for at most
/// [`SLOT_RELEASE_WAIT`]; a slot still held then is [`RunError::SlotInUse`].
fn wait_for_release(
    handle: &Handle,
    conn: &mut Connection,
    slot_name: &str,
    mut found: Option<slot::ExistingSlot>,
) -> Result<Option<slot::ExistingSlot>, RunError> {
    let deadline = Instant::now() + SLOT_RELEASE_WAIT;
    let mut logged = false;
    while let Some(pid) = found.as_ref().and_then(|s| s.active_pid) {
        if Instant::now() >= deadline {
            return Err(RunError::SlotInUse {
                slot: slot_name.to_owned(),
                pid,
            });
        }
        if !logged {
            info!(
                slot = slot_name,
                pid,
                wait_s = SLOT_RELEASE_WAIT.as_secs(),
                "The slot is in use by another process; waiting for it to be released"
            );
            logged = true;
        }
        handle.block_on(tokio::time::sleep(Duration::from_millis(100)));
        found = handle.block_on(slot::find_slot(conn, slot_name))?;
    }
    Ok(found)
}

/// What the sink holds beyond the checkpoint: the files a crash left between their upload and
/// the checkpoint covering them (per table, the last durable commit; incomplete part sets), and
/// the schema files. Asks the sink only about the keys the journal names, so the cost is that
/// of what was written since the checkpoint, however long the sink's history. A checkpoint
/// written before pgcdc kept the journal has no schema record: the sink is then listed once,
/// and the next checkpoint carries what the listing found.
fn written_since(
    sink: &dyn Sink,
    checkpoint: &Checkpoint,
) -> Result<(key::Durable, KnownSchemas), RunError> {
    let Some(known) = &checkpoint.schemas else {
        info!(
            "The checkpoint predates the upload journal: listing the sink once to find what is written"
        );
        let listing = sink.list()?;
        return Ok((
            key::durable_positions(listing.iter().map(String::as_str)),
            KnownSchemas::from_keys(listing.iter().map(String::as_str)),
        ));
    };
    let mut existing = Vec::new();
    for k in Journal::read(sink, &checkpoint.slot)? {
        if sink.exists(&k)? {
            existing.push(k);
        }
    }
    let mut schemas = KnownSchemas::from_map(known.clone());
    schemas.add_keys(existing.iter().map(String::as_str));
    Ok((
        key::durable_positions(existing.iter().map(String::as_str)),
        schemas,
    ))
}

/// Removes the files of an interrupted snapshot at `lsn`: those its journal names, or, for a
/// checkpoint from before the journal, those a listing finds.
fn delete_snapshot_files(sink: &dyn Sink, ck: &Checkpoint, lsn: Lsn) -> Result<(), RunError> {
    let candidates = match ck.schemas {
        Some(_) => Journal::read(sink, &ck.slot)?,
        None => sink.list()?,
    };
    for k in candidates {
        if let Some(parsed) = ObjectKey::parse(&k)
            && parsed.first == lsn
            && parsed.last == lsn
        {
            sink.delete(&k)?;
        }
    }
    Ok(())
}

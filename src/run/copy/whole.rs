//! Tables that join the publication while pgcdc runs.
//!
//! pgoutput starts sending a table's changes once it is published, but not the rows it already
//! had. pgcdc copies those in the background, at a point that is consistent with the stream: a
//! temporary replication slot exports a snapshot that sees exactly the transactions committed
//! before its consistent point `C`. The rows are written as `_op = R` at `C`; the stream's changes
//! to the table at or before `C` are then skipped (the copy holds them), those after `C` follow it.
//! Changes before `C` that were already written stay: they sort before the copy, which supersedes
//! them. The stream keeps flowing meanwhile; only the copy waits for transactions that were
//! running when the slot was created.
//!
//! This whole-table copy is only for what chunks cannot do (PostgreSQL 13, which sends no
//! watermarks; tables without a key); the others join through [`super`]. Its rows sit
//! at `C`, which the stream may pass long before the copy ends, so while one is under way the
//! checkpoint stays where it was when the copy was asked for ([`AddedTables::hold`]): no file
//! ever lands at or below a checkpoint already written, which is what a loader that applies
//! files past the checkpoint relies on.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::first::copy_into_batcher;
use crate::batch::{Batcher, Sealed};
use crate::config::Config;
use crate::lsn::Lsn;
use crate::run::ack::Position;
use crate::run::error::RunError;
use crate::source::{Connection, slot};

/// Numbers the copies of this process, across reconnects: a copy of the pipeline before a
/// reconnect may still be making its temporary slot, whose name holds the number.
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// Rows of newly published tables, copied and sealed, waiting to be published.
#[derive(Debug)]
pub struct TableCopy {
    /// The consistent point the rows are as of.
    pub lsn: Lsn,
    /// The tables copied, including those that had no rows.
    pub folders: Vec<String>,
    pub sealed: Sealed,
    pub rows: u64,
}

/// Copies running in the background and their results.
pub struct AddedTables {
    config: Config,
    handle: Handle,
    spool_root: PathBuf,
    pending: BTreeSet<String>,
    /// Pending tables asked for again meanwhile: copied once more when their copy ends.
    again: BTreeSet<String>,
    /// The checkpoint when the first of the pending copies was asked for.
    hold: Option<Position>,
    sender: mpsc::UnboundedSender<Result<TableCopy, RunError>>,
    /// Finished copies, in the order they finished.
    pub results: mpsc::UnboundedReceiver<Result<TableCopy, RunError>>,
}

impl AddedTables {
    /// `spool_root` is emptied: copies of an earlier run were never published.
    pub fn new(config: &Config, handle: &Handle, spool_root: PathBuf) -> std::io::Result<Self> {
        if spool_root.exists() {
            std::fs::remove_dir_all(&spool_root)?;
        }
        let (sender, results) = mpsc::unbounded_channel();
        Ok(AddedTables {
            config: config.clone(),
            handle: handle.clone(),
            spool_root,
            pending: BTreeSet::new(),
            again: BTreeSet::new(),
            hold: None,
            sender,
            results,
        })
    }

    /// Whether a copy of `folder` is under way.
    pub fn is_pending(&self, folder: &str) -> bool {
        self.pending.contains(folder)
    }

    /// Where the checkpoint must stay while copies are under way: they will write their rows
    /// past it, at consistent points not known yet.
    pub fn hold(&self) -> Option<Position> {
        self.hold
    }

    /// Starts copying the existing rows of `folders` on a thread of its own; `checkpoint` is
    /// where the checkpoint is now.
    pub fn request(&mut self, folders: Vec<String>, checkpoint: Position) {
        let mut fresh = Vec::new();
        for folder in folders {
            if self.pending.contains(&folder) {
                self.again.insert(folder);
            } else {
                self.pending.insert(folder.clone());
                fresh.push(folder);
            }
        }
        let folders = fresh;
        if folders.is_empty() {
            return;
        }
        // Held already, the checkpoint has not moved since: the first hold is this one too.
        self.hold.get_or_insert(checkpoint);
        info!(tables = ?folders, "Tables joined the publication; copying their existing rows in the background");
        let job = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        let config = self.config.clone();
        let handle = self.handle.clone();
        let spool = self.spool_root.join(job.to_string());
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pgcdc-copy-{job}"))
            .spawn(move || {
                let result = copy(&config, &handle, &folders, spool.clone(), job);
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&spool);
                }
                // The pipeline may have stopped; its replacement asks again.
                let _ = sender.send(result);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "Cannot start a thread to copy new tables");
        }
    }

    /// The copy of these tables is over (published or failed). Returns those asked for again
    /// while it ran, to be copied once more.
    pub fn finished(&mut self, folders: &[String]) -> BTreeSet<String> {
        let mut again = BTreeSet::new();
        for folder in folders {
            self.pending.remove(folder);
            if self.again.remove(folder) {
                again.insert(folder.clone());
            }
        }
        if self.pending.is_empty() {
            self.hold = None;
        }
        again
    }
}

fn copy(
    config: &Config,
    handle: &Handle,
    folders: &[String],
    spool: PathBuf,
    job: u64,
) -> Result<TableCopy, RunError> {
    let started = Instant::now();
    let mut conn = handle.block_on(Connection::connect(&config.source))?;
    // Temporary: the server drops it when this connection closes, whatever happens to pgcdc.
    let name = format!("pgcdc_copy_{}_{job}", std::process::id());
    let created = handle.block_on(slot::create_temporary_slot(&mut conn, &name))?;
    let (client, connection) = handle
        .block_on(crate::source::sql_connect(&config.source))
        .map_err(RunError::SqlConnect)?;
    let connection_task = handle.spawn(connection);
    std::fs::create_dir_all(&spool).map_err(|source| RunError::Spool {
        dir: spool.display().to_string(),
        source,
    })?;
    let mut batcher = Batcher::new(
        spool.clone(),
        config.batch.format,
        config.batch.max_file_bytes,
        config.batch.window,
        config.batch.open_files,
    );
    let rows = copy_into_batcher(
        handle,
        &client,
        &created,
        &config.source.publications,
        |t| folders.contains(&t.folder()),
        |_| false,
        &mut batcher,
    )?
    .rows;
    drop(client);
    connection_task.abort();
    drop(conn);
    let sealed = batcher.seal().map_err(|source| RunError::Spool {
        dir: spool.display().to_string(),
        source,
    })?;
    info!(
        tables = ?folders,
        rows,
        consistent_point = %created.consistent_point,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Copied the existing rows of new tables"
    );
    Ok(TableCopy {
        lsn: created.consistent_point,
        // A table unpublished again meanwhile is simply not copied; it is still settled.
        folders: folders.to_vec(),
        sealed,
        rows,
    })
}

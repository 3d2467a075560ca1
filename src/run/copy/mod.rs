//! Copies of existing rows. Chunked beside the stream, for the first copy of tables with a key,
//! `pgcdc snapshot`, tables that join the publication, and a copy a restart resumes; whole in an
//! exported snapshot where chunks cannot work ([`first`] at the first start, [`whole`] later).
//!
//! A copy is planned once (the table's heap blocks, cut into chunks of `snapshot.chunk_size`),
//! begins with a `B` row, reads its chunks on `snapshot.workers` connections of their own, each
//! in a short repeatable-read transaction between two watermarks ([`window`]), and ends with an
//! `E` row after its last chunk. The pipeline writes every chunk's rows at its high watermark, so
//! the files stay in commit order and the checkpoint rule is unchanged; what a chunk adds to the
//! checkpoint ([`Progress`]) counts once the window holding its rows is durable. Tables that
//! join the publication are copied the same way ([`Backfill::join`]). Tables without a key
//! cannot be checked against the stream key by key, and PostgreSQL 13 sends no watermarks:
//! those are copied whole in an exported snapshot ([`whole`]) instead.
//!
//! Workers read no further than one chunk ahead of the pipeline each (a permit per chunk, given
//! back when the pipeline has placed it), so memory is bounded by workers × chunk size.
//!
//! The files, by job:
//! - `mod.rs`: [`Backfill`], what the pipeline asks and is told: copies requested, resumed,
//!   planned, begun, restarted;
//! - [`high`]: a chunk's high watermark, where read rows become rows to write;
//! - [`worker`]: the worker connections: planning a copy, reading a chunk, the watermarks;
//! - [`progress`]: what a copy adds to the checkpoint, and its log lines and metrics;
//! - [`rows`]: a chunk's rows and the keys in them (pure); [`reread`]: keys read again;
//! - [`window`]: the watermark rule (pure); [`rewrite`]: whether a chunk's heap file is still
//!   the plan's;
//! - [`first`]: the first start's slot, exported snapshot and whole-table copies in it;
//! - [`whole`]: whole-table copies while streaming, each in a temporary slot's snapshot, and
//!   the checkpoint held meanwhile.

pub(super) mod first;
mod high;
mod progress;
mod reread;
mod rewrite;
mod rows;
pub(super) mod whole;
pub(super) mod window;
mod worker;

use progress::{Live, hide_copy_metrics};
pub(super) use progress::{Progress, apply};
pub(super) use rows::{ChunkRows, Part, encoded_key, key_values, unchanged_positions};
use worker::{Job, Shared, worker};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::RunError;
use crate::changes::Table;
use crate::checkpoint::{CopyPlan, CopyProgress};
use crate::config::Config;
use crate::control::ChunkId;
use crate::lsn::Lsn;
use crate::metrics;
use crate::snapshot::PublishedTable;

/// What the workers tell the pipeline.
#[derive(Debug)]
pub(super) enum Event {
    /// A copy is planned; `begin`: its `Begin` control message follows in the stream.
    Planned {
        folder: String,
        published: Arc<PublishedTable>,
        plan: CopyPlan,
        begin: bool,
        attempt: u64,
    },
    /// The table cannot be copied in chunks; copy it whole instead.
    Whole {
        folder: String,
        reason: &'static str,
        attempt: u64,
    },
    /// The table is no longer published: nothing to copy.
    Abandoned {
        folder: String,
        attempt: u64,
    },
    Copied(Box<ChunkRows>),
    /// A chunk's read named a column (or the table) the database no longer has: renamed or
    /// dropped since the plan. The copy of `attempt` starts over (and is given up if the table
    /// is no longer published).
    Reshaped {
        folder: String,
        chunk: ChunkId,
        attempt: u64,
        reason: &'static str,
    },
}

/// The copies under way and the workers reading them.
pub(super) struct Backfill {
    handle: Handle,
    shared: Arc<Shared>,
    workers: usize,
    tasks: Vec<JoinHandle<()>>,
    sender: mpsc::UnboundedSender<Result<Event, RunError>>,
    pub events: mpsc::UnboundedReceiver<Result<Event, RunError>>,
    live: BTreeMap<String, Live>,
    /// Chunks read and waiting for their high watermark.
    ready: HashMap<ChunkId, Box<ChunkRows>>,
    pub windows: window::Windows,
    /// Changes to the checkpoint's copies not yet covered by a durable window.
    pub progress: Vec<Progress>,
    /// The last copy attempt numbered ([`Live::attempt`]).
    attempts: u64,
}

/// What to write at a high watermark.
pub(super) struct Placement {
    pub table: Arc<Table>,
    pub rows: Box<ChunkRows>,
    pub changed: HashMap<Vec<u8>, window::Fate>,
    /// The copy's last chunk: an `E` row follows.
    pub ends: bool,
}

impl Backfill {
    pub fn new(config: &Config, handle: &Handle) -> Backfill {
        let workers = config.snapshot.worker_count();
        let (sender, events) = mpsc::unbounded_channel();
        // Tells this process's chunks from watermarks an earlier one left in the WAL.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        Backfill {
            handle: handle.clone(),
            shared: Arc::new(Shared {
                source: config.source.clone(),
                publications: config.source.publications.clone(),
                chunk_size: config.snapshot.chunk_size,
                slot: config.source.slot.as_str().to_owned(),
                run,
                queue: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
                permits: Semaphore::new(workers),
                next_chunk: AtomicU64::new(0),
            }),
            workers,
            tasks: Vec::new(),
            sender,
            events,
            live: BTreeMap::new(),
            ready: HashMap::new(),
            windows: window::Windows::default(),
            progress: Vec::new(),
            attempts: 0,
        }
    }

    /// Starts tracking a copy of `folder` (replacing any earlier attempt) and asks a worker to
    /// plan it.
    fn start(&mut self, folder: &str, progress: CopyProgress, begun: bool, begin: bool) {
        self.attempts += 1;
        let attempt = self.attempts;
        let plan = progress.plan.clone();
        self.live.insert(
            folder.to_owned(),
            Live::new(folder, attempt, progress, begun),
        );
        self.queue(Job::Plan {
            folder: folder.to_owned(),
            plan,
            begin,
            attempt,
        });
    }

    /// Resumes the copies a checkpoint records.
    pub fn resume(&mut self, copies: &BTreeMap<String, CopyProgress>) {
        for (folder, progress) in copies {
            let begin = progress.begun_at.is_none();
            info!(table = %folder, chunks_done = progress.chunks_done(), "Resuming the copy of a table");
            self.start(folder, progress.clone(), !begin, begin);
        }
    }

    /// `pgcdc snapshot` asked to copy `folder` again.
    pub fn request(&mut self, folder: &str) {
        self.again(folder, "pgcdc snapshot asked for the table again");
    }

    /// The partitions of root `folder` changed (attached, detached, dropped, truncated): its
    /// rows are copied again, from a plan made now. The checkpoint's `recopy` keeps the root
    /// until that copy ends ([`Progress::Recopied`]), so no crash forgets the change.
    pub fn recopy(&mut self, folder: &str) {
        self.again(folder, "the table's partitions changed");
        if let Some(live) = self.live.get_mut(folder) {
            live.recopy = true;
        }
    }

    /// Copies `folder` again from a plan made after this call: a copy under way starts over.
    fn again(&mut self, folder: &str, reason: &'static str) {
        if let Some(live) = self.live.get_mut(folder) {
            if live.published.is_some() {
                // Planned with the publication or partitions as they were: the change since
                // then is what the new copy is for.
                self.restart(folder, reason);
            } else {
                // The plan under way may have read the catalog before the change: the copy
                // starts over once it is planned.
                live.requested_again = Some(reason);
            }
            return;
        }
        info!(table = %folder, reason, "Copying the table again");
        self.progress.push(Progress::Requested(folder.to_owned()));
        self.start(folder, CopyProgress::default(), false, true);
    }

    /// `folder` joined the publication (or was published before pgcdc tracked it and is not
    /// covered): its existing rows are copied like any other, in chunks at current positions,
    /// so none lands below a checkpoint already written. A copy already under way covers it.
    pub fn join(&mut self, folder: &str) {
        if self.live.contains_key(folder) {
            return;
        }
        info!(table = %folder, "The table joined the publication; copying its existing rows beside the stream");
        self.progress.push(Progress::Joined(folder.to_owned()));
        self.start(folder, CopyProgress::default(), false, true);
    }

    /// Whether `chunk` was read by this process (watermarks of an earlier one come back on a
    /// replay; their rows are gone).
    pub fn owns(&self, chunk: ChunkId) -> bool {
        chunk.run == self.shared.run
    }

    /// The table of a copy under way, by folder (for rows of tables being copied).
    pub fn copying(&self, folder: &str) -> Option<&Arc<str>> {
        self.live.get(folder).map(|l| &l.folder)
    }

    pub fn is_idle(&self) -> bool {
        self.live.is_empty()
    }

    /// The key columns of the copy of `folder` (names, for rows of the stream's table).
    pub fn key_names(&self, folder: &str) -> Option<Vec<&str>> {
        let published = self.live.get(folder)?.published.as_ref()?;
        let identity = published.identity.as_ref()?;
        Some(
            identity
                .iter()
                .filter_map(|&i| published.table.columns.get(i))
                .map(|c| c.name.as_str())
                .collect(),
        )
    }

    /// Whether the stream's `table` differs from what the planned copy of `folder` reads: other
    /// columns, another order, or another key. Then the copy's rows lack what the stream now
    /// sends, and its window rule would match rows by a key that no longer identifies one. A
    /// copy not planned yet differs from nothing (its plan reads the catalog as it is).
    pub fn shape_differs(&mut self, folder: &str, table: &Arc<Table>) -> bool {
        let Some(live) = self.live.get_mut(folder) else {
            return false;
        };
        let Some(published) = live.published.as_ref() else {
            return false;
        };
        if live
            .shape_seen
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, table))
        {
            return false;
        }
        let same = published.table.columns.len() == table.columns.len()
            && published
                .table
                .columns
                .iter()
                .zip(&table.columns)
                .all(|(a, b)| a.name == b.name && a.is_key == b.is_key);
        if same {
            live.shape_seen = Some(table.clone());
        }
        !same
    }

    /// A worker's report. Returns the tables to copy whole instead.
    pub fn on_event(&mut self, event: Event) -> Option<String> {
        match event {
            Event::Planned {
                folder,
                published,
                plan,
                begin,
                attempt,
            } => {
                let live = self
                    .live
                    .get_mut(&folder)
                    .filter(|l| l.attempt == attempt)?;
                if live.plan.is_none() {
                    self.progress.push(Progress::Planned {
                        folder: folder.clone(),
                        plan: plan.clone(),
                    });
                }
                info!(
                    table = %folder,
                    chunks = plan.chunks(),
                    blocks = plan.blocks,
                    partitions = plan.leaves.as_ref().map(Vec::len),
                    rows_estimated = plan.rows_estimated,
                    "Copying the table in chunks beside the stream"
                );
                live.progress.plan = Some(plan.clone());
                live.plan = Some(Arc::new(plan));
                live.published = Some(published);
                live.show();
                if let Some(reason) = live.requested_again.take() {
                    // The plan may have read the catalog before the change it was asked for.
                    self.restart(&folder, reason);
                } else if !begin {
                    self.queue_chunks(&folder);
                }
                None
            }
            Event::Whole {
                folder,
                reason,
                attempt,
            } => {
                self.live.get(&folder).filter(|l| l.attempt == attempt)?;
                info!(table = %folder, reason, "Copying the table whole, in an exported snapshot, not in chunks");
                self.live.remove(&folder);
                Some(folder)
            }
            Event::Abandoned { folder, attempt } => {
                self.live.get(&folder).filter(|l| l.attempt == attempt)?;
                warn!(table = %folder, "The table is not published (any more); its copy is given up");
                self.live.remove(&folder);
                // Nothing of it to copy again either.
                self.progress.push(Progress::Recopied(folder.clone()));
                self.progress.push(Progress::Ended(folder));
                None
            }
            Event::Copied(rows) => {
                self.ready.insert(rows.id, rows);
                None
            }
            Event::Reshaped {
                folder,
                chunk,
                attempt,
                reason,
            } => {
                // The chunk's permit comes back here: no high watermark follows its low one.
                self.shared.permits.add_permits(1);
                self.windows.forget(chunk);
                if self.live.get(&folder).is_some_and(|l| l.attempt == attempt) {
                    self.restart(&folder, reason);
                }
                None
            }
        }
    }

    /// A `Begin` control message of this run for `folder`: returns the table to write its `B`
    /// row for (the chunks are queued now, so every watermark follows it).
    pub fn begin(&mut self, folder: &str, run: u64, at: Lsn) -> Option<Arc<Table>> {
        if run != self.shared.run {
            return None;
        }
        let live = self.live.get_mut(folder)?;
        if live.begun {
            return None;
        }
        // A copy started over while this was on its way has no plan yet: its own `Begin` follows.
        let table = live.published.as_ref()?.table.clone();
        live.begun = true;
        self.progress.push(Progress::Begun {
            folder: folder.to_owned(),
            at,
        });
        if let Some(plan) = &live.plan {
            // `Begun` resets the record; the plan goes in again after it.
            self.progress.push(Progress::Planned {
                folder: folder.to_owned(),
                plan: CopyPlan::clone(plan),
            });
        }
        self.queue_chunks(folder);
        Some(table)
    }

    /// The copy of `folder` cannot go on with its plan: the table was rewritten (the chunks not
    /// read yet would read another file than the plan's), or its columns changed (the rows
    /// copied so far lack what the stream now sends). The copy begins again (new plan, new `B`
    /// row, which supersedes the rows of this one); chunks of the old plan still queued or read
    /// are dropped.
    pub fn restart(&mut self, folder: &str, reason: &'static str) {
        warn!(table = %folder, reason, "Copying the table again from the start");
        metrics::get().tables.table(folder).copy_restarts.inc();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|job| !matches!(job, Job::Chunk { published, .. } if published.table.folder() == folder));
        let read: Vec<ChunkId> = self
            .ready
            .iter()
            .filter(|(_, rows)| rows.folder == folder)
            .map(|(id, _)| *id)
            .collect();
        for id in read {
            // Their high watermarks find nothing; the permit comes back now.
            self.ready.remove(&id);
            self.windows.forget(id);
            self.shared.permits.add_permits(1);
        }
        let recopy = self.live.get(folder).is_some_and(|l| l.recopy);
        self.progress.push(Progress::Restarted(folder.to_owned()));
        self.start(folder, CopyProgress::default(), false, true);
        if let Some(live) = self.live.get_mut(folder) {
            live.recopy = recopy;
        }
    }

    /// The copy of `folder` was taken over by a whole-table copy that is now durable. Returns
    /// whether that ends the table's copy: a chunked copy asked for since (`pgcdc snapshot`)
    /// goes on, and keeps its record in the checkpoint.
    pub fn whole_copy_done(&mut self, folder: &str) -> bool {
        if self.live.contains_key(folder) {
            return false;
        }
        self.progress.push(Progress::Ended(folder.to_owned()));
        true
    }

    fn queue_chunks(&mut self, folder: &str) {
        let Some(live) = self.live.get(folder) else {
            return;
        };
        let (Some(published), Some(plan)) = (live.published.clone(), live.plan.clone()) else {
            return;
        };
        let attempt = live.attempt;
        for index in live.progress.remaining() {
            self.queue(Job::Chunk {
                published: published.clone(),
                plan: plan.clone(),
                part: Part::Range(index),
                attempt,
            });
        }
        // Keys a stopped process had still to read again.
        self.dispatch_rereads(folder);
    }

    fn queue(&mut self, job: Job) {
        if self.tasks.is_empty() {
            for _ in 0..self.workers {
                let shared = self.shared.clone();
                let sender = self.sender.clone();
                self.tasks.push(
                    self.handle
                        .spawn(async move { worker(shared, sender).await }),
                );
            }
        }
        self.shared.push(job, false);
    }
}

impl Drop for Backfill {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for folder in self.live.keys() {
            hide_copy_metrics(folder.as_str());
        }
    }
}

//! Chunked copies of tables beside the stream: the first copy of tables with a key, `pgcdc
//! snapshot`, and a copy a restart resumes.
//!
//! A copy is planned once (the table's heap blocks, cut into chunks of `snapshot.chunk_size`),
//! begins with a `B` row, reads its chunks on `snapshot.workers` connections of their own, each
//! in a short repeatable-read transaction between two watermarks ([`window`]), and ends with an
//! `E` row after its last chunk. The pipeline writes every chunk's rows at its high watermark, so
//! the files stay in commit order and the checkpoint rule is unchanged; what a chunk adds to the
//! checkpoint ([`Progress`]) counts once the window holding its rows is durable. Tables without
//! a key cannot be checked against the stream key by key: they are copied whole in an exported
//! snapshot ([`super::added`]) instead.
//!
//! Workers read no further than one chunk ahead of the pipeline each (a permit per chunk, given
//! back when the pipeline has placed it), so memory is bounded by workers × chunk size.

mod rewrite;
pub(super) mod window;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::RunError;
use crate::changes::Table;
use crate::checkpoint::{CopyPlan, CopyProgress};
use crate::config::Config;
use crate::config::SourceConfig;
use crate::control::{self, ChunkId, Control, Visibility};
use crate::encode::split_encoded;
use crate::lsn::Lsn;
use crate::metrics;
use crate::publication::Publications;
use crate::snapshot::{self, PublishedTable, SnapshotError, Transcoder};

/// A change to the copies in the checkpoint, applied once everything written before it is
/// durable.
#[derive(Debug, Clone)]
pub(super) enum Progress {
    /// `pgcdc snapshot` asked for a copy; it begins when a worker has planned it.
    Requested(String),
    /// The copy's `B` row is at `at`.
    Begun {
        folder: String,
        at: Lsn,
    },
    Planned {
        folder: String,
        plan: CopyPlan,
    },
    Chunk {
        folder: String,
        index: u32,
        rows: u64,
    },
    /// The `E` row is written, or the copy was given up or handed to a whole-table copy.
    Ended(String),
    /// The table was rewritten during the copy: it begins again, with a new plan and `B` row.
    Restarted(String),
}

/// Applies `progress` to the copies a checkpoint records.
pub(super) fn apply(copies: &mut BTreeMap<String, CopyProgress>, progress: Progress) {
    match progress {
        Progress::Requested(folder) => {
            copies.entry(folder).or_default();
        }
        Progress::Begun { folder, at } => {
            *copies.entry(folder).or_default() = CopyProgress {
                begun_at: Some(at),
                ..CopyProgress::default()
            };
        }
        Progress::Planned { folder, plan } => {
            copies.entry(folder).or_default().plan = Some(plan);
        }
        Progress::Chunk {
            folder,
            index,
            rows,
        } => {
            if let Some(copy) = copies.get_mut(&folder) {
                copy.mark_done(index, rows);
            }
        }
        Progress::Ended(folder) => {
            copies.remove(&folder);
        }
        Progress::Restarted(folder) => {
            copies.insert(folder, CopyProgress::default());
        }
    }
}

/// One chunk's rows, read and encoded by a worker.
#[derive(Debug)]
pub(super) struct ChunkRows {
    pub id: ChunkId,
    pub folder: String,
    pub index: u32,
    /// The plan the chunk was read under, and the heap file the read saw ([`rewrite`]).
    pub plan: CopyPlan,
    pub filenode: Option<u32>,
    pub seen: Visibility,
    /// Each row's `_unchanged` value and fields, as the batcher writes them, back to back.
    pub lines: Vec<u8>,
    pub line_ends: Vec<usize>,
    /// Each row's key ([`encoded_key`]), back to back.
    pub keys: Vec<u8>,
    pub key_ends: Vec<usize>,
}

impl ChunkRows {
    /// The rows as (line, key).
    pub fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let lines = self.line_ends.iter().scan(0, |start, &end| {
            let line = self.lines.get(*start..end).unwrap_or_default();
            *start = end;
            Some(line)
        });
        let keys = self.key_ends.iter().scan(0, |start, &end| {
            let key = self.keys.get(*start..end).unwrap_or_default();
            *start = end;
            Some(key)
        });
        lines.zip(keys)
    }
}

/// What the workers tell the pipeline.
#[derive(Debug)]
pub(super) enum Event {
    /// A copy is planned; `begin`: its `Begin` control message follows in the stream.
    Planned {
        folder: String,
        published: Arc<PublishedTable>,
        plan: CopyPlan,
        begin: bool,
    },
    /// The table cannot be copied in chunks; copy it whole instead.
    Whole {
        folder: String,
        reason: &'static str,
    },
    /// The table is no longer published: nothing to copy.
    Abandoned {
        folder: String,
    },
    Copied(Box<ChunkRows>),
    /// A chunk's read named a column the table no longer has (renamed or dropped since the
    /// plan): the copy of `plan` starts over.
    Reshaped {
        folder: String,
        chunk: ChunkId,
        plan: CopyPlan,
    },
}

/// The key of a row from its encoded line (`_unchanged,f1,…`): the key fields' CSV forms,
/// each with its length, so `(a,bc)` and `(ab,c)` differ. Also whether `_unchanged` is set.
pub(super) fn encoded_key(line: &[u8], positions: &[usize], out: &mut Vec<u8>) -> bool {
    let mut fields = split_encoded(line);
    let unchanged = fields.next().is_some_and(|f| !f.is_empty());
    let fields: Vec<&[u8]> = fields.collect();
    for &p in positions {
        let field = fields.get(p).copied().unwrap_or_default();
        out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        out.extend_from_slice(field);
    }
    unchanged
}

/// The positions of the columns a stream row's `_unchanged` names (its encoded line's first
/// field, a JSON list of names); `None` if it names a column `table` does not have.
pub(super) fn unchanged_positions(line: &[u8], table: &Table) -> Option<Vec<usize>> {
    let field = split_encoded(line).next().unwrap_or_default();
    if field.is_empty() {
        return Some(Vec::new());
    }
    let json = crate::encode::unquote_field(field);
    let names: Vec<String> = serde_json::from_slice(&json).ok()?;
    names
        .iter()
        .map(|n| table.columns.iter().position(|c| c.name == *n))
        .collect()
}

enum Job {
    Plan {
        folder: String,
        plan: Option<CopyPlan>,
        begin: bool,
    },
    Chunk {
        published: Arc<PublishedTable>,
        plan: CopyPlan,
        index: u32,
    },
}

struct Shared {
    source: SourceConfig,
    publications: Publications,
    chunk_size: u64,
    slot: String,
    run: u64,
    queue: Mutex<VecDeque<Job>>,
    notify: Notify,
    /// One per chunk read and not yet placed by the pipeline.
    permits: Semaphore,
    next_chunk: AtomicU64,
}

impl Shared {
    fn push(&self, job: Job, front: bool) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if front {
            queue.push_front(job);
        } else {
            queue.push_back(job);
        }
        drop(queue);
        self.notify.notify_one();
    }

    async fn next(&self) -> Job {
        loop {
            let notified = self.notify.notified();
            if let Some(job) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                // More may be waiting for another worker.
                self.notify.notify_one();
                return job;
            }
            notified.await;
        }
    }
}

/// A copy under way, as the pipeline sees it.
struct Live {
    folder: Arc<str>,
    published: Option<Arc<PublishedTable>>,
    plan: Option<CopyPlan>,
    /// Whether its `B` row is written (or was, before a restart).
    begun: bool,
    /// `pgcdc snapshot` asked for the table while this copy was being planned.
    requested_again: bool,
    /// Durable or placed in this run.
    progress: CopyProgress,
    rows_this_run: u64,
    started: Instant,
    logged: Instant,
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
        }
    }

    /// Resumes the copies a checkpoint records.
    pub fn resume(&mut self, copies: &BTreeMap<String, CopyProgress>) {
        for (folder, progress) in copies {
            let begin = progress.begun_at.is_none();
            self.live
                .insert(folder.clone(), Live::new(folder, progress.clone(), !begin));
            info!(table = %folder, chunks_done = progress.chunks_done(), "Resuming the copy of a table");
            self.queue(Job::Plan {
                folder: folder.clone(),
                plan: progress.plan,
                begin,
            });
        }
    }

    /// `pgcdc snapshot` asked to copy `folder` again.
    pub fn request(&mut self, folder: &str) {
        if let Some(live) = self.live.get(folder) {
            if live.published.is_some() {
                // Planned with the publication as it was: a widened row filter or column list
                // since then is what the request is for.
                self.restart(folder, "pgcdc snapshot asked for the table again");
            } else if let Some(live) = self.live.get_mut(folder) {
                // The plan under way may have read the publication before the change the
                // request is for: the copy starts over once it is planned.
                live.requested_again = true;
            }
            return;
        }
        info!(table = %folder, "Copying the table again, as requested");
        self.live.insert(
            folder.to_owned(),
            Live::new(folder, CopyProgress::default(), false),
        );
        self.progress.push(Progress::Requested(folder.to_owned()));
        self.queue(Job::Plan {
            folder: folder.to_owned(),
            plan: None,
            begin: true,
        });
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

    /// Whether the stream's `table` has the columns the copy of `folder` reads, in its order:
    /// only then can a stream row be laid over a chunk's.
    pub fn same_shape(&self, folder: &str, table: &Table) -> bool {
        self.live
            .get(folder)
            .and_then(|l| l.published.as_ref())
            .is_some_and(|p| {
                p.table.columns.len() == table.columns.len()
                    && p.table
                        .columns
                        .iter()
                        .zip(&table.columns)
                        .all(|(a, b)| a.name == b.name)
            })
    }

    /// A worker's report. Returns the tables to copy whole instead.
    pub fn on_event(&mut self, event: Event) -> Option<String> {
        match event {
            Event::Planned {
                folder,
                published,
                plan,
                begin,
            } => {
                let live = self.live.get_mut(&folder)?;
                if live.plan.is_none() {
                    self.progress.push(Progress::Planned {
                        folder: folder.clone(),
                        plan,
                    });
                }
                info!(
                    table = %folder,
                    chunks = plan.chunks(),
                    blocks = plan.blocks,
                    rows_estimated = plan.rows_estimated,
                    "Copying the table in chunks beside the stream"
                );
                live.plan = Some(plan);
                live.progress.plan = Some(plan);
                live.published = Some(published);
                live.show();
                if std::mem::take(&mut live.requested_again) {
                    // The plan may have read the publication before the request's change to it.
                    self.restart(&folder, "pgcdc snapshot asked for the table again");
                } else if !begin {
                    self.queue_chunks(&folder);
                }
                None
            }
            Event::Whole { folder, reason } => {
                info!(table = %folder, reason, "Copying the table whole, in an exported snapshot, not in chunks");
                self.live.remove(&folder);
                Some(folder)
            }
            Event::Abandoned { folder } => {
                warn!(table = %folder, "The table is not published (any more); its copy is given up");
                self.live.remove(&folder);
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
                plan,
            } => {
                // The chunk's permit comes back here: no high watermark follows its low one.
                self.shared.permits.add_permits(1);
                self.windows.forget(chunk);
                if self.live.get(&folder).is_some_and(|l| l.plan == Some(plan)) {
                    self.restart(&folder, "the table's columns changed during its copy");
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
        if let Some(plan) = live.plan {
            // `Begun` resets the record; the plan goes in again after it.
            self.progress.push(Progress::Planned {
                folder: folder.to_owned(),
                plan,
            });
        }
        self.queue_chunks(folder);
        Some(table)
    }

    /// A chunk's high watermark: what to write, if anything. Chunks of an earlier run (their
    /// rows are gone) and chunks to read again return `None`.
    pub fn high(&mut self, chunk: ChunkId) -> Option<Placement> {
        if !self.owns(chunk) {
            return None;
        }
        // Only chunk results can be ahead of their watermark: take them all; anything else goes
        // back to the queue, in order, to wait its turn.
        let mut others = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            match event {
                Ok(Event::Copied(rows)) => {
                    self.ready.insert(rows.id, rows);
                }
                other => others.push(other),
            }
        }
        for other in others {
            let _ = self.sender.send(other);
        }
        let Some(rows) = self.ready.remove(&chunk) else {
            self.windows.forget(chunk);
            return None;
        };
        self.shared.permits.add_permits(1);
        let live = self.live.get_mut(&rows.folder)?;
        match rewrite::judge(live.plan, rows.plan, rows.filenode) {
            rewrite::Generation::Current => {}
            rewrite::Generation::Stale => {
                self.windows.forget(chunk);
                return None;
            }
            rewrite::Generation::Rewritten => {
                self.windows.forget(chunk);
                self.restart(
                    &rows.folder,
                    "the table was rewritten during its copy (VACUUM FULL, CLUSTER, TRUNCATE, a rewriting ALTER TABLE or pg_repack)",
                );
                return None;
            }
        }
        let (Some(published), Some(plan)) = (live.published.clone(), live.plan) else {
            self.windows.forget(chunk);
            return None;
        };
        match self.windows.high(chunk, &rows.seen) {
            window::Verdict::Redo(reason) => {
                info!(table = %rows.folder, chunk = rows.index, reason, "Reading a chunk again");
                metrics::get()
                    .tables
                    .table(&rows.folder)
                    .copy_chunks_redone
                    .inc();
                self.shared.push(
                    Job::Chunk {
                        published,
                        plan,
                        index: rows.index,
                    },
                    true,
                );
                None
            }
            window::Verdict::Place { changed } => {
                let placed = rows.line_ends.len().saturating_sub(
                    rows.rows()
                        .filter(|(_, k)| matches!(changed.get(*k), Some(window::Fate::Settled)))
                        .count(),
                ) as u64;
                live.progress.mark_done(rows.index, placed);
                live.rows_this_run += placed;
                self.progress.push(Progress::Chunk {
                    folder: rows.folder.clone(),
                    index: rows.index,
                    rows: placed,
                });
                let ends = live.progress.remaining().is_empty();
                live.report(ends);
                if ends {
                    self.progress.push(Progress::Ended(rows.folder.clone()));
                    self.live.remove(&rows.folder);
                }
                Some(Placement {
                    table: published.table.clone(),
                    rows,
                    changed,
                    ends,
                })
            }
        }
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
        if let Some(live) = self.live.get_mut(folder) {
            *live = Live::new(folder, CopyProgress::default(), false);
        }
        self.progress.push(Progress::Restarted(folder.to_owned()));
        self.queue(Job::Plan {
            folder: folder.to_owned(),
            plan: None,
            begin: true,
        });
    }

    /// The copy of `folder` was taken over by a whole-table copy that is now durable.
    pub fn whole_copy_done(&mut self, folder: &str) {
        self.live.remove(folder);
        self.progress.push(Progress::Ended(folder.to_owned()));
    }

    fn queue_chunks(&mut self, folder: &str) {
        let Some(live) = self.live.get(folder) else {
            return;
        };
        let (Some(published), Some(plan)) = (live.published.clone(), live.plan) else {
            return;
        };
        for index in live.progress.remaining() {
            self.queue(Job::Chunk {
                published: published.clone(),
                plan,
                index,
            });
        }
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

/// Removes a table's copy gauges: a copy that is over (or whose process stops) shows none.
fn hide_copy_metrics(table: &str) {
    metrics::get().copies.remove(table);
}

impl Live {
    fn new(folder: &str, progress: CopyProgress, begun: bool) -> Live {
        Live {
            folder: Arc::from(folder),
            published: None,
            plan: progress.plan,
            begun,
            requested_again: false,
            progress,
            rows_this_run: 0,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// Metrics, and a log line at most every 10 s (and at the end).
    fn report(&mut self, finished: bool) {
        self.show();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.rows_this_run as f64 / elapsed.max(0.001);
        let estimated = self.plan.map_or(0, |p| p.rows_estimated);
        let left = estimated.saturating_sub(self.progress.rows);
        let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
        let table = &*self.folder;
        metrics::get()
            .copies
            .table(table)
            .set_eta_seconds(eta as i64);
        let chunks = self.plan.map_or(0, |p| p.chunks());
        if finished {
            info!(
                table,
                rows = self.progress.rows,
                chunks,
                elapsed_ms = (elapsed * 1000.0) as u64,
                "Copy of the table complete"
            );
            hide_copy_metrics(table);
        } else if self.logged.elapsed().as_secs() >= 10 {
            self.logged = Instant::now();
            info!(
                table,
                rows = self.progress.rows,
                rows_estimated = estimated,
                chunks_done = self.progress.chunks_done(),
                chunks,
                rows_per_s = rate as u64,
                eta_s = eta as u64,
                "Copying"
            );
        }
    }

    fn show(&self) {
        let copy = metrics::get().copies.table(&self.folder);
        copy.set_progress(
            self.progress.rows as i64,
            i64::from(self.progress.chunks_done()),
        );
        if let Some(plan) = self.plan {
            copy.set_plan(plan.rows_estimated as i64, i64::from(plan.chunks()));
        }
    }
}

async fn worker(shared: Arc<Shared>, sender: mpsc::UnboundedSender<Result<Event, RunError>>) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let job = shared.next().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match crate::source::sql_connect(&shared.source).await {
                Ok((c, connection)) => {
                    tokio::spawn(connection);
                    client = Some(c);
                }
                Err(e) => {
                    let _ = sender.send(Err(RunError::SqlConnect(e)));
                    return;
                }
            }
        }
        let Some(c) = client.as_ref() else {
            return;
        };
        let result = match job {
            Job::Plan {
                folder,
                plan,
                begin,
            } => plan_copy(c, &shared, &sender, folder, plan, begin).await,
            Job::Chunk {
                published,
                plan,
                index,
            } => read_chunk(c, &shared, &sender, &published, plan, index).await,
        };
        if let Err(e) = result {
            let _ = sender.send(Err(e));
            return;
        }
    }
}

async fn emit(
    client: &tokio_postgres::Client,
    control: &Control,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "select pg_logical_emit_message(true, $1, $2)",
            &[&control::PREFIX, &control.to_text()],
        )
        .await?;
    Ok(())
}

async fn plan_copy(
    client: &tokio_postgres::Client,
    shared: &Shared,
    sender: &mpsc::UnboundedSender<Result<Event, RunError>>,
    folder: String,
    plan: Option<CopyPlan>,
    begin: bool,
) -> Result<(), RunError> {
    let published = snapshot::published_table(client, &shared.publications, &folder).await?;
    let Some(published) = published else {
        let _ = sender.send(Ok(Event::Abandoned { folder }));
        return Ok(());
    };
    if let Some(reason) = published.unchunkable() {
        let _ = sender.send(Ok(Event::Whole { folder, reason }));
        return Ok(());
    }
    let plan = match plan {
        Some(plan) => plan,
        None => {
            let size = snapshot::table_size(client, &published.table).await?;
            CopyPlan {
                blocks: size.blocks,
                chunk_blocks: u32::try_from(shared.chunk_size / u64::from(size.block_size.max(1)))
                    .unwrap_or(u32::MAX)
                    .max(1),
                rows_estimated: size.rows_estimated,
                filenode: size.filenode,
            }
        }
    };
    let _ = sender.send(Ok(Event::Planned {
        folder: folder.clone(),
        published: Arc::new(published),
        plan,
        begin,
    }));
    if begin {
        // After the plan is on its way, so the pipeline knows the table when this arrives.
        emit(
            client,
            &Control::Begin {
                slot: shared.slot.clone(),
                table: folder,
                run: shared.run,
            },
        )
        .await
        .map_err(SnapshotError::from)?;
    }
    Ok(())
}

async fn read_chunk(
    client: &tokio_postgres::Client,
    shared: &Shared,
    sender: &mpsc::UnboundedSender<Result<Event, RunError>>,
    published: &PublishedTable,
    plan: CopyPlan,
    index: u32,
) -> Result<(), RunError> {
    // Given back by the pipeline when it has placed (or dropped) the chunk.
    if let Ok(permit) = shared.permits.acquire().await {
        permit.forget();
    }
    let folder = published.table.folder();
    let id = ChunkId {
        run: shared.run,
        seq: shared.next_chunk.fetch_add(1, Ordering::Relaxed),
    };
    emit(
        client,
        &Control::Low {
            slot: shared.slot.clone(),
            chunk: id,
            table: folder.clone(),
        },
    )
    .await
    .map_err(SnapshotError::from)?;
    // The snapshot is taken by the first statement, after the low watermark committed.
    client
        .batch_execute("begin isolation level repeatable read read only")
        .await
        .map_err(SnapshotError::from)?;
    let seen: String = client
        .query_one("select pg_current_snapshot()::text", &[])
        .await
        .map_err(SnapshotError::from)?
        .get(0);
    let seen = Visibility::parse(&seen).map_err(SnapshotError::from)?;
    let (start, end) = plan.blocks_of(index);
    let identity: Vec<usize> = published.identity.clone().unwrap_or_default();
    let mut transcoder = Transcoder::new(&published.table);
    let mut rows = ChunkRows {
        id,
        folder: folder.clone(),
        index,
        plan,
        filenode: None,
        seen,
        lines: Vec::new(),
        line_ends: Vec::new(),
        keys: Vec::new(),
        key_ends: Vec::new(),
    };
    let columns = published.table.columns.len();
    let read = snapshot::copy_rows(
        client,
        &published.table,
        &published.chunk_copy(start, end),
        |line| {
            let begin = rows.lines.len();
            let fields = transcoder.transcode(line, &mut rows.lines);
            if fields != columns {
                return Err(SnapshotError::Shape {
                    table: folder.clone(),
                    got: fields,
                    expected: columns,
                });
            }
            rows.line_ends.push(rows.lines.len());
            let encoded = rows.lines.get(begin..).unwrap_or_default();
            encoded_key(encoded, &identity, &mut rows.keys);
            rows.key_ends.push(rows.keys.len());
            Ok(())
        },
    )
    .await;
    if let Err(SnapshotError::Sql(e)) = &read
        && e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
    {
        client
            .batch_execute("rollback")
            .await
            .map_err(SnapshotError::from)?;
        let _ = sender.send(Ok(Event::Reshaped {
            folder,
            chunk: id,
            plan,
        }));
        return Ok(());
    }
    read?;
    // In the same transaction, under the read's lock: the file the rows came from.
    rows.filenode = snapshot::filenode(client, &published.table).await?;
    client
        .batch_execute("commit")
        .await
        .map_err(SnapshotError::from)?;
    // Before the high watermark: the pipeline finds the rows when it reaches it.
    let _ = sender.send(Ok(Event::Copied(Box::new(rows))));
    emit(
        client,
        &Control::High {
            slot: shared.slot.clone(),
            chunk: id,
        },
    )
    .await
    .map_err(SnapshotError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_length_prefixed_field_forms() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert!(!encoded_key(b",ab,c,x", &[0, 1], &mut a));
        assert!(!encoded_key(b",a,bc,x", &[0, 1], &mut b));
        assert_ne!(a, b);
        let mut c = Vec::new();
        assert!(encoded_key(b"[\"x\"],ab,c,\"y\"", &[0, 1], &mut c));
        assert_eq!(a, c);
    }

    #[test]
    fn progress_applies_in_order_and_ends_remove_the_copy() {
        let mut copies = BTreeMap::new();
        apply(&mut copies, Progress::Requested("t".into()));
        assert_eq!(copies["t"].begun_at, None);
        apply(
            &mut copies,
            Progress::Begun {
                folder: "t".into(),
                at: Lsn::new(5),
            },
        );
        apply(
            &mut copies,
            Progress::Planned {
                folder: "t".into(),
                plan: CopyPlan {
                    filenode: Some(1),
                    blocks: 4,
                    chunk_blocks: 2,
                    rows_estimated: 10,
                },
            },
        );
        apply(
            &mut copies,
            Progress::Chunk {
                folder: "t".into(),
                index: 1,
                rows: 3,
            },
        );
        assert_eq!(copies["t"].remaining(), vec![0]);
        assert_eq!(copies["t"].begun_at, Some(Lsn::new(5)));
        apply(&mut copies, Progress::Ended("t".into()));
        assert!(copies.is_empty());
    }
}

//! The workers, each on a connection of its own: planning a copy (the table's heap blocks, cut
//! into chunks) and reading a chunk in a short transaction between its two watermarks.
//!
//! The only part of a copy that talks SQL and runs on the async runtime: the workers share a
//! job queue and permits with [`super::Backfill`], and tell the pipeline what they did by
//! [`Event`]s alone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, mpsc};

use super::{ChunkRows, Event, Part, encoded_key};
use crate::checkpoint::CopyPlan;
use crate::config::SourceConfig;
use crate::control::{self, ChunkId, Control, Visibility};
use crate::publication::Publications;
use crate::run::error::RunError;
use crate::snapshot::{self, PublishedTable, SnapshotError, Transcoder};

pub(super) enum Job {
    Plan {
        folder: String,
        plan: Option<CopyPlan>,
        begin: bool,
        attempt: u64,
    },
    /// A range of the plan's blocks, or the rows of some keys ([`Part`]).
    Chunk {
        published: Arc<PublishedTable>,
        plan: Arc<CopyPlan>,
        part: Part,
        attempt: u64,
    },
}

pub(super) struct Shared {
    pub(super) source: SourceConfig,
    pub(super) publications: Publications,
    pub(super) chunk_size: u64,
    pub(super) slot: String,
    pub(super) run: u64,
    pub(super) queue: Mutex<VecDeque<Job>>,
    pub(super) notify: Notify,
    /// One per chunk read and not yet placed by the pipeline.
    pub(super) permits: Semaphore,
    pub(super) next_chunk: AtomicU64,
}

impl Shared {
    pub(super) fn push(&self, job: Job, front: bool) {
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

pub(super) async fn worker(
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Result<Event, RunError>>,
) {
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
                attempt,
            } => plan_copy(c, &shared, &sender, folder, plan, begin, attempt).await,
            Job::Chunk {
                published,
                plan,
                part,
                attempt,
            } => read_chunk(c, &shared, &sender, &published, plan, part, attempt).await,
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
    attempt: u64,
) -> Result<(), RunError> {
    let published = snapshot::published_table(client, &shared.publications, &folder).await?;
    let Some(published) = published else {
        let _ = sender.send(Ok(Event::Abandoned { folder, attempt }));
        return Ok(());
    };
    if let Some(reason) = published.unchunkable() {
        let _ = sender.send(Ok(Event::Whole {
            folder,
            reason,
            attempt,
        }));
        return Ok(());
    }
    let plan = match plan {
        Some(plan) => plan,
        None => {
            let size = snapshot::table_size(client, &published).await?;
            CopyPlan {
                blocks: size.blocks,
                chunk_blocks: u32::try_from(shared.chunk_size / u64::from(size.block_size.max(1)))
                    .unwrap_or(u32::MAX)
                    .max(1),
                rows_estimated: size.rows_estimated,
                filenode: size.filenode,
                leaves: size.leaves,
            }
        }
    };
    let _ = sender.send(Ok(Event::Planned {
        folder: folder.clone(),
        published: Arc::new(published),
        plan,
        begin,
        attempt,
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
    plan: Arc<CopyPlan>,
    part: Part,
    attempt: u64,
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
    // The heap the rows are read from: a leaf partition's, for a root's range.
    let (statement, leaf) = match &part {
        Part::Range(index) => {
            let span = plan.span(*index);
            (published.chunk_copy(&span), span.leaf.cloned())
        }
        Part::Keys(keys) => (published.keys_copy(keys), None),
    };
    let identity: Vec<usize> = published.identity.clone().unwrap_or_default();
    let mut transcoder = Transcoder::new(&published.table);
    let mut rows = ChunkRows {
        id,
        folder: folder.clone(),
        attempt,
        part,
        plan,
        filenode: None,
        seen,
        lines: Vec::new(),
        line_ends: Vec::new(),
        keys: Vec::new(),
        key_ends: Vec::new(),
    };
    let columns = published.table.columns.len();
    let read = snapshot::copy_rows(client, &published.table, &statement, |line| {
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
    })
    .await;
    // A column or the table itself gone since the plan: the copy starts over (or is given up
    // when the table is no longer published), rather than stopping pgcdc.
    let gone = match &read {
        Err(SnapshotError::Sql(e)) => match e.code() {
            Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => {
                Some("the table's columns or key changed during its copy")
            }
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Some("the table was dropped or renamed during its copy")
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(reason) = gone {
        client
            .batch_execute("rollback")
            .await
            .map_err(SnapshotError::from)?;
        let _ = sender.send(Ok(Event::Reshaped {
            folder,
            chunk: id,
            attempt,
            reason,
        }));
        return Ok(());
    }
    read?;
    // In the same transaction, under the read's lock: the file the rows came from.
    rows.filenode = snapshot::filenode(client, &published.table, leaf.as_ref()).await?;
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

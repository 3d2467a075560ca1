//! A chunk's high watermark: where rows a worker read become rows the pipeline writes, or are
//! dropped, or are read again.
//!
//! Every chunk ends here, and three rules meet: whether its rows still belong to the copy as
//! planned ([`super::rewrite`]), what the watermark rule makes of them ([`super::window`]), and
//! what the copy's record gains ([`super::Progress`]). Apart from the rest of
//! [`super::Backfill`], which only starts, tracks and restarts copies.

use tracing::info;

use super::{Backfill, Event, Job, Part, Placement, Progress, rewrite, window};
use crate::control::ChunkId;
use crate::metrics;

impl Backfill {
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
        let Some(live) = self
            .live
            .get_mut(&rows.folder)
            .filter(|l| l.attempt == rows.attempt)
        else {
            // Read for an attempt that was started over (or a copy that is over): its rows may
            // have another shape, and they belong to no chunk of the copy under way.
            self.windows.forget(chunk);
            return None;
        };
        match rewrite::judge(live.plan.as_deref(), &rows.plan, &rows.part, rows.filenode) {
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
        let (Some(published), Some(plan)) = (live.published.clone(), live.plan.clone()) else {
            self.windows.forget(chunk);
            return None;
        };
        match self.windows.high(chunk, &rows.seen) {
            window::Verdict::Redo(reason) => {
                info!(table = %rows.folder, part = ?rows.part, reason, "Reading a chunk again");
                metrics::get()
                    .tables
                    .table(&rows.folder)
                    .copy_chunks_redone
                    .inc();
                self.shared.push(
                    Job::Chunk {
                        published,
                        plan,
                        part: rows.part.clone(),
                        attempt: rows.attempt,
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
                match &rows.part {
                    Part::Range(index) => {
                        live.progress.mark_done(*index, placed);
                        live.rows_this_run += placed;
                        self.progress.push(Progress::Chunk {
                            folder: rows.folder.clone(),
                            index: *index,
                            rows: placed,
                        });
                    }
                    Part::Keys(keys) => {
                        let keys = keys.clone();
                        self.rereads_placed(&rows.folder, &keys);
                    }
                }
                let live = self.live.get_mut(&rows.folder)?;
                // The `E` waits for the keys still to be read again.
                let ends = live.progress.all_chunks_done()
                    && live.rereads.is_empty()
                    && live.rereading.is_none();
                live.report(ends);
                if ends {
                    if live.recopy {
                        self.progress.push(Progress::Recopied(rows.folder.clone()));
                    }
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
}

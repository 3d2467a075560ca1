//! What a copy adds to the checkpoint, and how far it has got.
//!
//! A chunk's rows count in the checkpoint only once the window holding them is durable, so its
//! [`Progress`] waits with that window and is applied then. [`Live`] is the pipeline's record of
//! a copy under way, behind its log lines and gauges. Bookkeeping only, apart from the workers
//! and the watermark: no I/O but logs and metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::changes::Table;
use crate::checkpoint::{Checkpoint, CopyPlan, CopyProgress};
use crate::lsn::Lsn;
use crate::metrics;
use crate::snapshot::PublishedTable;

/// A change to the copies in the checkpoint, applied once everything written before it is
/// durable.
#[derive(Debug, Clone)]
pub(in crate::run) enum Progress {
    /// `pgcdc snapshot` asked for a copy; it begins when a worker has planned it.
    Requested(String),
    /// A table joined the publication: the copy that begins now covers its existing rows, so a
    /// restart resumes that copy rather than asking for another.
    Joined(String),
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
    /// A key to read again ([`super::Part::Keys`]) before the copy may end.
    Reread {
        folder: String,
        key: Vec<String>,
    },
    /// These keys were read again.
    RereadDone {
        folder: String,
        keys: Arc<Vec<Vec<String>>>,
    },
    /// The `E` row is written, or the copy was given up or handed to a whole-table copy.
    Ended(String),
    /// The table was rewritten during the copy: it begins again, with a new plan and `B` row.
    Restarted(String),
    /// A copy of a root planned after its partitions changed has ended (or the root is no
    /// longer published): the checkpoint's `recopy` may forget it.
    Recopied(String),
}

/// Applies `progress` to the copies a checkpoint records.
pub(in crate::run) fn apply(checkpoint: &mut Checkpoint, progress: Progress) {
    let copies = &mut checkpoint.copies;
    match progress {
        Progress::Requested(folder) => {
            copies.entry(folder).or_default();
        }
        Progress::Joined(folder) => {
            copies.entry(folder.clone()).or_default();
            // At the checkpoint: the stream's changes to the table after it are all written.
            let at = checkpoint.commit_lsn;
            checkpoint.cover_table(&folder, at);
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
        Progress::Reread { folder, key } => {
            if let Some(copy) = copies.get_mut(&folder) {
                copy.rereads.insert(key);
            }
        }
        Progress::RereadDone { folder, keys } => {
            if let Some(copy) = copies.get_mut(&folder) {
                for key in keys.iter() {
                    copy.rereads.remove(key);
                }
            }
        }
        Progress::Ended(folder) => {
            copies.remove(&folder);
        }
        Progress::Restarted(folder) => {
            copies.insert(folder, CopyProgress::default());
        }
        Progress::Recopied(folder) => {
            checkpoint.recopy.remove(&folder);
        }
    }
}

/// A copy under way, as the pipeline sees it.
pub(super) struct Live {
    pub(super) folder: Arc<str>,
    /// Which attempt at the table's copy this is: chunks and plans of an earlier attempt (a
    /// restart, a repeated request) still on their way carry another number and are dropped.
    pub(super) attempt: u64,
    pub(super) published: Option<Arc<PublishedTable>>,
    pub(super) plan: Option<Arc<CopyPlan>>,
    /// Whether its `B` row is written (or was, before a restart).
    pub(super) begun: bool,
    /// Asked for again while this copy was being planned (why): it starts over once planned.
    pub(super) requested_again: Option<&'static str>,
    /// Copied because its partitions changed ([`super::Backfill::recopy`]).
    pub(super) recopy: bool,
    /// Durable or placed in this run.
    pub(super) progress: CopyProgress,
    pub(super) rows_this_run: u64,
    /// Keys to read again, not yet asked of a worker ([`super::Part::Keys`]).
    pub(super) rereads: BTreeSet<Vec<String>>,
    /// The keys a worker is reading again now.
    pub(super) rereading: Option<Arc<Vec<Vec<String>>>>,
    /// The stream's table last found to have the copy's shape: rows of it need no comparison.
    /// Held, not only its address, so no other table can be allocated there meanwhile.
    pub(super) shape_seen: Option<Arc<Table>>,
    started: Instant,
    logged: Instant,
}

/// Removes a table's copy gauges: a copy that is over (or whose process stops) shows none.
pub(super) fn hide_copy_metrics(table: &str) {
    metrics::get().copies.remove(table);
}

impl Live {
    pub(super) fn new(folder: &str, attempt: u64, progress: CopyProgress, begun: bool) -> Live {
        let rereads = progress.rereads.clone();
        Live {
            folder: Arc::from(folder),
            attempt,
            published: None,
            plan: progress.plan.clone().map(Arc::new),
            begun,
            requested_again: None,
            recopy: false,
            progress,
            rows_this_run: 0,
            rereads,
            rereading: None,
            shape_seen: None,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// Metrics, and a log line at most every 10 s (and at the end).
    pub(super) fn report(&mut self, finished: bool) {
        self.show();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.rows_this_run as f64 / elapsed.max(0.001);
        let estimated = self.plan.as_ref().map_or(0, |p| p.rows_estimated);
        let left = estimated.saturating_sub(self.progress.rows);
        let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
        let table = &*self.folder;
        metrics::get()
            .copies
            .table(table)
            .set_eta_seconds(eta as i64);
        let chunks = self.plan.as_ref().map_or(0, |p| p.chunks());
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

    pub(super) fn show(&self) {
        let copy = metrics::get().copies.table(&self.folder);
        copy.set_progress(
            self.progress.rows as i64,
            i64::from(self.progress.chunks_done()),
        );
        if let Some(plan) = &self.plan {
            copy.set_plan(plan.rows_estimated as i64, i64::from(plan.chunks()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn progress_applies_in_order_and_ends_remove_the_copy() {
        let mut ck = Checkpoint::new("s", crate::checkpoint::SnapshotState::Done);
        let copies = &mut ck;
        apply(copies, Progress::Requested("t".into()));
        assert_eq!(copies.copies["t"].begun_at, None);
        apply(
            copies,
            Progress::Begun {
                folder: "t".into(),
                at: Lsn::new(5),
            },
        );
        apply(
            copies,
            Progress::Planned {
                folder: "t".into(),
                plan: CopyPlan {
                    filenode: Some(1),
                    blocks: 4,
                    chunk_blocks: 2,
                    rows_estimated: 10,
                    leaves: None,
                },
            },
        );
        apply(
            copies,
            Progress::Chunk {
                folder: "t".into(),
                index: 1,
                rows: 3,
            },
        );
        assert_eq!(copies.copies["t"].remaining(), vec![0]);
        assert_eq!(copies.copies["t"].begun_at, Some(Lsn::new(5)));
        apply(copies, Progress::Ended("t".into()));
        assert!(copies.copies.is_empty());
    }

    #[test]
    fn keys_to_read_again_are_kept_until_read() {
        let mut ck = Checkpoint::new("s", crate::checkpoint::SnapshotState::Done);
        apply(&mut ck, Progress::Requested("t".into()));
        for key in [["1"], ["2"], ["1"]] {
            apply(
                &mut ck,
                Progress::Reread {
                    folder: "t".into(),
                    key: key.iter().map(|k| k.to_string()).collect(),
                },
            );
        }
        assert_eq!(ck.copies["t"].rereads.len(), 2);
        apply(
            &mut ck,
            Progress::RereadDone {
                folder: "t".into(),
                keys: Arc::new(vec![vec!["1".to_owned()]]),
            },
        );
        assert_eq!(
            ck.copies["t"].rereads.iter().collect::<Vec<_>>(),
            [&vec!["2".to_owned()]]
        );
        // A restart begins with nothing to read again: the new copy reads every row.
        apply(&mut ck, Progress::Restarted("t".into()));
        assert!(ck.copies["t"].rereads.is_empty());
    }

    #[test]
    fn a_joined_table_is_covered_and_its_copy_recorded_together() {
        let mut ck = Checkpoint::new("s", crate::checkpoint::SnapshotState::Done);
        ck.tables = Some(BTreeMap::new());
        ck.advance(Lsn::new(40), Lsn::new(48));
        assert!(!ck.covers_table("public.t"));
        apply(&mut ck, Progress::Joined("public.t".into()));
        assert!(ck.covers_table("public.t"));
        assert_eq!(ck.tables.as_ref().unwrap()["public.t"], Lsn::new(40));
        assert_eq!(ck.copies["public.t"].begun_at, None);
    }
}

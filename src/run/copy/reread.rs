//! Keys read again: an update during a copy that left a TOASTed value unchanged lacks the
//! value, and may have moved its row into blocks a chunk already read ([`Part::Keys`]).

use std::sync::Arc;

use super::worker::Job;
use super::{Backfill, Part, Progress};

/// Keys read again in one chunk at most.
const REREAD_BATCH: usize = 1000;

impl Backfill {
    /// Whether an update of `folder` that leaves a TOASTed value unchanged must have its key
    /// read again: its copy has begun, and some chunk is not placed yet (one may have lost the
    /// row to a move). Once every chunk is placed, every row was copied or is being read again.
    pub fn wants_rereads(&self, folder: &str) -> bool {
        self.live
            .get(folder)
            .is_some_and(|l| l.begun && l.plan.is_some() && !l.progress.all_chunks_done())
    }

    /// Reads the row of `key` (its values, as the server prints them) again before the copy
    /// of `folder` ends ([`Part::Keys`]).
    pub fn reread(&mut self, folder: &str, key: Vec<String>) {
        let Some(live) = self.live.get_mut(folder) else {
            return;
        };
        if live.rereads.contains(&key) {
            return;
        }
        live.rereads.insert(key.clone());
        self.progress.push(Progress::Reread {
            folder: folder.to_owned(),
            key,
        });
        self.dispatch_rereads(folder);
    }

    /// Asks a worker to read the keys waiting, unless it is reading some already: those waiting
    /// meanwhile go together next.
    pub(super) fn dispatch_rereads(&mut self, folder: &str) {
        let Some(live) = self.live.get_mut(folder) else {
            return;
        };
        if live.rereading.is_some() || live.rereads.is_empty() || !live.begun {
            return;
        }
        let (Some(published), Some(plan)) = (live.published.clone(), live.plan.clone()) else {
            return;
        };
        let keys: Vec<Vec<String>> = live.rereads.iter().take(REREAD_BATCH).cloned().collect();
        let keys = Arc::new(keys);
        live.rereading = Some(keys.clone());
        let attempt = live.attempt;
        self.queue(Job::Chunk {
            published,
            plan,
            part: Part::Keys(keys),
            attempt,
        });
    }

    /// The keys read again by chunk `keys` are placed: the next ones may go.
    pub(super) fn rereads_placed(&mut self, folder: &str, keys: &Arc<Vec<Vec<String>>>) {
        if let Some(live) = self.live.get_mut(folder) {
            for key in keys.iter() {
                live.rereads.remove(key);
            }
            live.rereading = None;
        }
        self.progress.push(Progress::RereadDone {
            folder: folder.to_owned(),
            keys: keys.clone(),
        });
        self.dispatch_rereads(folder);
    }
}

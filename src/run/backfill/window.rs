//! The watermark rule for chunked copies (as in Netflix's DBLog), pure.
//!
//! A chunk is read between two control messages in the WAL: the low watermark, committed before
//! the chunk's snapshot is taken, and the high watermark, committed after the read. The chunk's
//! rows go into the files at the high watermark. A row the stream changed between the two may
//! be older in the chunk than in the stream, so such keys are dropped from the chunk: the
//! stream's change, already written, is their state. Everything the stream changes after the
//! high watermark follows the chunk's rows, as it should.
//!
//! Two cases cannot be decided by dropping keys, and the chunk is read again instead: a change
//! in the window that left a TOASTed value unchanged (its value would come from the dropped
//! row), and a TRUNCATE. And one more guard: a transaction whose commit record precedes the low
//! watermark but that was still finishing when the snapshot was taken (PostgreSQL makes a
//! commit visible a moment after writing it) would not be in the chunk although the stream put
//! it before the chunk; the chunk's snapshot (`pg_current_snapshot()`) says exactly which
//! transactions it saw, so such a chunk is read again too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::control::{ChunkId, Visibility};
use crate::lsn::Lsn;

/// How many recent transactions on tables being copied are remembered for the visibility
/// check. The race it guards against spans milliseconds; this spans far more.
const RECENT: usize = 65_536;

/// What to do with a chunk at its high watermark.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write the chunk's rows except those whose key is in `changed`.
    Place { changed: HashSet<Vec<u8>> },
    /// Read the chunk again, for this reason.
    Redo(&'static str),
}

#[derive(Debug)]
struct Open {
    folder: Arc<str>,
    /// The low watermark's commit, once it committed.
    low: Option<Lsn>,
    changed: HashSet<Vec<u8>>,
    redo: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct Windows {
    open: HashMap<ChunkId, Open>,
    /// Transactions that touched a table being copied: xid, commit, table.
    recent: VecDeque<(u32, Lsn, Arc<str>)>,
    /// Tables the open transaction touched.
    touched: Vec<Arc<str>>,
}

impl Windows {
    /// A low watermark in the open transaction: the window opens when it commits.
    pub fn low(&mut self, chunk: ChunkId, folder: Arc<str>) {
        self.open.insert(
            chunk,
            Open {
                folder,
                low: None,
                changed: HashSet::new(),
                redo: None,
            },
        );
    }

    /// Whether a window on `folder` is open (its rows' keys must be reported).
    pub fn watching(&self, folder: &str) -> bool {
        self.open
            .values()
            .any(|o| o.low.is_some() && &*o.folder == folder)
    }

    /// A row of the open transaction on a table being copied.
    pub fn touch(&mut self, folder: &Arc<str>) {
        if !self.touched.iter().any(|f| Arc::ptr_eq(f, folder)) {
            self.touched.push(folder.clone());
        }
    }

    /// A row changed `key` of `folder` (`unchanged`: it left a TOASTed value out).
    pub fn changed(&mut self, folder: &str, key: &[u8], unchanged: bool) {
        for open in self.open.values_mut() {
            if open.low.is_some() && &*open.folder == folder {
                if unchanged {
                    open.redo
                        .get_or_insert("a change in the window left a TOASTed value unchanged");
                } else {
                    open.changed.insert(key.to_vec());
                }
            }
        }
    }

    /// The table was truncated.
    pub fn truncated(&mut self, folder: &str) {
        for open in self.open.values_mut() {
            if open.low.is_some() && &*open.folder == folder {
                open.redo
                    .get_or_insert("the table was truncated in the window");
            }
        }
    }

    /// The open transaction committed: low watermarks in it open their windows, and the tables
    /// it touched are remembered.
    pub fn commit(&mut self, xid: Option<u32>, commit: Lsn) {
        for open in self.open.values_mut() {
            open.low.get_or_insert(commit);
        }
        let touched = std::mem::take(&mut self.touched);
        if let Some(xid) = xid {
            for folder in touched {
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back((xid, commit, folder));
            }
        }
    }

    /// The open transaction was skipped or abandoned: forget what it touched.
    pub fn abandon(&mut self) {
        self.touched.clear();
        self.open.retain(|_, o| o.low.is_some());
    }

    /// Closes a chunk's window without a decision (its rows are gone).
    pub fn forget(&mut self, chunk: ChunkId) {
        self.open.remove(&chunk);
    }

    /// The chunk's high watermark: closes its window and decides.
    pub fn high(&mut self, chunk: ChunkId, seen: &Visibility) -> Verdict {
        let Some(open) = self.open.remove(&chunk) else {
            return Verdict::Redo("its low watermark was not seen");
        };
        let Some(low) = open.low else {
            return Verdict::Redo("its low watermark had not committed");
        };
        if let Some(reason) = open.redo {
            return Verdict::Redo(reason);
        }
        let unseen = self
            .recent
            .iter()
            .rev()
            .filter(|(_, commit, folder)| *commit < low && *folder == open.folder)
            .any(|(xid, _, _)| !seen.sees(*xid));
        if unseen {
            return Verdict::Redo(
                "a transaction committed before the low watermark was not yet visible to its read",
            );
        }
        Verdict::Place {
            changed: open.changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> ChunkId {
        ChunkId { run: 1, seq }
    }

    fn all_seen() -> Visibility {
        Visibility::parse("1000:1000:").unwrap()
    }

    #[test]
    fn keys_changed_between_the_watermarks_are_dropped_from_the_chunk() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        // Before the window: not recorded.
        w.changed("public.t", b"k0", false);
        w.low(id(1), t.clone());
        assert!(
            !w.watching("public.t"),
            "opens at the low watermark's commit"
        );
        w.commit(Some(10), Lsn::new(100));
        assert!(w.watching("public.t"));
        w.touch(&t);
        w.changed("public.t", b"k1", false);
        w.changed("public.other", b"k2", false);
        w.commit(Some(11), Lsn::new(110));
        match w.high(id(1), &all_seen()) {
            Verdict::Place { changed } => {
                assert_eq!(changed, HashSet::from([b"k1".to_vec()]));
            }
            other => panic!("{other:?}"),
        }
        assert!(!w.watching("public.t"));
    }

    #[test]
    fn unchanged_toast_or_truncate_in_the_window_reads_the_chunk_again() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        w.low(id(1), t.clone());
        w.low(id(2), t.clone());
        w.commit(Some(10), Lsn::new(100));
        w.changed("public.t", b"k", true);
        assert!(matches!(w.high(id(1), &all_seen()), Verdict::Redo(_)));
        w.truncated("public.t");
        assert!(matches!(w.high(id(2), &all_seen()), Verdict::Redo(_)));
        assert!(matches!(w.high(id(3), &all_seen()), Verdict::Redo(_)));
    }

    #[test]
    fn a_commit_before_the_low_watermark_the_read_did_not_see_reads_the_chunk_again() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        w.touch(&t);
        w.commit(Some(500), Lsn::new(90));
        w.low(id(1), t.clone());
        w.commit(Some(501), Lsn::new(100));
        // The chunk's snapshot still had 500 in progress.
        let seen = Visibility::parse("500:502:500").unwrap();
        assert!(matches!(w.high(id(1), &seen), Verdict::Redo(_)));
        // Seen: placed.
        w.low(id(2), t.clone());
        w.commit(Some(502), Lsn::new(120));
        let seen = Visibility::parse("503:503:").unwrap();
        assert!(matches!(w.high(id(2), &seen), Verdict::Place { .. }));
    }

    #[test]
    fn an_abandoned_transaction_opens_no_window() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        w.low(id(1), t);
        w.abandon();
        assert!(matches!(w.high(id(1), &all_seen()), Verdict::Redo(_)));
    }
}

//! The watermark rule for chunked copies (as in Netflix's DBLog), pure.
//!
//! A chunk is read between two control messages in the WAL: the low watermark, committed before
//! the chunk's snapshot is taken, and the high watermark, committed after the read. The chunk's
//! rows go into the files at the high watermark. A row the stream changed between the two may
//! be older in the chunk than in the stream, so such keys are dropped from the chunk: the
//! stream's change, already written, is their state. Everything the stream changes after the
//! high watermark follows the chunk's rows, as it should.
//!
//! An update that leaves a TOASTed value out (`_unchanged`) cannot settle a key by itself: the
//! value it did not send would come from the row the rule drops. Such a key is not dropped but
//! written at the high watermark as the chunk's row with the window's updates laid over it, each
//! sending what it sent ([`Fate::Partial`]): a value no update sent is the same in the chunk's
//! row as after the last update, whether or not the chunk's snapshot saw those updates (an update
//! the read already saw is laid over again to the same effect). A key deleted or written whole in
//! the window is the stream's alone ([`Fate::Settled`]). So steady updates never make a chunk
//! read again, and each key costs only itself.
//!
//! A TRUNCATE in the window, a stream shape other than the copy's, or a key change that left a
//! value out (the new key's value would come from the old key's row, which may be in the chunk
//! and so dropped) reads the chunk again. And
//! one more guard: a transaction whose commit record precedes the low watermark but that was
//! still finishing when the snapshot was taken (PostgreSQL makes a commit visible a moment after
//! writing it) would not be in the chunk although the stream put it before the chunk; the
//! chunk's snapshot (`pg_current_snapshot()`) says exactly which transactions it saw, so such a
//! chunk is read again too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::control::{ChunkId, Visibility};
use crate::lsn::Lsn;

/// How many recent transactions on tables being copied are remembered for the visibility
/// check. The race it guards against spans milliseconds; this spans far more.
const RECENT: usize = 65_536;

/// What to do with a chunk at its high watermark.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write the chunk's rows, each as its key's fate in `changed` says (as read if absent).
    Place { changed: HashMap<Vec<u8>, Fate> },
    /// Read the chunk again, for this reason.
    Redo(&'static str),
}

/// What the stream did to a key in a chunk's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Deleted, or written whole (an insert, an update that sent every value) at least once: the
    /// stream's rows are the key's state; the chunk's row is dropped.
    Settled,
    /// Only updates that left values out: the chunk's row with these laid over it, in order.
    Partial(Vec<Partial>),
}

/// An update that left some values out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Its `_unchanged` value and fields, as the batcher writes them.
    pub line: Vec<u8>,
    /// The positions (among the table's columns) of the values it left out.
    pub unchanged: Vec<usize>,
}

/// How a change of the stream touches a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// A delete, insert, or update with every value.
    Whole,
    Partial(Partial),
}

impl Fate {
    fn then(&mut self, touch: Touch) {
        match (&mut *self, touch) {
            (Fate::Settled, _) => {}
            (Fate::Partial(_), Touch::Whole) => *self = Fate::Settled,
            (Fate::Partial(partials), Touch::Partial(p)) => partials.push(p),
        }
    }

    fn of(touch: Touch) -> Fate {
        match touch {
            Touch::Whole => Fate::Settled,
            Touch::Partial(p) => Fate::Partial(vec![p]),
        }
    }
}

/// The chunk's row `line` (`_unchanged,f1,…`) with `partials` laid over it: each sets the values
/// it sent. Writes `_unchanged` (empty) and the fields to `out`.
pub fn lay_over(line: &[u8], partials: &[Partial], out: &mut Vec<u8>) {
    let base: Vec<&[u8]> = crate::encode::split_encoded(line).skip(1).collect();
    let layers: Vec<Vec<&[u8]>> = partials
        .iter()
        .map(|p| crate::encode::split_encoded(&p.line).skip(1).collect())
        .collect();
    for (i, field) in base.iter().enumerate() {
        let mut value = *field;
        for (partial, fields) in partials.iter().zip(&layers) {
            if !partial.unchanged.contains(&i) {
                value = fields.get(i).copied().unwrap_or_default();
            }
        }
        out.push(b',');
        out.extend_from_slice(value);
    }
}

#[derive(Debug)]
struct Open {
    folder: Arc<str>,
    /// The low watermark's commit, once it committed.
    low: Option<Lsn>,
    changed: HashMap<Vec<u8>, Fate>,
    redo: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct Windows {
    open: HashMap<ChunkId, Open>,
    /// Transactions that touched a table being copied: xid, commit, table.
    recent: VecDeque<(u32, Lsn, Arc<str>)>,
    /// Tables the open transaction touched.
    touched: Vec<Arc<str>>,
    /// The open transaction's changes to keys of tables in a window, applied at its commit.
    pending: Vec<(Arc<str>, Vec<u8>, Touch)>,
}

impl Windows {
    /// A low watermark in the open transaction: the window opens when it commits.
    pub fn low(&mut self, chunk: ChunkId, folder: Arc<str>) {
        self.open.insert(
            chunk,
            Open {
                folder,
                low: None,
                changed: HashMap::new(),
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

    /// A row of the open transaction changed `key` of `folder`; it counts once the transaction
    /// commits.
    pub fn changed(&mut self, folder: &Arc<str>, key: &[u8], touch: Touch) {
        self.pending.push((folder.clone(), key.to_vec(), touch));
    }

    /// Something in the window cannot be settled key by key (a truncate, a column change, a
    /// key change that left a value out): the open windows on `folder` read their chunks again.
    pub fn redo(&mut self, folder: &str, reason: &'static str) {
        for open in self.open.values_mut() {
            if open.low.is_some() && &*open.folder == folder {
                open.redo.get_or_insert(reason);
            }
        }
    }

    /// The open transaction committed: low watermarks in it open their windows, and the tables
    /// it touched are remembered.
    pub fn commit(&mut self, xid: Option<u32>, commit: Lsn) {
        let pending = std::mem::take(&mut self.pending);
        for open in self.open.values_mut() {
            if open.low.is_none() {
                open.low = Some(commit);
                continue;
            }
            for (folder, key, touch) in &pending {
                if *folder != open.folder {
                    continue;
                }
                match open.changed.get_mut(key) {
                    Some(fate) => fate.then(touch.clone()),
                    None => {
                        open.changed.insert(key.clone(), Fate::of(touch.clone()));
                    }
                }
            }
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
        self.pending.clear();
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

    fn partial(line: &str, unchanged: &[usize]) -> Touch {
        Touch::Partial(Partial {
            line: line.as_bytes().to_vec(),
            unchanged: unchanged.to_vec(),
        })
    }

    #[test]
    fn keys_changed_between_the_watermarks_are_dropped_from_the_chunk() {
        let t: Arc<str> = Arc::from("public.t");
        let other: Arc<str> = Arc::from("public.other");
        let mut w = Windows::default();
        // Before the window: not recorded.
        w.changed(&t, b"k0", Touch::Whole);
        w.commit(Some(9), Lsn::new(90));
        w.low(id(1), t.clone());
        assert!(
            !w.watching("public.t"),
            "opens at the low watermark's commit"
        );
        w.commit(Some(10), Lsn::new(100));
        assert!(w.watching("public.t"));
        w.touch(&t);
        w.changed(&t, b"k1", Touch::Whole);
        w.changed(&other, b"k2", Touch::Whole);
        w.commit(Some(11), Lsn::new(110));
        match w.high(id(1), &all_seen()) {
            Verdict::Place { changed } => {
                assert_eq!(changed, HashMap::from([(b"k1".to_vec(), Fate::Settled)]));
            }
            other => panic!("{other:?}"),
        }
        assert!(!w.watching("public.t"));
    }

    #[test]
    fn updates_that_leave_values_out_are_laid_over_the_chunks_row_until_one_settles_the_key() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        w.low(id(1), t.clone());
        w.commit(Some(10), Lsn::new(100));
        w.changed(&t, b"a", partial("[\"big\"],a,2,", &[2]));
        w.changed(&t, b"b", partial("[\"big\"],b,2,", &[2]));
        w.commit(Some(11), Lsn::new(110));
        w.changed(&t, b"a", partial("[\"big\"],a,3,", &[2]));
        w.changed(&t, b"b", Touch::Whole);
        w.commit(Some(12), Lsn::new(120));
        // A rolled-back or skipped transaction counts for nothing.
        w.changed(&t, b"a", Touch::Whole);
        w.abandon();
        let Verdict::Place { changed } = w.high(id(1), &all_seen()) else {
            panic!("placed");
        };
        assert_eq!(changed[b"b".as_slice()], Fate::Settled);
        let Fate::Partial(partials) = &changed[b"a".as_slice()] else {
            panic!("{changed:?}");
        };
        assert_eq!(partials.len(), 2);
        let mut out = Vec::new();
        lay_over(b",a,1,\"the, big value\"", partials, &mut out);
        assert_eq!(out, b",a,3,\"the, big value\"");
    }

    #[test]
    fn a_truncate_in_the_window_reads_the_chunk_again() {
        let t: Arc<str> = Arc::from("public.t");
        let mut w = Windows::default();
        w.low(id(1), t.clone());
        w.low(id(2), t.clone());
        w.commit(Some(10), Lsn::new(100));
        w.changed(&t, b"k", partial("[\"v\"],k,", &[1]));
        w.commit(Some(11), Lsn::new(110));
        assert!(matches!(w.high(id(1), &all_seen()), Verdict::Place { .. }));
        w.redo("public.t", "the table was truncated in the window");
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

//! Which tables' spool files are open: at most `limit`, the least recently written one closed
//! first.
//!
//! An open gzip file costs a deflate state and its buffers, about a third of a MiB; a window
//! touching thousands of tables would hold one per table (measured: 623 MiB for 2,000 tables).
//! The batcher therefore keeps only a bounded set open and parks the others (their gzip member
//! finished, the file closed): memory is bounded by this limit, not by the tables in a window.
//! Least recently used, because a table that just received a row is the likeliest to get the
//! next one (a transaction's rows for one table usually come together).
//!
//! Pure bookkeeping over folder names: no files, no I/O.

use std::collections::{BTreeMap, HashMap};

pub(super) struct OpenSet {
    limit: usize,
    /// A counter, bumped at every touch: the higher, the more recent.
    clock: u64,
    used_at: HashMap<String, u64>,
    by_age: BTreeMap<u64, String>,
}

impl OpenSet {
    /// A set of at most `limit` entries (at least one).
    pub(super) fn new(limit: usize) -> OpenSet {
        OpenSet {
            limit: limit.max(1),
            clock: 0,
            used_at: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Marks `key` as the most recently used open entry. When `key` was not open and the set
    /// was full, returns the least recently used entry, which the caller must close: it has left
    /// the set.
    pub(super) fn touch(&mut self, key: &str) -> Option<String> {
        self.clock += 1;
        let now = self.clock;
        if let Some(at) = self.used_at.get_mut(key) {
            let before = std::mem::replace(at, now);
            if let Some(name) = self.by_age.remove(&before) {
                self.by_age.insert(now, name);
            }
            return None;
        }
        let evicted = if self.used_at.len() >= self.limit {
            self.by_age.pop_first().map(|(_, oldest)| {
                self.used_at.remove(&oldest);
                oldest
            })
        } else {
            None
        };
        self.used_at.insert(key.to_owned(), now);
        self.by_age.insert(now, key.to_owned());
        evicted
    }

    /// Whether `key` is open.
    #[cfg(test)]
    fn contains(&self, key: &str) -> bool {
        self.used_at.contains_key(key)
    }

    /// The open entries, least recently used first.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_age.values().map(String::as_str)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.used_at.len()
    }

    /// Forgets every entry (the window closed: all files are finished).
    pub(super) fn clear(&mut self) {
        self.used_at.clear();
        self.by_age.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_limit_and_evicts_the_least_recently_used() {
        let mut set = OpenSet::new(2);
        assert_eq!(set.touch("a"), None);
        assert_eq!(set.touch("b"), None);
        assert_eq!(set.len(), 2);
        // `a` is used again, so `b` is now the oldest.
        assert_eq!(set.touch("a"), None);
        assert_eq!(set.touch("c").as_deref(), Some("b"));
        assert!(!set.contains("b"));
        assert_eq!(set.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(set.touch("b").as_deref(), Some("a"));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn touching_an_open_entry_never_evicts() {
        let mut set = OpenSet::new(3);
        for key in ["a", "b", "c"] {
            assert_eq!(set.touch(key), None);
        }
        for _ in 0..10 {
            for key in ["c", "a", "b"] {
                assert_eq!(set.touch(key), None);
            }
        }
        assert_eq!(set.keys().collect::<Vec<_>>(), ["c", "a", "b"]);
    }

    #[test]
    fn a_limit_of_one_swaps_on_every_new_key_and_zero_means_one() {
        let mut set = OpenSet::new(0);
        assert_eq!(set.touch("a"), None);
        assert_eq!(set.touch("a"), None);
        assert_eq!(set.touch("b").as_deref(), Some("a"));
        assert_eq!(set.touch("a").as_deref(), Some("b"));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn round_robin_over_more_keys_than_the_limit_evicts_in_order() {
        let mut set = OpenSet::new(3);
        let keys: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        let mut evicted = Vec::new();
        for _ in 0..2 {
            for key in &keys {
                evicted.extend(set.touch(key));
            }
        }
        // After the first three, each new key evicts the one touched three steps before.
        assert_eq!(evicted, ["t0", "t1", "t2", "t3", "t4", "t0", "t1"]);
        assert!(set.len() <= 3);
    }

    #[test]
    fn clear_empties_the_set() {
        let mut set = OpenSet::new(2);
        set.touch("a");
        set.touch("b");
        set.clear();
        assert_eq!(set.len(), 0);
        assert_eq!(set.touch("c"), None);
        assert_eq!(set.touch("d"), None);
    }
}

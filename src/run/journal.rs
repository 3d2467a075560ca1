//! The upload journal: the objects pgcdc is about to write that no checkpoint covers yet.
//!
//! A crash between a file becoming durable and the checkpoint that covers it leaves files the
//! checkpoint does not know: their transactions come again from the server, and pgcdc must
//! skip the rows those files hold (or a replay cut into other windows would write them twice),
//! and remove what a crash left of a part set. Listing the sink would find them, at a cost that
//! grows with every file ever written. Instead, before a window's files (and any new schema
//! file) are published, their keys are written to `_pgcdc/<slot>/journal.json`; once the
//! checkpoint covers the window, its keys leave the journal. A start-up reads the checkpoint and
//! the journal and asks the sink about those keys only: the cost is bounded by what was written
//! since the last checkpoint, not by history.
//!
//! One extra small write per window (the journal), against one LIST request per 1,000 objects of
//! history at every start and reconnect.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::layout;
use crate::sink::{Sink, SinkError};

/// A window's (or a copy's) announcement, to settle once the checkpoint covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry(u64);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    /// Keys that may exist in the sink beyond what the checkpoint covers.
    keys: Vec<String>,
}

pub(super) struct Journal {
    key: String,
    /// Announced and not yet settled, by entry.
    pending: Mutex<(u64, BTreeMap<u64, Vec<String>>)>,
}

impl Journal {
    pub fn new(slot: &str) -> Journal {
        Journal {
            key: layout::journal_key(slot),
            pending: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// Records that `keys` are about to be written; returns when the journal saying so is
    /// durable, so it must be called before any of them is published.
    pub fn announce(&self, sink: &dyn Sink, keys: Vec<String>) -> Result<Entry, SinkError> {
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (next, pending) = &mut *guard;
        *next += 1;
        let entry = *next;
        pending.insert(entry, keys);
        let document = Document {
            keys: pending.values().flatten().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
        bytes.push(b'\n');
        sink.write(&self.key, &bytes)?;
        Ok(Entry(entry))
    }

    /// The checkpoint now covers what `entry` announced. The file is rewritten with the next
    /// announcement: until then it names keys the checkpoint covers, which a start-up finds
    /// harmless (at or below the checkpoint).
    pub fn settle(&self, entry: Entry) {
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&entry.0);
    }

    /// The keys the journal in the sink names (none when there is no journal).
    pub fn read(sink: &dyn Sink, slot: &str) -> Result<Vec<String>, JournalError> {
        let key = layout::journal_key(slot);
        let Some(bytes) = sink.read(&key)? else {
            return Ok(Vec::new());
        };
        serde_json::from_slice::<Document>(&bytes)
            .map(|d| d.keys)
            .map_err(|e| JournalError::Corrupt {
                key,
                message: e.to_string(),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "the upload journal {key} is not valid ({message}); it is written only by pgcdc: remove it and restart (pgcdc then lists the sink once to find what was written)"
    )]
    Corrupt { key: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LocalSink;

    #[test]
    fn announced_keys_stay_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(dir.path(), "s").unwrap();
        assert!(Journal::read(&sink, "s").unwrap().is_empty());
        let journal = Journal::new("s");
        let first = journal.announce(&sink, vec!["t/a".into()]).unwrap();
        let second = journal
            .announce(&sink, vec!["t/b".into(), "u/c".into()])
            .unwrap();
        assert_eq!(Journal::read(&sink, "s").unwrap(), ["t/a", "t/b", "u/c"]);
        journal.settle(first);
        journal.settle(second);
        let third = journal.announce(&sink, vec!["t/d".into()]).unwrap();
        assert_eq!(Journal::read(&sink, "s").unwrap(), ["t/d"]);
        assert!(third > second);
    }

    #[test]
    fn a_corrupt_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(dir.path(), "s").unwrap();
        sink.write(&layout::journal_key("s"), b"{nope").unwrap();
        let err = Journal::read(&sink, "s").unwrap_err();
        assert!(err.to_string().contains("journal.json"), "{err}");
    }
}

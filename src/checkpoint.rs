//! The durable record of how far pgcdc got: the only source of the flush LSN it reports.
//!
//! Stored in the sink at `_pgcdc/<slot>/checkpoint.json`, written only after the files it
//! covers are durable. On restart every transaction whose commit LSN is at or below
//! `commit_lsn` is skipped, so a crash between a file landing and the server hearing about it
//! does not write the rows twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::layout as key;
use crate::lsn::Lsn;
use crate::sink::{Sink, SinkError};

/// Where the initial snapshot stands for this slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// pgcdc is creating the slot and copying existing rows; a restart in this state drops the
    /// half-made slot and the partial snapshot files and starts over.
    Pending,
    /// The existing rows were copied at `snapshot_lsn`.
    Done,
    /// The slot existed before pgcdc first ran, so no snapshot was taken.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub slot: String,
    pub snapshot: SnapshotState,
    /// The slot's consistent point, once known.
    pub snapshot_lsn: Option<Lsn>,
    /// Commit LSN of the last transaction whose rows are all durable in the sink.
    pub commit_lsn: Lsn,
    /// The position acknowledged to the server as flushed (end of that commit, or a keepalive
    /// position while idle). Never ahead of what is durable.
    pub flush_lsn: Lsn,
    /// The tables (`schema.table`) whose existing rows are covered: copied by a snapshot at the
    /// given LSN, or streamed from the slot's start. A published table missing here is copied
    /// when pgcdc notices it. `None` in checkpoints written before pgcdc tracked this; the tables
    /// published at start-up are then taken as covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, Lsn>>,
    /// The schema files in the sink, per table folder, by fingerprint: a restart knows them
    /// without listing the sink. `None` in checkpoints written before pgcdc recorded them; the
    /// first start then lists the sink once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Copies of tables under way (chunked, beside the stream), by table folder. A restart
    /// resumes each at its first chunk that is not durable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, CopyProgress>,
    /// The leaf partitions of each table published through its root, as last read from the
    /// catalog: what a change of them (while running or stopped) is compared with. `None` until
    /// first read (a change before then is not seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, Vec<PartitionLeaf>>>,
    /// Partitioned roots to copy again because their partitions changed: written as soon as the
    /// change is seen, removed when a copy planned after it has ended, so no crash forgets one.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recopy: BTreeSet<String>,
    /// The server's timeline when pgcdc last connected; a change means a promotion or restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    pub updated_at: String,
}

/// How far one chunked copy of a table got. The table's heap is read in ranges of blocks
/// (chunks) planned once, when the copy begins, so a chunk index means the same rows after a
/// restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    /// The commit of the copy's `B` row; `None` while the request waits to begin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begun_at: Option<Lsn>,
    /// The plan, once made: the chunks cover blocks `[0, blocks)`, `chunk_blocks` each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<CopyPlan>,
    /// Every chunk below this index is durable.
    #[serde(default)]
    pub done_below: u32,
    /// Durable chunks at or above `done_below` (chunks finish out of order with several workers).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub done: BTreeSet<u32>,
    /// Rows durable so far.
    #[serde(default)]
    pub rows: u64,
    /// Keys to read again before the copy may end (their values, as the server prints them):
    /// an update during the copy left a TOASTed value of theirs unchanged.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub rereads: BTreeSet<Vec<String>>,
}

/// One leaf partition of a root published through it, as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionLeaf {
    pub oid: u32,
    /// The heap file: a `TRUNCATE` (or a rewrite) gives a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filenode: Option<u32>,
    /// Whether it holds no data at all (zero blocks).
    pub empty: bool,
    /// The transaction that attached it (`pg_inherits.xmin`): a partition detached, changed and
    /// attached again between two reads keeps its oid and heap file, not this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_by: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyPlan {
    pub blocks: u32,
    pub chunk_blocks: u32,
    /// `pg_class.reltuples` when the copy began, for progress and ETA only.
    pub rows_estimated: u64,
    /// The heap file (`pg_relation_filenode`) the blocks are of. A rewrite (`VACUUM FULL`,
    /// `CLUSTER`, `TRUNCATE`, a rewriting `ALTER TABLE`, pg_repack) moves every row into a new
    /// file where block numbers mean other rows, and logical decoding says nothing of it: a chunk
    /// that reads another file than its plan's starts the copy over. `None` in a plan an older
    /// pgcdc made: that copy starts over when resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filenode: Option<u32>,
    /// A partitioned root's leaf partitions, whose heaps hold its rows: the chunks read each
    /// leaf's blocks in turn (`blocks` and `filenode` above are then unused). `None` for a table
    /// with a heap of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<Vec<LeafPlan>>,
}

/// One leaf partition in a root's [`CopyPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafPlan {
    pub schema: String,
    pub name: String,
    pub blocks: u32,
    /// As [`CopyPlan::filenode`], for this leaf's heap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filenode: Option<u32>,
}

/// What one chunk of a [`CopyPlan`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'a> {
    /// The leaf partition whose heap it reads; `None`: the table's own heap.
    pub leaf: Option<&'a LeafPlan>,
    /// Blocks `[start, end)`; `end` is `None` for the last chunk of a heap, which reads to the
    /// end of the relation, whatever it has grown to (rows added since are in the stream anyway).
    pub start: u32,
    pub end: Option<u32>,
    /// The heap file the plan expects the blocks to be of.
    pub filenode: Option<u32>,
    /// A root without leaves: the chunk reads nothing, and is there so the copy has an end.
    pub empty: bool,
}

impl CopyPlan {
    /// At least one chunk (per leaf, for a root), so even an empty table's copy has a place
    /// where it ends.
    pub fn chunks(&self) -> u32 {
        match &self.leaves {
            None => self.heap_chunks(self.blocks),
            Some(leaves) => leaves
                .iter()
                .map(|l| self.heap_chunks(l.blocks))
                .fold(0u32, u32::saturating_add)
                .max(1),
        }
    }

    fn heap_chunks(&self, blocks: u32) -> u32 {
        blocks.div_ceil(self.chunk_blocks.max(1)).max(1)
    }

    /// What chunk `index` reads.
    pub fn span(&self, index: u32) -> Span<'_> {
        let Some(leaves) = &self.leaves else {
            return self.heap_span(None, self.blocks, index, self.filenode);
        };
        let mut first = 0u32;
        for leaf in leaves {
            let chunks = self.heap_chunks(leaf.blocks);
            if index < first.saturating_add(chunks) {
                return self.heap_span(Some(leaf), leaf.blocks, index - first, leaf.filenode);
            }
            first = first.saturating_add(chunks);
        }
        Span {
            leaf: None,
            start: 0,
            end: None,
            filenode: None,
            empty: true,
        }
    }

    fn heap_span<'a>(
        &self,
        leaf: Option<&'a LeafPlan>,
        blocks: u32,
        index: u32,
        filenode: Option<u32>,
    ) -> Span<'a> {
        let start = index.saturating_mul(self.chunk_blocks);
        let end =
            (index + 1 < self.heap_chunks(blocks)).then(|| start.saturating_add(self.chunk_blocks));
        Span {
            leaf,
            start,
            end,
            filenode,
            empty: false,
        }
    }
}

impl CopyProgress {
    pub fn is_done(&self, index: u32) -> bool {
        index < self.done_below || self.done.contains(&index)
    }

    pub fn mark_done(&mut self, index: u32, rows: u64) {
        if self.is_done(index) {
            return;
        }
        self.rows += rows;
        self.done.insert(index);
        while self.done.remove(&self.done_below) {
            self.done_below += 1;
        }
    }

    /// Chunks still to copy, in order; empty until planned.
    pub fn remaining(&self) -> Vec<u32> {
        match &self.plan {
            Some(plan) => (0..plan.chunks()).filter(|&i| !self.is_done(i)).collect(),
            None => Vec::new(),
        }
    }

    pub fn chunks_done(&self) -> u32 {
        self.done_below + self.done.len() as u32
    }

    /// Whether every chunk of the plan is durable or placed (false until planned).
    pub fn all_chunks_done(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| self.chunks_done() >= p.chunks())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "checkpoint {key} is not valid ({message}); it is written only by pgcdc: restore it from a backup, or remove it to start over with a fresh snapshot"
    )]
    Corrupt { key: String, message: String },
}

impl Checkpoint {
    pub fn new(slot: &str, snapshot: SnapshotState) -> Checkpoint {
        Checkpoint {
            slot: slot.to_owned(),
            snapshot,
            snapshot_lsn: None,
            commit_lsn: Lsn::ZERO,
            flush_lsn: Lsn::ZERO,
            tables: None,
            schemas: Some(BTreeMap::new()),
            copies: BTreeMap::new(),
            partitions: None,
            recopy: BTreeSet::new(),
            timeline: None,
            updated_at: String::new(),
        }
    }

    pub fn load(sink: &dyn Sink, slot: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let key = key::checkpoint_key(slot);
        let Some(bytes) = sink.read(&key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt {
                key,
                message: e.to_string(),
            })
    }

    pub fn save(&mut self, sink: &dyn Sink) -> Result<(), CheckpointError> {
        self.updated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // Compact: with thousands of tables the checkpoint is written every window, and its
        // indentation alone was more than half its bytes (3 MiB at 5,000 tables). `jq .` reads it.
        let mut bytes = serde_json::to_vec(self).map_err(|e| CheckpointError::Corrupt {
            key: key::checkpoint_key(&self.slot),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        sink.write(&key::checkpoint_key(&self.slot), &bytes)?;
        Ok(())
    }

    /// Whether the existing rows of `folder` are covered.
    pub fn covers_table(&self, folder: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains_key(folder))
    }

    /// Forgets that the existing rows of `folder` were copied: it left the publication, so if
    /// it joins again, its rows are copied again (those changed meanwhile were never sent).
    pub fn uncover_table(&mut self, folder: &str) {
        if let Some(tables) = self.tables.as_mut() {
            tables.remove(folder);
        }
    }

    /// Records that the existing rows of `folder` were copied (or streamed) as of `lsn`. A later
    /// copy moves it forward (the stream's changes up to it are in that copy), never back.
    pub fn cover_table(&mut self, folder: &str, lsn: Lsn) {
        let covered = self
            .tables
            .get_or_insert_default()
            .entry(folder.to_owned())
            .or_insert(lsn);
        *covered = (*covered).max(lsn);
    }

    /// Records that everything up to the commit at `commit_lsn` (ending at `end_lsn`) is durable.
    pub fn advance(&mut self, commit_lsn: Lsn, flush_lsn: Lsn) {
        self.commit_lsn = self.commit_lsn.max(commit_lsn);
        self.flush_lsn = self.flush_lsn.max(flush_lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LocalSink;

    #[test]
    fn round_trips_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(dir.path(), "s").unwrap();
        assert_eq!(Checkpoint::load(&sink, "s").unwrap(), None);
        let mut ck = Checkpoint::new("s", SnapshotState::Done);
        ck.advance(Lsn::new(10), Lsn::new(12));
        ck.advance(Lsn::new(5), Lsn::new(6));
        ck.save(&sink).unwrap();
        let loaded = Checkpoint::load(&sink, "s").unwrap().unwrap();
        assert_eq!(loaded, ck);
        assert_eq!(loaded.commit_lsn, Lsn::new(10));
        assert_eq!(loaded.flush_lsn, Lsn::new(12));
        let text =
            String::from_utf8(sink.read("_pgcdc/s/checkpoint.json").unwrap().unwrap()).unwrap();
        assert!(text.contains("\"commit_lsn\":\"0/A\""), "{text}");
    }

    #[test]
    fn copy_progress_compacts_chunks_done_out_of_order() {
        let mut p = CopyProgress {
            plan: Some(CopyPlan {
                filenode: Some(16384),
                blocks: 10,
                chunk_blocks: 3,
                rows_estimated: 0,
                leaves: None,
            }),
            ..CopyProgress::default()
        };
        let plan = p.plan.clone().unwrap();
        assert_eq!(plan.chunks(), 4);
        assert_eq!((plan.span(0).start, plan.span(0).end), (0, Some(3)));
        assert_eq!((plan.span(3).start, plan.span(3).end), (9, None));
        assert_eq!(plan.span(3).filenode, Some(16384));
        p.mark_done(2, 5);
        p.mark_done(0, 5);
        assert_eq!((p.done_below, p.done.len()), (1, 1));
        assert_eq!(p.remaining(), vec![1, 3]);
        p.mark_done(1, 5);
        p.mark_done(1, 5);
        assert_eq!((p.done_below, p.done.len(), p.rows), (3, 0, 15));
        assert_eq!(p.chunks_done(), 3);
        let empty = CopyPlan {
            filenode: None,
            blocks: 0,
            chunk_blocks: 8,
            rows_estimated: 0,
            leaves: None,
        };
        assert_eq!(empty.chunks(), 1);
        assert_eq!((empty.span(0).start, empty.span(0).end), (0, None));
    }

    #[test]
    fn a_roots_chunks_read_each_leaf_in_turn_to_its_end() {
        let leaf = |name: &str, blocks, filenode| LeafPlan {
            schema: "public".into(),
            name: name.into(),
            blocks,
            filenode: Some(filenode),
        };
        let plan = CopyPlan {
            blocks: 0,
            chunk_blocks: 4,
            rows_estimated: 0,
            filenode: None,
            leaves: Some(vec![leaf("a", 9, 1), leaf("b", 0, 2), leaf("c", 4, 3)]),
        };
        // a: 3 chunks, b (empty): 1, c: 1.
        assert_eq!(plan.chunks(), 5);
        let seen: Vec<(&str, u32, Option<u32>, Option<u32>)> = (0..5)
            .map(|i| {
                let s = plan.span(i);
                (s.leaf.unwrap().name.as_str(), s.start, s.end, s.filenode)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", 0, Some(4), Some(1)),
                ("a", 4, Some(8), Some(1)),
                ("a", 8, None, Some(1)),
                ("b", 0, None, Some(2)),
                ("c", 0, None, Some(3)),
            ]
        );
        let bare = CopyPlan {
            leaves: Some(Vec::new()),
            ..plan
        };
        assert_eq!(bare.chunks(), 1);
        assert!(bare.span(0).empty);
    }

    #[test]
    fn corrupt_checkpoint_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::open(dir.path(), "s").unwrap();
        sink.write("_pgcdc/s/checkpoint.json", b"{not json")
            .unwrap();
        let err = Checkpoint::load(&sink, "s").unwrap_err().to_string();
        assert!(err.contains("checkpoint.json is not valid"), "{err}");
    }
}

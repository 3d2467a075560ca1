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
    /// The server's timeline when pgcdc last connected; a change means a promotion or restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    pub updated_at: String,
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
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::Corrupt {
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

    /// Records that the existing rows of `folder` were copied (or streamed) as of `lsn`.
    pub fn cover_table(&mut self, folder: &str, lsn: Lsn) {
        self.tables
            .get_or_insert_default()
            .entry(folder.to_owned())
            .or_insert(lsn);
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
        assert!(text.contains("\"commit_lsn\": \"0/A\""), "{text}");
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

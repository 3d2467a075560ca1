//! Why the pipeline stopped, and whether reconnecting may cure it.

use super::journal::JournalError;
use super::keys::KeyLookupError;
use crate::changes::ChangesError;
use crate::checkpoint::CheckpointError;
use crate::lsn::Lsn;
use crate::pgoutput::DecodeError;
use crate::sink::SinkError;
use crate::snapshot::SnapshotError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot decode the pgoutput message at {lsn}: {source}")]
    Decode { lsn: Lsn, source: DecodeError },
    #[error("at {lsn}: {source}")]
    Changes { lsn: Lsn, source: ChangesError },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write spool file in {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error(
        "replication slot {slot} is in use by another process (pid {pid}); stop the other pgcdc or consumer first"
    )]
    SlotInUse { slot: String, pid: i32 },
    #[error(
        "source.failover needs PostgreSQL 17 or later, and the server is {server_version}: set failover = false (a failover then needs `pgcdc slot reset`) or upgrade"
    )]
    FailoverUnsupported { server_version: u32 },
    #[error(
        "replication slot {slot} uses the {plugin} plugin; pgcdc needs a pgoutput slot: drop it or choose another source.slot"
    )]
    WrongPlugin { slot: String, plugin: String },
    #[error(
        "replication slot {slot} does not exist, but checkpoint {key} shows pgcdc streamed from it up to {flush}: changes made since then are lost to the slot. Run `pgcdc slot reset --yes` to recreate it and take a fresh snapshot"
    )]
    SlotLost {
        slot: String,
        key: String,
        flush: Lsn,
    },
    #[error(
        "replication slot {slot} was invalidated by the server ({reason}). pgcdc's last durable position is {durable}; the changes after it cannot be streamed any more. The way back: `pgcdc slot reset --yes` recreates the slot and copies every published table again (B and E rows tell the warehouse that each copy replaces the table's earlier rows); or `pgcdc slot reset --no-snapshot --yes`, start pgcdc, and `pgcdc snapshot <table>` for each table, copied in chunks beside the stream"
    )]
    SlotInvalidated {
        slot: String,
        reason: String,
        durable: Durable,
    },
    #[error(
        "{source} (the same error ended {tries} connections in a row: pgcdc stops instead of retrying for ever; fix the cause and start it again; source.max_retries sets the bound)"
    )]
    GaveUp { tries: u32, source: Box<RunError> },
    #[error(
        "replication slot {slot} has confirmed changes up to {slot_lsn}, but checkpoint {key} shows pgcdc made only up to {checkpoint} durable: the slot was advanced, recreated or failed over behind pgcdc's back, and the changes in between are not in the files. Run `pgcdc slot reset --yes` to recreate the slot and take a fresh snapshot, or set source.on_slot_ahead = \"gap\" to record a gap marker and continue"
    )]
    SlotAhead {
        slot: String,
        key: String,
        slot_lsn: Lsn,
        checkpoint: Lsn,
    },
    #[error("cannot open a SQL connection for the snapshot: {0}")]
    SqlConnect(tokio_postgres::Error),
    #[error(
        "cannot read the primary key of {table} from the catalog (a REPLICA IDENTITY FULL table: pgcdc tells its key changes by it): {source}"
    )]
    PrimaryKey {
        table: String,
        source: KeyLookupError,
    },
}

/// pgcdc's last durable position, where it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable(pub Option<Lsn>);

impl std::fmt::Display for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(lsn) => write!(f, "{lsn}"),
            None => f.write_str("unknown (pgcdc had not read its checkpoint yet)"),
        }
    }
}

impl RunError {
    /// A short, bounded label for `pgcdc_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Source(_) | RunError::SqlConnect(_) | RunError::PrimaryKey { .. } => "source",
            RunError::Decode { .. } | RunError::Changes { .. } => "decode",
            RunError::Sink(_) | RunError::Spool { .. } | RunError::Journal(_) => "sink",
            RunError::Checkpoint(_) => "checkpoint",
            RunError::Snapshot(_) => "snapshot",
            RunError::SlotInUse { .. }
            | RunError::FailoverUnsupported { .. }
            | RunError::WrongPlugin { .. }
            | RunError::SlotLost { .. }
            | RunError::SlotAhead { .. }
            | RunError::SlotInvalidated { .. } => "slot",
            RunError::GaveUp { source, .. } => source.kind(),
        }
    }

    /// Whether reconnecting may cure it (only tried once pgcdc has streamed: a setup that never
    /// worked fails at once, so a typo is not retried forever).
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Source(e) => e.is_transient(),
            // Only a sink that stopped answering; one that refuses stops pgcdc at once.
            RunError::Sink(e) => e.is_retriable(),
            RunError::SqlConnect(_) | RunError::SlotInUse { .. } | RunError::PrimaryKey { .. } => {
                true
            }
            _ => false,
        }
    }

    /// Whether a reconnect that ends in this error counts towards `source.max_retries`. A server
    /// or sink that cannot be reached is waited for as long as it takes (nothing piles up while
    /// pgcdc is not streaming, and the outage shows in the metrics); an error the server gives
    /// on every connection (a slot held by another consumer, a missing publication) would
    /// otherwise loop for ever.
    pub fn counts_as_a_retry(&self) -> bool {
        match self {
            RunError::Source(e) => !e.is_unreachable(),
            // The copies' SQL connections: a busy server (too many clients, starting up, a
            // timeout) is waited out like an unreachable one.
            RunError::Sink(_) | RunError::SqlConnect(_) => false,
            _ => true,
        }
    }

    /// What makes two failures "the same error" for `source.max_retries`: the kind of failure,
    /// not details that change from one try to the next (a pid, a position).
    pub fn repeat_key(&self) -> String {
        match self {
            RunError::SlotInUse { slot, .. } => format!("slot {slot} in use"),
            RunError::Source(SourceError::Server(e)) => format!("server error {}", e.code),
            RunError::GaveUp { source, .. } => source.repeat_key(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `pgcdc_errors_total` starts every kind at 0 from `metrics::ERROR_KINDS`; a kind added here
    /// and not there would appear only with its first error. Read from the source because most
    /// variants wrap errors that cannot be built without a server.
    #[test]
    fn every_kind_starts_at_zero_in_the_metrics() {
        let text = include_str!("error.rs");
        let body = text
            .split_once("pub fn kind(&self)")
            .and_then(|(_, rest)| rest.split_once("pub fn is_transient"))
            .map(|(body, _)| body)
            .unwrap();
        let kinds: Vec<&str> = body.split('"').skip(1).step_by(2).collect();
        assert!(kinds.len() >= 6, "{kinds:?}");
        for kind in kinds {
            assert!(
                crate::metrics::ERROR_KINDS.contains(&kind),
                "RunError kind {kind:?} is not in metrics::ERROR_KINDS"
            );
        }
    }
}

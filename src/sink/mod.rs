//! Where change files end up.
//!
//! A [`Sink`] makes a finished spool file durable under its key and keeps the small bookkeeping
//! objects (the checkpoint). Calls are blocking: they run on the pipeline thread, never on the
//! task that answers the server's keepalives. "Durable" means a reader will find the whole object
//! after a crash of pgcdc or of the machine; `publish` returns only then.

pub mod local;
pub mod retry;
pub mod s3;

use std::path::{Path, PathBuf};

pub use local::LocalSink;
pub use s3::{S3Info, S3Sink};

/// A sink operation that failed, with what was being done to which object where.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {key} in {location}: {message}")]
pub struct SinkError {
    /// What kind of failure it was, as the sink classified it: callers decide on retries and
    /// labels from this, never from the message.
    pub kind: SinkErrorKind,
    pub op: &'static str,
    pub key: String,
    pub location: String,
    pub message: String,
}

/// How a sink operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// The store refused: access denied, no such bucket, bad credentials, a request it will
    /// never accept, or an answer pgcdc cannot use. Trying again does not help.
    Refused,
    /// A failure worth retrying (the label says which: throttled, server, timeout, connection),
    /// given up on because pgcdc is shutting down.
    Retriable(&'static str),
    /// This machine's disk: the spool directory, or a local sink's files.
    Local,
}

impl SinkError {
    /// Whether the same operation may succeed later.
    pub fn is_retriable(&self) -> bool {
        matches!(self.kind, SinkErrorKind::Retriable(_))
    }
}

pub trait Sink: Send + Sync {
    /// Makes the file at `spool` durable as `key` and removes the spool file. Publishing the
    /// same key again replaces the object: keys are deterministic, so a replay overwrites.
    fn publish(&self, spool: &Path, key: &str) -> Result<(), SinkError>;

    /// Every key under the sink root, bookkeeping included.
    fn list(&self) -> Result<Vec<String>, SinkError>;

    fn delete(&self, key: &str) -> Result<(), SinkError>;

    /// Whether an object exists (one request, whatever the sink holds besides).
    fn exists(&self, key: &str) -> Result<bool, SinkError>;

    /// Reads a small object; `None` when it does not exist.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError>;

    /// Writes a small object atomically and durably.
    fn write(&self, key: &str, bytes: &[u8]) -> Result<(), SinkError>;

    /// A directory for files being written; for a local sink it is on the same file system, so
    /// publishing is a rename.
    fn spool_dir(&self) -> PathBuf;

    /// A description for messages (`file:///var/lib/pgcdc/stage`).
    fn location(&self) -> String;
}

//! Closed windows into the sink: each file after the schema file that describes it, on a
//! thread of its own so the next window fills while one uploads.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use super::error::RunError;
use super::journal::{Entry, Journal};
use crate::batch::Sealed;
use crate::metrics;
use crate::schema_file::KnownSchemas;
use crate::sink::Sink;

/// A closed window on its way to the sink.
pub(super) struct Upload {
    pub sealed: Sealed,
    /// Commit times of its transactions, for the commit-to-durable histogram.
    pub window_commits: Vec<i64>,
    pub last_commit_unix_us: i64,
    pub started: Instant,
    /// What the window adds to the copies in the checkpoint, applied once it is durable.
    pub progress: Vec<super::backfill::Progress>,
}

/// The upload queue's ends: closed windows go in (at most one waits behind the one uploading,
/// which bounds the spool), outcomes come back in order.
pub(super) type Outcome = (Upload, Result<Option<Entry>, RunError>);

/// Publishes each window from `jobs` and reports it on `done`, until the queue closes or a
/// window fails (the pipeline then stops and a reconnect starts over from the checkpoint).
pub(super) fn uploader(
    sink: &dyn Sink,
    schemas: &Mutex<KnownSchemas>,
    journal: &Journal,
    jobs: Receiver<Upload>,
    done: UnboundedSender<Outcome>,
) {
    for upload in jobs {
        let result = {
            let mut known = schemas.lock().unwrap_or_else(|e| e.into_inner());
            publish(sink, &upload.sealed, &mut known, journal)
        };
        let failed = result.is_err();
        if done.send((upload, result)).is_err() || failed {
            break;
        }
    }
}

/// A queue for [`uploader`]: one window may wait behind the one uploading.
pub(super) fn queue() -> (SyncSender<Upload>, Receiver<Upload>) {
    std::sync::mpsc::sync_channel::<Upload>(1)
}

/// Publishes the files of a closed window, in order (parts in index order), each after the
/// schema file that describes its columns, once the journal names them all. Returns the journal
/// entry to settle when the checkpoint covers the window (none for a window without files).
pub(super) fn publish(
    sink: &dyn Sink,
    sealed: &Sealed,
    schemas: &mut KnownSchemas,
    journal: &Journal,
) -> Result<Option<Entry>, RunError> {
    if sealed.files.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::with_capacity(sealed.files.len() + 1);
    for file in &sealed.files {
        keys.extend(schemas.missing_key(&file.table, file.first_row));
        keys.push(file.key.as_str().to_owned());
    }
    let entry = journal.announce(sink, keys)?;
    let m = metrics::get();
    for file in &sealed.files {
        schemas.ensure(sink, &file.table, file.first_row)?;
        sink.publish(&file.spool_path, file.key.as_str())?;
        m.files.with_label_values(&[&file.key.folder]).inc();
        m.bytes
            .with_label_values(&[&file.key.folder])
            .inc_by(file.bytes);
        info!(key = %file.key.as_str(), rows = file.rows, bytes = file.bytes, "File written");
    }
    Ok(Some(entry))
}

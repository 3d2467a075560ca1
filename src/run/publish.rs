//! Closed windows into the sink: each file after the schema file that describes it, on a
//! thread of its own so the next window fills while one uploads; a window's tables are
//! uploaded concurrently, so a window of thousands of tables is not thousands of round trips
//! in a row.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use super::error::RunError;
use super::journal::{Entry, Journal};
use crate::batch::{Sealed, SealedFile};
use crate::changes::Table;
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
    pub progress: Vec<super::copy::Progress>,
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

/// Uploads at once when a window has files of many tables. A window touching thousands of
/// tables would otherwise take one round trip per file, one after the other (5,000 files on a
/// local S3 server: tens of seconds). Bounded, because each upload in flight holds a connection
/// and its buffers; a table's own files (its parts) still go one after the other, in order.
const UPLOADS: usize = 16;

/// Publishes the files of a closed window, each after the schema file that describes its
/// columns, once the journal names them all. Tables are published concurrently (at most
/// [`UPLOADS`] at once); one table's files go in order (parts in index order). Returns the
/// journal entry to settle when the checkpoint covers the window (none for a window without
/// files).
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
    let tables = by_table(&sealed.files, schemas);
    let learned = Mutex::new(Vec::new());
    let result = for_each_concurrently(&tables, UPLOADS, |table| {
        publish_table(sink, table, &learned)
    });
    for table in learned.into_inner().unwrap_or_else(|e| e.into_inner()) {
        schemas.learn(table);
    }
    result?;
    Ok(Some(entry))
}

/// One table's files of a window, in order, each with the schema file to write before it (the
/// first file of a shape the sink does not know yet).
struct TableFiles<'a> {
    files: Vec<(&'a SealedFile, Option<&'a SealedFile>)>,
}

/// Groups the files by table folder, keeping their order, and picks the files that bring a new
/// schema (once per shape, as the schema files are named after the first file of a shape).
fn by_table<'a>(files: &'a [SealedFile], schemas: &KnownSchemas) -> Vec<TableFiles<'a>> {
    let mut groups: Vec<TableFiles<'a>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut shapes: HashSet<(&str, String)> = HashSet::new();
    for file in files {
        let folder = file.key.folder.as_str();
        let new_shape = schemas.missing_key(&file.table, file.first_row).is_some()
            && shapes.insert((folder, crate::schema_file::fingerprint(&file.table)));
        let at = *index.entry(folder).or_insert_with(|| {
            groups.push(TableFiles { files: Vec::new() });
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(at) {
            group.files.push((file, new_shape.then_some(file)));
        }
    }
    groups
}

/// Publishes one table's files in order, each after its new schema file if it brings one.
fn publish_table<'a>(
    sink: &dyn Sink,
    table: &TableFiles<'a>,
    learned: &Mutex<Vec<&'a Table>>,
) -> Result<(), RunError> {
    let series = table
        .files
        .first()
        .map(|(file, _)| metrics::get().tables.table(&file.key.folder));
    for (file, schema) in &table.files {
        if let Some(first) = schema {
            let (key, json) = crate::schema_file::render(&first.table, first.first_row);
            sink.write(&key, &json)?;
            info!(key = %key, "Schema file written");
            learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&first.table);
        }
        sink.publish(&file.spool_path, file.key.as_str())?;
        if let Some(series) = &series {
            series.files.inc();
            series.bytes.inc_by(file.bytes);
        }
        info!(key = %file.key.as_str(), rows = file.rows, bytes = file.bytes, "File written");
    }
    Ok(())
}

/// Runs `work` on every item with at most `limit` threads, each taking the next item not yet
/// taken. After a failure no new item is started; the first error is returned once the items
/// in progress end. One item, or a limit of one, runs on the calling thread.
fn for_each_concurrently<T: Sync, E: Send>(
    items: &[T],
    limit: usize,
    work: impl Fn(&T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let threads = limit.min(items.len());
    if threads <= 1 {
        return items.iter().try_for_each(work);
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = work(item) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_and_at_most_limit_at_once() {
        let items: Vec<usize> = (0..200).collect();
        let seen = Mutex::new(Vec::new());
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        for_each_concurrently(&items, 4, |&i| -> Result<(), ()> {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            seen.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, items);
        assert!(peak.load(Ordering::SeqCst) <= 4);
    }

    #[test]
    fn a_failure_stops_new_items_and_is_returned() {
        let items: Vec<usize> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let result = for_each_concurrently(&items, 3, |&i| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 5 {
                Err(format!("item {i}"))
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("item 5".to_owned()));
        assert!(started.load(Ordering::SeqCst) < 1000);
    }

    #[test]
    fn one_item_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        for_each_concurrently(&[1], 8, |_| -> Result<(), ()> {
            assert_eq!(std::thread::current().id(), caller);
            Ok(())
        })
        .unwrap();
    }
}

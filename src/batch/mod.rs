//! Change rows → time/size windows → CSV files in the spool directory.
//!
//! A window opens with its first row and closes at the first commit after `window` has passed
//! or after some file reached `max_file_bytes`; it never closes inside a transaction, so a file
//! holds whole transactions. A transaction that alone outgrows `max_file_bytes` is cut into
//! numbered parts (see [`crate::layout`]); the window then closes at its commit. Each table
//! gets its own file per window, with a header of its current columns; a schema change in the
//! middle of a window also starts a new part, so one file has one header.
//!
//! At most `open_files` of a window's files are open at once ([`pool`]): writing to another
//! parks the least recently written one, so memory is bounded by that setting and not by the
//! number of tables a window touches.
//!
//! No tokio, no network: the clock is passed in, which keeps the window logic testable.

mod pool;
mod spool;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::changes::{ChangeRow, Op, Table, TxnMeta};
use crate::encode as csv;
use crate::layout::FileFormat;
use crate::layout::{ObjectKey, Part};
use crate::lsn::Lsn;
use pool::OpenSet;
use spool::SpoolWriter;

/// A finished file waiting in the spool to be published.
#[derive(Debug)]
pub struct SealedFile {
    pub spool_path: PathBuf,
    /// The columns of the file's header.
    pub table: Arc<Table>,
    /// Commit LSN and `_seq` of the file's first row.
    pub first_row: (Lsn, u64),
    pub key: ObjectKey,
    pub rows: u64,
    pub bytes: u64,
}

/// The outcome of closing a window: its files, and the position that becomes safe to
/// acknowledge once all of them are durable.
#[derive(Debug)]
pub struct Sealed {
    pub files: Vec<SealedFile>,
    /// Commit and end LSN of the last transaction the window covers.
    pub last_commit: Option<(Lsn, Lsn)>,
}

struct TableOutput {
    first: Lsn,
    last: Lsn,
    first_commit_unix_micros: i64,
    finished: Vec<Piece>,
    current: Option<(Arc<Table>, (Lsn, u64), SpoolWriter)>,
}

/// One finished spool file of a table's output in a window.
struct Piece {
    path: PathBuf,
    table: Arc<Table>,
    first_row: (Lsn, u64),
    rows: u64,
    bytes: u64,
}

struct OpenTxn {
    meta: TxnMeta,
    commit_ts: String,
    split: bool,
}

pub struct Batcher {
    spool_dir: PathBuf,
    format: FileFormat,
    max_file_bytes: u64,
    window: Duration,
    opened_at: Option<Instant>,
    tables: BTreeMap<String, TableOutput>,
    txn: Option<OpenTxn>,
    last_commit: Option<(Lsn, Lsn)>,
    seal_at_commit: bool,
    next_file: u64,
    line: Vec<u8>,
    header: Vec<u8>,
    /// The folder name of the table of the last row, so a run of rows of one table does not
    /// build the same string once per row.
    last_folder: Option<(Arc<Table>, String)>,
    /// The tables whose current file is open (not parked).
    open: OpenSet,
    /// The folder last marked in `open`: a run of rows of one table touches it once.
    last_touched: Option<String>,
    /// A parked file had reached `max_file_bytes`: the window closes at the next commit.
    parked_full: bool,
}

impl Batcher {
    /// `open_files` bounds the files open at once (at least one).
    pub fn new(
        spool_dir: PathBuf,
        format: FileFormat,
        max_file_bytes: u64,
        window: Duration,
        open_files: usize,
    ) -> Batcher {
        Batcher {
            spool_dir,
            format,
            max_file_bytes,
            window,
            opened_at: None,
            tables: BTreeMap::new(),
            txn: None,
            last_commit: None,
            seal_at_commit: false,
            next_file: 0,
            line: Vec::with_capacity(4096),
            header: Vec::new(),
            last_folder: None,
            open: OpenSet::new(open_files),
            last_touched: None,
            parked_full: false,
        }
    }

    pub fn begin(&mut self, meta: TxnMeta) {
        self.txn = Some(OpenTxn {
            meta,
            commit_ts: csv::format_commit_ts(meta.commit_ts),
            split: false,
        });
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Whether no row is waiting in the window.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// When the open window must close, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.window)
    }

    /// Whether the window should close now (call between transactions).
    pub fn is_due(&self, now: Instant) -> bool {
        self.seal_at_commit || self.deadline().is_some_and(|d| d <= now)
    }

    /// Writes one row of the open transaction to its table's spool file.
    pub fn push(&mut self, row: &ChangeRow, now: Instant) -> io::Result<()> {
        self.push_encoded(&row.table, row.op, row.seq, now, |line| {
            csv::encode_unchanged_and_fields(line, row);
        })
    }

    /// Like [`Batcher::push`], for a caller that encodes the rest of the line itself: `columns`
    /// appends the `_unchanged` value and then `,field` per column (the snapshot transcodes COPY
    /// text straight into that form).
    pub fn push_encoded(
        &mut self,
        table: &Arc<Table>,
        op: Op,
        seq: u64,
        now: Instant,
        columns: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let Some(txn) = &mut self.txn else {
            return Err(io::Error::other("a row arrived outside a transaction"));
        };
        let meta = txn.meta;
        self.opened_at.get_or_insert(now);
        if !self
            .last_folder
            .as_ref()
            .is_some_and(|(t, _)| Arc::ptr_eq(t, table))
        {
            self.last_folder = Some((table.clone(), table.folder()));
        }
        let folder = self.last_folder.as_ref().map_or("", |(_, f)| f.as_str());
        if !self.tables.contains_key(folder) {
            self.tables.insert(
                folder.to_owned(),
                TableOutput {
                    first: meta.commit_lsn,
                    last: meta.commit_lsn,
                    first_commit_unix_micros: crate::pg_time::to_unix_micros(meta.commit_ts),
                    finished: Vec::new(),
                    current: None,
                },
            );
        }
        let Some(output) = self.tables.get_mut(folder) else {
            return Err(io::Error::other("table output vanished"));
        };
        output.last = output.last.max(meta.commit_lsn);

        // A schema change (new header, or the same names with new types or keys) starts a new
        // part, so each part has one schema document.
        if let Some((current, _, _)) = &output.current
            && !current.same_shape(table)
        {
            roll(output)?;
        }
        self.line.clear();
        csv::encode_metadata(&mut self.line, &meta, &txn.commit_ts, op, seq);
        columns(&mut self.line);
        self.line.push(b'\n');

        // The row goes to an open file, or to a parked file's tail while it has room; a file
        // that is (re)opened or created first makes room in the open set.
        let to_tail = output
            .current
            .as_ref()
            .is_some_and(|(_, _, w)| w.tail_takes(self.line.len()));
        if !to_tail && self.last_touched.as_deref() != Some(folder) {
            if let Some(evicted) = self.open.touch(folder)
                && let Some(output) = self.tables.get_mut(&evicted)
                && let Some((_, _, writer)) = &mut output.current
            {
                writer.park()?;
                self.parked_full |= writer.bytes() >= self.max_file_bytes;
            }
            self.last_touched = Some(folder.to_owned());
        }
        let Some(output) = self.tables.get_mut(folder) else {
            return Err(io::Error::other("table output vanished"));
        };
        if output.current.is_none() {
            let path = self.spool_dir.join(format!(
                "{:016X}-{:06}.{}",
                meta.commit_lsn.as_u64(),
                self.next_file,
                self.format.extension()
            ));
            self.next_file += 1;
            let mut writer = SpoolWriter::create(path, self.format)?;
            self.header.clear();
            csv::encode_header(&mut self.header, table);
            writer.write_header(&self.header)?;
            output.current = Some((table.clone(), (meta.commit_lsn, seq), writer));
        }
        let Some((_, _, writer)) = &mut output.current else {
            return Err(io::Error::other("spool file vanished"));
        };
        writer.write_row(&self.line)?;
        if to_tail {
            self.parked_full |= writer.bytes() >= self.max_file_bytes;
        }

        if writer.input_bytes() >= self.max_file_bytes {
            // Mid-transaction: the file cannot wait for the commit, so it becomes a part. The
            // split counts uncompressed bytes, never the compressed size (which lags behind a
            // compression thread): a replay after a crash then cuts the same parts under the
            // same names, so a name, once used, always holds the same rows (a loader that skips
            // names it has seen, as Snowpipe does, loses nothing).
            roll(output)?;
            txn.split = true;
        }
        Ok(())
    }

    /// Ends the open transaction. Returns whether the window should close now.
    pub fn commit(&mut self, commit_lsn: Lsn, end_lsn: Lsn, now: Instant) -> bool {
        let split = self.txn.take().is_some_and(|t| t.split);
        self.last_commit = Some((commit_lsn, end_lsn));
        // Parked files were measured when parked; only the open ones (a bounded few) can have
        // grown since.
        let full = self.parked_full
            || self.open.keys().any(|folder| {
                self.tables
                    .get(folder)
                    .and_then(|t| t.current.as_ref())
                    .is_some_and(|(_, _, w)| w.bytes() >= self.max_file_bytes)
            });
        self.seal_at_commit |= split || full;
        self.is_due(now)
    }

    /// Closes the window: finishes every spool file and names it. Must be called between
    /// transactions.
    pub fn seal(&mut self) -> io::Result<Sealed> {
        if self.txn.is_some() {
            return Err(io::Error::other(
                "cannot close a window inside a transaction",
            ));
        }
        let mut files = Vec::new();
        for (folder, mut output) in std::mem::take(&mut self.tables) {
            roll(&mut output)?;
            let count = output.finished.len();
            for (i, piece) in output.finished.into_iter().enumerate() {
                let part = (count > 1).then(|| Part {
                    index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                });
                let key = ObjectKey::data(
                    &folder,
                    output.first_commit_unix_micros,
                    output.first,
                    output.last,
                    part,
                    self.format,
                );
                files.push(SealedFile {
                    spool_path: piece.path,
                    table: piece.table,
                    first_row: piece.first_row,
                    key,
                    rows: piece.rows,
                    bytes: piece.bytes,
                });
            }
        }
        self.opened_at = None;
        self.seal_at_commit = false;
        self.open.clear();
        self.last_touched = None;
        self.parked_full = false;
        Ok(Sealed {
            files,
            last_commit: self.last_commit,
        })
    }
}

/// Finishes the table's current file, if any, into its list of parts.
fn roll(output: &mut TableOutput) -> io::Result<()> {
    if let Some((table, first_row, writer)) = output.current.take() {
        let rows = writer.rows();
        let (path, bytes) = writer.finish()?;
        output.finished.push(Piece {
            path,
            table,
            first_row,
            rows,
            bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
impl Batcher {
    /// How many of the window's files are open (not parked).
    fn open_count(&self) -> usize {
        self.tables
            .values()
            .filter(|t| t.current.as_ref().is_some_and(|(_, _, w)| w.is_open()))
            .count()
    }
}

#[cfg(test)]
mod tests;

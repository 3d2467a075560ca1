//! Change rows → time/size windows → CSV files in the spool directory.
//!
//! A window opens with its first row and closes at the first commit after `window` has passed
//! or after some file reached `max_file_bytes`; it never closes inside a transaction, so a file
//! holds whole transactions. A transaction that alone outgrows `max_file_bytes` is cut into
//! numbered parts (see [`crate::layout`]); the window then closes at its commit. Each table
//! gets its own file per window, with a header of its current columns; a schema change in the
//! middle of a window also starts a new part, so one file has one header.
//!
//! No tokio, no network: the clock is passed in, which keeps the window logic testable.

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
    /// The folder name of the table of the last row, so a run of rows of one table does not
    /// build the same string once per row.
    last_folder: Option<(Arc<Table>, String)>,
}

impl Batcher {
    pub fn new(
        spool_dir: PathBuf,
        format: FileFormat,
        max_file_bytes: u64,
        window: Duration,
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
            last_folder: None,
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
        if output.current.is_none() {
            let path = self.spool_dir.join(format!(
                "{:016X}-{:06}.{}",
                meta.commit_lsn.as_u64(),
                self.next_file,
                self.format.extension()
            ));
            self.next_file += 1;
            let mut writer = SpoolWriter::create(path, self.format)?;
            self.line.clear();
            csv::encode_header(&mut self.line, table);
            writer.write_header(&self.line)?;
            output.current = Some((table.clone(), (meta.commit_lsn, seq), writer));
        }
        let Some((_, _, writer)) = &mut output.current else {
            return Err(io::Error::other("spool file vanished"));
        };
        self.line.clear();
        csv::encode_metadata(&mut self.line, &meta, &txn.commit_ts, op, seq);
        columns(&mut self.line);
        self.line.push(b'\n');
        writer.write_row(&self.line)?;

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
        let full = self.tables.values().any(|t| {
            t.current
                .as_ref()
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
mod tests {
    use std::io::Read;

    use bytes::Bytes;

    use super::*;
    use crate::changes::{ColumnInfo, Field, Op};

    fn table(columns: &[&str]) -> Arc<Table> {
        Arc::new(Table {
            schema: "public".into(),
            name: "t".into(),
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: (*c).into(),
                    type_name: "text".into(),
                    type_oid: 25,
                    type_modifier: -1,
                    is_key: false,
                })
                .collect(),
        })
    }

    fn row(table: &Arc<Table>, seq: u64, value: &str) -> ChangeRow {
        ChangeRow {
            table: table.clone(),
            op: Op::Insert,
            seq,
            fields: table
                .columns
                .iter()
                .map(|_| Field::Text(Bytes::copy_from_slice(value.as_bytes())))
                .collect(),
        }
    }

    fn meta(lsn: u64) -> TxnMeta {
        TxnMeta {
            xid: Some(1),
            commit_lsn: Lsn::new(lsn),
            commit_ts: 0,
        }
    }

    fn read(path: &std::path::Path, format: FileFormat) -> String {
        let bytes = std::fs::read(path).unwrap();
        match format {
            FileFormat::Csv => String::from_utf8(bytes).unwrap(),
            FileFormat::CsvGz => {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut s)
                    .unwrap();
                s
            }
        }
    }

    #[test]
    fn window_closes_on_time_at_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batcher::new(
            dir.path().to_owned(),
            FileFormat::CsvGz,
            1 << 20,
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        let t = table(&["id"]);
        assert_eq!(b.deadline(), None);
        b.begin(meta(100));
        b.push(&row(&t, 0, "1"), t0).unwrap();
        assert!(!b.commit(Lsn::new(100), Lsn::new(110), t0 + Duration::from_secs(1)));
        b.begin(meta(200));
        b.push(&row(&t, 0, "2"), t0 + Duration::from_secs(2))
            .unwrap();
        assert!(b.commit(Lsn::new(200), Lsn::new(210), t0 + Duration::from_secs(10)));
        let sealed = b.seal().unwrap();
        assert_eq!(sealed.last_commit, Some((Lsn::new(200), Lsn::new(210))));
        assert_eq!(sealed.files.len(), 1);
        let file = &sealed.files[0];
        assert_eq!(file.rows, 2);
        assert_eq!(
            file.key.as_str(),
            "public.t/dt=2000-01-01/hour=00/0000000000000064-00000000000000C8.csv.gz"
        );
        let text = read(&file.spool_path, FileFormat::CsvGz);
        assert_eq!(
            text,
            "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id\n\
             I,100,0,1,2000-01-01T00:00:00.000000Z,,1\n\
             I,200,0,1,2000-01-01T00:00:00.000000Z,,2\n"
        );
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn parts_are_cut_at_the_same_rows_on_every_replay() {
        // Compressed output lags behind a compression thread, so only a split on uncompressed
        // bytes gives a replay the same parts under the same names. Large enough to leave the
        // inline stage and compress on the thread.
        let cut = |pause: bool| -> Vec<u64> {
            let dir = tempfile::tempdir().unwrap();
            let mut b = Batcher::new(
                dir.path().to_owned(),
                FileFormat::CsvGz,
                512 * 1024,
                Duration::from_secs(3600),
            );
            let now = Instant::now();
            let t = table(&["id", "body"]);
            b.begin(meta(70));
            let mut seed = 7u64;
            for seq in 0..20_000 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                b.push(&row(&t, seq, &format!("{seed:x}{seed:o}")), now)
                    .unwrap();
                if pause && seq % 2_000 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            b.commit(Lsn::new(70), Lsn::new(80), now);
            b.seal().unwrap().files.iter().map(|f| f.rows).collect()
        };
        let first = cut(false);
        assert!(first.len() >= 2, "parts: {first:?}");
        assert_eq!(first, cut(true));
    }

    #[test]
    fn oversized_transaction_is_split_into_parts_and_closes_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batcher::new(
            dir.path().to_owned(),
            FileFormat::Csv,
            1024,
            Duration::from_secs(3600),
        );
        let now = Instant::now();
        let t = table(&["id", "body"]);
        b.begin(meta(50));
        b.push(&row(&t, 0, "small"), now).unwrap();
        assert!(!b.commit(Lsn::new(50), Lsn::new(60), now));
        b.begin(meta(70));
        let payload = "x".repeat(100);
        for seq in 0..40 {
            b.push(&row(&t, seq, &payload), now).unwrap();
        }
        assert!(
            b.commit(Lsn::new(70), Lsn::new(80), now),
            "a split closes the window"
        );
        let sealed = b.seal().unwrap();
        let n = sealed.files.len();
        assert!(n >= 4, "expected several parts, got {n}");
        let mut total_rows = 0;
        for (i, f) in sealed.files.iter().enumerate() {
            assert_eq!(
                f.key.part,
                Some(Part {
                    index: i as u32 + 1,
                    count: n as u32
                })
            );
            assert_eq!((f.key.first, f.key.last), (Lsn::new(50), Lsn::new(70)));
            let text = read(&f.spool_path, FileFormat::Csv);
            assert!(text.starts_with("_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,body\n"));
            total_rows += f.rows;
        }
        assert_eq!(total_rows, 41);
    }

    #[test]
    fn schema_change_starts_a_new_part_with_the_new_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batcher::new(
            dir.path().to_owned(),
            FileFormat::Csv,
            1 << 20,
            Duration::from_secs(60),
        );
        let now = Instant::now();
        let v1 = table(&["id"]);
        let v2 = table(&["id", "added"]);
        b.begin(meta(10));
        b.push(&row(&v1, 0, "1"), now).unwrap();
        b.commit(Lsn::new(10), Lsn::new(11), now);
        b.begin(meta(20));
        b.push(&row(&v2, 0, "2"), now).unwrap();
        b.commit(Lsn::new(20), Lsn::new(21), now);
        let sealed = b.seal().unwrap();
        assert_eq!(sealed.files.len(), 2);
        let second = read(&sealed.files[1].spool_path, FileFormat::Csv);
        assert!(second.starts_with("_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,added\n"));
    }

    #[test]
    fn type_change_alone_starts_a_new_part_described_by_the_new_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batcher::new(
            dir.path().to_owned(),
            FileFormat::Csv,
            1 << 20,
            Duration::from_secs(60),
        );
        let now = Instant::now();
        let int4 = table(&["id"]);
        let mut retyped = (*int4).clone();
        retyped.columns[0].type_name = "bigint".into();
        retyped.columns[0].type_oid = 20;
        let int8 = Arc::new(retyped);
        b.begin(meta(10));
        b.push(&row(&int4, 0, "1"), now).unwrap();
        b.commit(Lsn::new(10), Lsn::new(11), now);
        b.begin(meta(20));
        b.push(&row(&int8, 0, "20"), now).unwrap();
        b.commit(Lsn::new(20), Lsn::new(21), now);
        let sealed = b.seal().unwrap();
        assert_eq!(sealed.files.len(), 2, "one part per shape");
        assert!(Arc::ptr_eq(&sealed.files[0].table, &int4));
        assert!(Arc::ptr_eq(&sealed.files[1].table, &int8));
        assert_eq!(sealed.files[1].first_row, (Lsn::new(20), 0));
    }

    #[test]
    fn empty_transactions_advance_the_last_commit_without_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batcher::new(
            dir.path().to_owned(),
            FileFormat::Csv,
            1 << 20,
            Duration::from_secs(60),
        );
        let now = Instant::now();
        b.begin(meta(5));
        assert!(b.in_transaction());
        assert!(b.seal().is_err(), "no window closes inside a transaction");
        assert!(!b.commit(Lsn::new(5), Lsn::new(6), now));
        assert!(b.is_empty());
        let sealed = b.seal().unwrap();
        assert!(sealed.files.is_empty());
        assert_eq!(sealed.last_commit, Some((Lsn::new(5), Lsn::new(6))));
    }
}

//! Reading the change files pgcdc wrote and replaying them into a table state.
//!
//! Layout (DESIGN.md): `<sink>/<schema>.<table>/dt=YYYY-MM-DD/hour=HH/<first>-<last>.csv[.gz]`,
//! large transactions as `<first>-<last>.part-NNNN-of-NNNN.csv[.gz]`; bookkeeping under
//! `<sink>/_pgcdc/` is not change data. Every file starts with a header line:
//! `_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged` and then the table's columns, so columns are
//! matched by name (a later ALTER TABLE gives later files a new header).
//!
//! NULL and the empty string must stay distinct: NULL is an *unquoted* empty field, the empty
//! string is `""`. General CSV readers (the `csv` crate, Python's `csv`) cannot tell them apart,
//! so [`parse_csv`] is a small RFC 4180 reader that can.
//!
//! [`replay`] applies the rows in `(_commit_lsn, _seq)` order, compared as numbers:
//! I (insert) / R (snapshot read) / U (update, new row) upsert by key, carrying forward the
//! columns listed in `_unchanged` (also across a key change: a D, then at the next `_seq` of the
//! same commit the U of the new key); D (delete, key columns only) removes the key; T (truncate)
//! clears the table. [`table_state`] reads the same shape from PostgreSQL for comparison; the
//! waits that compare the two are [`Fixture`](super::fixture::Fixture)'s.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use super::cluster::pg_error;

/// Column name -> value (`None` is NULL).
pub type Row = BTreeMap<String, Option<String>>;
/// A row's key column values, in the order of `key_columns`.
pub type Key = Vec<Option<String>>;
/// Key -> row.
pub type TableState = BTreeMap<Key, Row>;

/// The metadata columns every change file starts with, in order.
pub const METADATA_COLUMNS: [&str; 6] = [
    "_op",
    "_commit_lsn",
    "_seq",
    "_xid",
    "_commit_ts",
    "_unchanged",
];

/// The sink's bookkeeping directory (checkpoints, schemas); never change data.
pub const BOOKKEEPING_DIR: &str = "_pgcdc";

/// One data line of a change file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRow {
    /// The file it came from, and its position there (1 = first line after the header).
    pub file: PathBuf,
    pub record: usize,
    /// `I`, `U`, `D`, `T` or `R`.
    pub op: char,
    pub commit_lsn: u64,
    pub seq: u64,
    pub xid: Option<String>,
    pub commit_ts: Option<String>,
    /// Columns whose value was not sent (unchanged TOAST): keep the previous value.
    pub unchanged: Vec<String>,
    /// The table's columns in this file's header order.
    pub columns: Vec<String>,
    /// The table's columns by name.
    pub values: Row,
}

impl ChangeRow {
    /// The value of `column` (`None` for NULL); panics if the file has no such column.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.values
            .get(column)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no column {column:?} (columns: {:?})",
                    self.file.display(),
                    self.columns
                )
            })
            .as_deref()
    }
}

/// A change file's name, split into its parts (see [`parse_file_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileName {
    /// `<schema>.<table>`
    pub table: String,
    /// `YYYY-MM-DD` and `HH` from the `dt=` and `hour=` directories.
    pub dt: String,
    pub hour: String,
    /// The LSN range as written in the name.
    pub first: String,
    pub last: String,
    /// `(n, of)` for the parts of a large transaction.
    pub part: Option<(u32, u32)>,
    pub gzip: bool,
}

/// Parses `<schema>.<table>/dt=YYYY-MM-DD/hour=HH/<first>-<last>[.part-NNNN-of-NNNN].csv[.gz]`
/// (a path relative to the sink). `Err` says what does not match.
pub fn parse_file_name(relative: &Path) -> Result<FileName, String> {
    let parts: Vec<&str> = relative
        .iter()
        .map(|p| p.to_str().ok_or("path is not UTF-8"))
        .collect::<Result<_, _>>()?;
    let [table, dt, hour, name] = parts[..] else {
        return Err(format!(
            "{}: expected <table>/dt=../hour=../<file>",
            relative.display()
        ));
    };
    let bad = |what: &str| format!("{}: {what}", relative.display());
    let dt = dt
        .strip_prefix("dt=")
        .ok_or_else(|| bad("no dt= directory"))?;
    let dt_ok = dt.len() == 10
        && dt.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !dt_ok {
        return Err(bad("dt= is not YYYY-MM-DD"));
    }
    let hour = hour
        .strip_prefix("hour=")
        .ok_or_else(|| bad("no hour= directory"))?;
    if hour.len() != 2 || !hour.bytes().all(|b| b.is_ascii_digit()) || hour > "23" {
        return Err(bad("hour= is not HH"));
    }
    let (stem, gzip) = match name.strip_suffix(".csv.gz") {
        Some(stem) => (stem, true),
        None => (
            name.strip_suffix(".csv")
                .ok_or_else(|| bad("not .csv or .csv.gz"))?,
            false,
        ),
    };
    let (range, part) = match stem.split_once(".part-") {
        Some((range, part)) => {
            let (n, of) = part
                .split_once("-of-")
                .ok_or_else(|| bad("part is not NNNN-of-NNNN"))?;
            let number = |s: &str| {
                (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
                    .ok_or_else(|| bad("part numbers are not 4 digits"))
            };
            (range, Some((number(n)?, number(of)?)))
        }
        None => (stem, None),
    };
    let (first, last) = range
        .split_once('-')
        .ok_or_else(|| bad("no <first>-<last> range"))?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(first) || !hex(last) {
        return Err(bad("LSN range is not hexadecimal"));
    }
    Ok(FileName {
        table: table.to_owned(),
        dt: dt.to_owned(),
        hour: hour.to_owned(),
        first: first.to_owned(),
        last: last.to_owned(),
        part,
        gzip,
    })
}

/// Every `.csv` / `.csv.gz` file under `<sink>/<table>/`, sorted by path (empty if the table
/// has no directory yet). Hidden files (spool/temporary names starting with `.`) are skipped.
pub fn change_files(sink: &Path, table: &str) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == BOOKKEEPING_DIR {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if kind.is_dir() {
                walk(&path, out)?;
            } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
                out.push(path);
            }
        }
        Ok(())
    }
    let dir = sink.join(table);
    let mut files = Vec::new();
    if dir.is_dir() {
        walk(&dir, &mut files)?;
    }
    files.sort();
    Ok(files)
}

/// All change rows of `table` (`"public.t"`) under `sink`, file by file in path order. Panics
/// with the file and line on anything malformed.
pub fn read_change_files(sink: &Path, table: &str) -> Vec<ChangeRow> {
    try_read_change_files(sink, table).unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_change_files`] returning the problem instead of panicking (for polling loops).
pub fn try_read_change_files(sink: &Path, table: &str) -> Result<Vec<ChangeRow>, String> {
    let mut rows = Vec::new();
    for file in change_files(sink, table)? {
        let text = read_text(&file)?;
        rows.extend(parse_change_file(&file, &text)?);
    }
    Ok(rows)
}

/// A file's text, gunzipped when it ends in `.gz` (multi-member gzip is fine).
pub fn read_text(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let bytes = if file.extension().is_some_and(|ext| ext == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: not valid gzip: {e}", file.display()))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", file.display()))
}

/// The change rows of one file's text (header line first). `file` only labels errors and rows.
pub fn parse_change_file(file: &Path, text: &str) -> Result<Vec<ChangeRow>, String> {
    let at = |record: usize, what: String| format!("{} record {record}: {what}", file.display());
    let mut records = parse_csv(text)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .into_iter();
    let header: Vec<String> = records
        .next()
        .ok_or_else(|| format!("{}: empty file, no header line", file.display()))?
        .into_iter()
        .map(|name| name.ok_or_else(|| format!("{}: empty column name in header", file.display())))
        .collect::<Result<_, _>>()?;
    if header.len() < METADATA_COLUMNS.len() || header[..METADATA_COLUMNS.len()] != METADATA_COLUMNS
    {
        return Err(format!(
            "{}: header must start with {METADATA_COLUMNS:?}, got {header:?}",
            file.display()
        ));
    }
    let columns = header[METADATA_COLUMNS.len()..].to_vec();
    let mut seen = HashSet::new();
    if let Some(dup) = header.iter().find(|name| !seen.insert(name.as_str())) {
        return Err(format!(
            "{}: column {dup:?} appears twice in the header",
            file.display()
        ));
    }

    let mut rows = Vec::new();
    for (index, fields) in records.enumerate() {
        let record = index + 1;
        if fields.len() != header.len() {
            return Err(at(
                record,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let mut fields = fields.into_iter();
        let mut meta = fields.by_ref().take(METADATA_COLUMNS.len());
        let mut next = || meta.next().flatten();
        let (op, lsn, seq, xid, commit_ts, unchanged) =
            (next(), next(), next(), next(), next(), next());
        let op = match op.as_deref() {
            Some(op @ ("I" | "U" | "D" | "T" | "R" | "M" | "B" | "E")) => {
                op.chars().next().unwrap_or('?')
            }
            other => return Err(at(record, format!("_op {other:?} is not one of I U D T R"))),
        };
        let number = |name: &str, value: Option<String>| {
            value
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| at(record, format!("{name} {value:?} is not a decimal integer")))
        };
        let commit_lsn = number("_commit_lsn", lsn)?;
        let seq = number("_seq", seq)?;
        let unchanged = match unchanged.as_deref() {
            None | Some("") => Vec::new(),
            Some(json) => serde_json::from_str::<Vec<String>>(json).map_err(|e| {
                at(
                    record,
                    format!("_unchanged {json:?} is not a JSON array of names: {e}"),
                )
            })?,
        };
        let values = columns.iter().cloned().zip(fields).collect();
        rows.push(ChangeRow {
            file: file.to_owned(),
            record,
            op,
            commit_lsn,
            seq,
            xid,
            commit_ts,
            unchanged,
            columns: columns.clone(),
            values,
        });
    }
    Ok(rows)
}

/// Parses RFC 4180 CSV, keeping NULL and the empty string apart: an unquoted empty field is
/// `None`, a quoted one (`""`) is `Some("")`. Quoted fields may hold `""` (a quote), commas, CR
/// and LF; records end with LF, CRLF or CR. A final line terminator does not start a new record.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut records = Vec::new();
    while i < bytes.len() {
        let mut record = Vec::new();
        loop {
            if bytes.get(i) == Some(&b'"') {
                let opened = line;
                i += 1;
                let start = i;
                let mut value = String::new();
                // Copy runs between quotes as &str slices: every byte we split at is ASCII, so
                // the slices stay on UTF-8 boundaries.
                let mut run = start;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(format!(
                                "line {opened}: quoted field is not closed before the end"
                            ));
                        }
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                            value.push_str(&text[run..=i]);
                            i += 2;
                            run = i;
                        }
                        Some(b'"') => {
                            value.push_str(&text[run..i]);
                            i += 1;
                            break;
                        }
                        Some(b'\n') => {
                            line += 1;
                            i += 1;
                        }
                        Some(_) => i += 1,
                    }
                }
                record.push(Some(value));
            } else {
                let start = i;
                while let Some(&b) = bytes.get(i) {
                    match b {
                        b',' | b'\n' | b'\r' => break,
                        b'"' => {
                            return Err(format!("line {line}: quote inside an unquoted field"));
                        }
                        _ => i += 1,
                    }
                }
                let value = &text[start..i];
                record.push((!value.is_empty()).then(|| value.to_owned()));
            }
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'\r') => {
                    i += 1;
                    if bytes.get(i) == Some(&b'\n') {
                        i += 1;
                    }
                    line += 1;
                    break;
                }
                Some(b'\n') => {
                    i += 1;
                    line += 1;
                    break;
                }
                None => break,
                Some(&other) => {
                    return Err(format!(
                        "line {line}: {:?} after a closing quote (expected , or end of line)",
                        char::from(other)
                    ));
                }
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// How many rows repeat a `(_commit_lsn, _seq)` seen before (0 when there are no duplicates).
pub fn duplicate_keys(rows: &[ChangeRow]) -> usize {
    let mut seen = HashSet::new();
    rows.iter()
        .filter(|row| !seen.insert((row.commit_lsn, row.seq)))
        .count()
}

/// Rebuilds the table from its change rows (see the module docs for the rules).
///
/// An update whose `_unchanged` column has no previous value (its insert is not in the files)
/// leaves that column out of the row, so the comparison with [`table_state`] shows it.
pub fn replay(rows: &[ChangeRow], key_columns: &[&str]) -> TableState {
    let mut ordered: Vec<&ChangeRow> = rows.iter().collect();
    // Stable: exact duplicates (a re-delivered file) stay adjacent and apply idempotently.
    ordered.sort_by_key(|row| (row.commit_lsn, row.seq));
    let mut state = TableState::new();
    // The row the last delete removed, with its position: a key change is written as a delete of
    // the old key and, at the next `_seq` of the same commit, the update of the new key, whose
    // unchanged columns carry over from the old key's row.
    let mut deleted: Option<(u64, u64, Row)> = None;
    // A copy's `B` row, once an `E` row closes it, replaces every earlier row of the table.
    let mut begun = None;
    let mut reset = None;
    for row in &ordered {
        match row.op {
            'B' => begun = Some((row.commit_lsn, row.seq)),
            'E' => reset = begun.or(reset),
            _ => {}
        }
    }
    for row in ordered {
        if reset.is_some_and(|r| (row.commit_lsn, row.seq) <= r) {
            continue;
        }
        match row.op {
            'B' | 'E' => {}
            'T' => state.clear(),
            'D' => {
                deleted = state
                    .remove(&key_of(row, key_columns))
                    .map(|old| (row.commit_lsn, row.seq, old));
            }
            _ => {
                let key = key_of(row, key_columns);
                let previous = state.remove(&key).or_else(|| match deleted.take() {
                    Some((lsn, seq, old))
                        if row.op == 'U' && lsn == row.commit_lsn && seq + 1 == row.seq =>
                    {
                        Some(old)
                    }
                    _ => None,
                });
                let mut new = Row::new();
                for column in &row.columns {
                    if row.unchanged.contains(column) {
                        if let Some(value) = previous.as_ref().and_then(|p| p.get(column)) {
                            new.insert(column.clone(), value.clone());
                        }
                    } else {
                        new.insert(column.clone(), row.values[column].clone());
                    }
                }
                state.insert(key, new);
            }
        }
    }
    state
}

fn key_of(row: &ChangeRow, key_columns: &[&str]) -> Key {
    key_columns
        .iter()
        .map(|column| {
            row.values
                .get(*column)
                .unwrap_or_else(|| {
                    panic!(
                        "{} record {}: no key column {column:?} (columns: {:?})",
                        row.file.display(),
                        row.record,
                        row.columns
                    )
                })
                .clone()
        })
        .collect()
}

/// The current contents of `table` (`"public.t"`, used verbatim in SQL) keyed like [`replay`]:
/// every column selected as `::text`, so values compare with what the files carry.
/// SQL giving a column's value as the README says pgcdc writes it: timestamps in ISO 8601 (with
/// `T`, and for `timestamptz` in UTC with a `+00:00` offset), money as a plain decimal, everything
/// else as PostgreSQL prints it.
fn file_form(column: &str, type_name: &str) -> String {
    match type_name {
        "timestamp with time zone" => format!(
            "case when isfinite({column}) then replace(({column} at time zone 'UTC')::text, ' ', 'T') || '+00:00' else {column}::text end"
        ),
        "timestamp without time zone" => format!(
            "case when isfinite({column}) then replace({column}::text, ' ', 'T') else {column}::text end"
        ),
        "money" => format!("{column}::numeric::text"),
        _ => format!("{column}::text"),
    }
}

pub async fn table_state(client: &Client, table: &str, key_columns: &[&str]) -> TableState {
    projection_state(client, table, key_columns, None, None).await
}

/// Like [`table_state`] for what a publication publishes of `table`: only `columns` (all when
/// `None`) of the rows `filter` (an SQL condition) admits.
pub async fn projection_state(
    client: &Client,
    table: &str,
    key_columns: &[&str],
    columns: Option<&[&str]>,
    filter: Option<&str>,
) -> TableState {
    let described: Vec<(String, String)> = client
        .query(
            "select attname::text, format_type(atttypid, null) from pg_attribute \
             where attrelid = $1::text::regclass and attnum > 0 and not attisdropped \
             order by attnum",
            &[&table],
        )
        .await
        .unwrap_or_else(|e| panic!("reading the columns of {table}: {}", pg_error(&e)))
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .filter(|(name, _): &(String, String)| columns.is_none_or(|c| c.contains(&name.as_str())))
        .collect();
    let columns: Vec<String> = described.iter().map(|(c, _)| c.clone()).collect();
    let select: Vec<String> = described
        .iter()
        .map(|(c, t)| file_form(&format!("\"{}\"", c.replace('"', "\"\"")), t))
        .collect();
    let filter = filter.map_or(String::new(), |f| format!(" where {f}"));
    let sql = format!("select {} from {table}{filter}", select.join(", "));
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
    let mut state = TableState::new();
    for row in rows {
        let values: Row = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), row.get::<_, Option<String>>(i)))
            .collect();
        let key = key_columns
            .iter()
            .map(|k| {
                values
                    .get(*k)
                    .unwrap_or_else(|| panic!("{table} has no column {k:?}"))
                    .clone()
            })
            .collect();
        state.insert(key, values);
    }
    state
}

/// How two table states differ, key by key.
#[derive(Debug, Default)]
pub struct StateDiff<'a> {
    /// Keys only in the expected state.
    pub missing: Vec<(&'a Key, &'a Row)>,
    /// Keys only in the actual state.
    pub extra: Vec<(&'a Key, &'a Row)>,
    /// Keys in both, with other values: (key, expected, actual).
    pub wrong: Vec<(&'a Key, &'a Row, &'a Row)>,
}

impl StateDiff<'_> {
    pub fn count(&self) -> usize {
        self.missing.len() + self.extra.len() + self.wrong.len()
    }
}

pub fn diff_states<'a>(expected: &'a TableState, actual: &'a TableState) -> StateDiff<'a> {
    let mut diff = StateDiff::default();
    for (key, row) in expected {
        match actual.get(key) {
            None => diff.missing.push((key, row)),
            Some(other) if other != row => diff.wrong.push((key, row, other)),
            Some(_) => {}
        }
    }
    diff.extra = actual
        .iter()
        .filter(|(key, _)| !expected.contains_key(*key))
        .collect();
    diff
}

/// `None` when the states are equal, else a readable list of the first differences:
/// keys only in `expected`, only in `actual`, and columns that differ.
pub fn describe_diff(expected: &TableState, actual: &TableState) -> Option<String> {
    const SHOWN: usize = 10;
    let diff = diff_states(expected, actual);
    if diff.count() == 0 {
        return None;
    }
    let missing = diff
        .missing
        .iter()
        .map(|(key, row)| format!("missing key {key:?}: expected {row:?}"));
    let wrong = diff.wrong.iter().map(|(key, row, other)| {
        let mut columns = String::new();
        let names: std::collections::BTreeSet<&String> = row.keys().chain(other.keys()).collect();
        for name in names {
            let (want, got) = (row.get(name), other.get(name));
            if want != got {
                let _ = write!(
                    columns,
                    " {name}: expected {}, got {};",
                    show(want),
                    show(got)
                );
            }
        }
        format!("key {key:?} differs:{columns}")
    });
    let extra = diff
        .extra
        .iter()
        .map(|(key, row)| format!("unexpected key {key:?}: {row:?}"));
    let lines: Vec<String> = missing.chain(wrong).chain(extra).take(SHOWN).collect();
    Some(format!(
        "{} keys differ ({} expected rows, {} actual); first {}:\n  {}",
        diff.count(),
        expected.len(),
        actual.len(),
        lines.len(),
        lines.join("\n  ")
    ))
}

/// A value for diff messages: `NULL`, a quoted string, or `<no column>`.
fn show(value: Option<&Option<String>>) -> String {
    match value {
        None => "<no column>".to_owned(),
        Some(None) => "NULL".to_owned(),
        Some(Some(text)) => format!("{text:?}"),
    }
}

//! Every name pgcdc gives an object in the sink, in one place, and what the names say about
//! durability: data files and part sets, schema files, and the bookkeeping under `_pgcdc/`
//! (checkpoint, gap markers, the write probe). Pure.
//!
//! Keys are deterministic so that a replayed file overwrites instead of adding a copy:
//! `<schema>.<table>/dt=YYYY-MM-DD/hour=HH/<first>-<last>.<ext>`, where `<first>`/`<last>` are the
//! first and last commit LSN in the file as 16 upper-case hex digits (lexical order is LSN order)
//! and the date and hour are the UTC time of the first commit. When one table's output in a
//! window is cut into several files (a transaction larger than `max_file_bytes`, or a schema
//! change), every piece is named `<first>-<last>.part-NNNN-of-NNNN.<ext>` with the table's range
//! for the whole window, so the set is complete exactly when all of its parts exist.
//!
//! At start-up pgcdc reads back the names in the sink to learn, per table, the last commit that
//! is already durable there ([`durable_positions`]): windows are cut by time, so a replay after a
//! crash can cut differently, and only the files themselves say what was written.

use std::collections::BTreeMap;

use crate::lsn::Lsn;

/// How data files are written: plain or gzip CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    CsvGz,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::CsvGz => "csv.gz",
        }
    }
}

/// Where bookkeeping lives, beside the table folders: `_pgcdc/<slot>/...`.
pub const BOOKKEEPING_DIR: &str = "_pgcdc";

/// The folder of a table's schema files, under its table folder.
pub const SCHEMA_DIR: &str = "_schema";

/// `<schema>.<table>/_schema/<version>.json`.
pub fn schema_key(folder: &str, version: &str) -> String {
    format!("{folder}/{SCHEMA_DIR}/{version}.json")
}

/// The table folder and version of a schema file's key.
pub fn parse_schema_key(key: &str) -> Option<(&str, &str)> {
    let (folder, file) = key.split_once(&format!("/{SCHEMA_DIR}/"))?;
    Some((folder, file.strip_suffix(".json")?))
}

/// `_pgcdc/<slot>/gaps/<time>-<action>.json`: a marker that changes may be missing.
pub fn gap_marker_key(slot: &str, time: &str, action: &str) -> String {
    format!("{BOOKKEEPING_DIR}/{slot}/gaps/{time}-{action}.json")
}

/// `_pgcdc/<slot>/.write-probe`: what an S3 sink writes and deletes to test its access.
pub fn write_probe_key(slot: &str) -> String {
    format!("{BOOKKEEPING_DIR}/{slot}/.write-probe")
}

/// `_pgcdc/<slot>/journal.json`: the objects pgcdc is about to write that no checkpoint covers
/// yet (see `run::journal`).
pub fn journal_key(slot: &str) -> String {
    format!("{BOOKKEEPING_DIR}/{slot}/journal.json")
}

pub fn checkpoint_key(slot: &str) -> String {
    format!("{BOOKKEEPING_DIR}/{slot}/checkpoint.json")
}

/// The numbered piece of a table's output in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

/// The name of one change file, relative to the sink root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub folder: String,
    pub first: Lsn,
    pub last: Lsn,
    pub part: Option<Part>,
    key: String,
}

impl ObjectKey {
    /// `first_commit_unix_micros` is the wall-clock time of the first commit, which picks the
    /// `dt=`/`hour=` partition.
    pub fn data(
        folder: &str,
        first_commit_unix_micros: i64,
        first: Lsn,
        last: Lsn,
        part: Option<Part>,
        format: FileFormat,
    ) -> ObjectKey {
        let partition = chrono::DateTime::from_timestamp_micros(first_commit_unix_micros)
            .map(|t| t.format("dt=%Y-%m-%d/hour=%H").to_string())
            .unwrap_or_else(|| "dt=1970-01-01/hour=00".to_owned());
        let part_suffix = part
            .map(|p| format!(".part-{:04}-of-{:04}", p.index, p.count))
            .unwrap_or_default();
        let key = format!(
            "{folder}/{partition}/{}-{}{part_suffix}.{}",
            first.to_file_hex(),
            last.to_file_hex(),
            format.extension()
        );
        ObjectKey {
            folder: folder.to_owned(),
            first,
            last,
            part,
            key,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Reads a key written by [`ObjectKey::data`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let mut segments = key.rsplitn(4, '/');
        let file = segments.next()?;
        let hour = segments.next()?;
        let dt = segments.next()?;
        let folder = segments.next()?;
        if !hour.starts_with("hour=")
            || !dt.starts_with("dt=")
            || folder.starts_with(BOOKKEEPING_DIR)
        {
            return None;
        }
        let stem = file
            .strip_suffix(".csv.gz")
            .or_else(|| file.strip_suffix(".csv"))?;
        let (range, part) = match stem.split_once(".part-") {
            Some((range, part)) => {
                let (index, count) = part.split_once("-of-")?;
                let part = Part {
                    index: index.parse().ok()?,
                    count: count.parse().ok()?,
                };
                if part.index == 0 || part.index > part.count {
                    return None;
                }
                (range, Some(part))
            }
            None => (stem, None),
        };
        let (first, last) = range.split_once('-')?;
        Some(ObjectKey {
            folder: folder.to_owned(),
            first: Lsn::from_file_hex(first)?,
            last: Lsn::from_file_hex(last)?,
            part,
            key: key.to_owned(),
        })
    }
}

/// What the names in a sink say: per table folder, the last commit LSN whose rows are all
/// durable, and the keys of part sets a crash left incomplete (their rows will be sent again,
/// so they must go before new files are written).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub positions: BTreeMap<String, Lsn>,
    pub incomplete: Vec<String>,
}

pub fn durable_positions<'a>(keys: impl IntoIterator<Item = &'a str>) -> Durable {
    let mut durable = Durable::default();
    // (folder, first, last, count) -> parts seen
    let mut part_sets: BTreeMap<(String, Lsn, Lsn, u32), Vec<ObjectKey>> = BTreeMap::new();
    for key in keys {
        let Some(parsed) = ObjectKey::parse(key) else {
            continue;
        };
        match parsed.part {
            None => bump(&mut durable.positions, &parsed.folder, parsed.last),
            Some(part) => part_sets
                .entry((parsed.folder.clone(), parsed.first, parsed.last, part.count))
                .or_default()
                .push(parsed),
        }
    }
    for ((folder, _, last, count), parts) in part_sets {
        let mut indexes: Vec<u32> = parts
            .iter()
            .filter_map(|p| p.part.map(|p| p.index))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        if indexes.len() == count as usize {
            bump(&mut durable.positions, &folder, last);
        } else {
            durable.incomplete.extend(parts.into_iter().map(|p| p.key));
        }
    }
    durable
}

fn bump(positions: &mut BTreeMap<String, Lsn>, folder: &str, lsn: Lsn) {
    let entry = positions.entry(folder.to_owned()).or_insert(lsn);
    *entry = (*entry).max(lsn);
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn data_keys_are_partitioned_by_utc_hour() {
        // 2024-03-05T17:xx UTC
        let micros = 1_709_658_000_000_000 + 5 * 60 * 1_000_000;
        let key = ObjectKey::data(
            "public.ecommerce_sales",
            micros,
            Lsn::new(0x16_B374_D848),
            Lsn::new(0x16_B374_F000),
            None,
            FileFormat::CsvGz,
        );
        assert_eq!(
            key.as_str(),
            "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B374F000.csv.gz"
        );
        assert_eq!(ObjectKey::parse(key.as_str()), Some(key));
    }

    #[test]
    fn parts_round_trip() {
        let key = ObjectKey::data(
            "s.t",
            HOUR,
            Lsn::new(1),
            Lsn::new(2),
            Some(Part { index: 2, count: 3 }),
            FileFormat::Csv,
        );
        assert_eq!(
            key.as_str(),
            "s.t/dt=1970-01-01/hour=01/0000000000000001-0000000000000002.part-0002-of-0003.csv"
        );
        assert_eq!(ObjectKey::parse(key.as_str()), Some(key));
    }

    #[test]
    fn foreign_names_are_ignored() {
        for key in [
            "_pgcdc/pgcdc/checkpoint.json",
            "s.t/dt=2024-01-01/hour=00/notes.txt",
            "s.t/dt=2024-01-01/hour=00/00000001-00000002.csv",
            "s.t/dt=2024-01-01/hour=00/0000000000000001-0000000000000002.part-0004-of-0003.csv",
            "loose.csv",
        ] {
            assert_eq!(ObjectKey::parse(key), None, "{key}");
        }
    }

    #[test]
    fn durable_positions_need_complete_part_sets() {
        let key = |folder: &str, first: u64, last: u64, part: Option<(u32, u32)>| {
            ObjectKey::data(
                folder,
                0,
                Lsn::new(first),
                Lsn::new(last),
                part.map(|(index, count)| Part { index, count }),
                FileFormat::CsvGz,
            )
            .as_str()
            .to_owned()
        };
        let keys = [
            key("a.t", 1, 5, None),
            key("a.t", 6, 9, Some((1, 2))),
            key("a.t", 6, 9, Some((2, 2))),
            key("b.t", 2, 3, None),
            key("b.t", 4, 20, Some((1, 3))),
            key("b.t", 4, 20, Some((3, 3))),
            "_pgcdc/pgcdc/checkpoint.json".to_owned(),
        ];
        let durable = durable_positions(keys.iter().map(String::as_str));
        assert_eq!(durable.positions.get("a.t"), Some(&Lsn::new(9)));
        assert_eq!(durable.positions.get("b.t"), Some(&Lsn::new(3)));
        assert_eq!(durable.incomplete, vec![keys[4].clone(), keys[5].clone()]);
    }
}

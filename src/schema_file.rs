//! Per-table schema files: `<schema>.<table>/_schema/<version>.json`.
//!
//! The CSV header names the columns; a loader that wants typed tables also needs the PostgreSQL
//! types, modifiers and key columns. Each distinct column list of a table gets one document,
//! written before the first data file that uses it. Its version is
//! `<first commit LSN>-<first _seq>-<fingerprint>`, the position of the first row written with it:
//! names sort in the order the schemas appeared, and the fingerprint (a hash of the columns) lets a restart see from the listing alone that a schema is
//! already there, so a restart does not add a copy.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::changes::Table;
use crate::encode::METADATA_COLUMNS;
use crate::layout;
use crate::lsn::Lsn;
use crate::sink::{Sink, SinkError};

pub use crate::layout::SCHEMA_DIR;

#[derive(Serialize)]
struct Document<'a> {
    table: String,
    schema: &'a str,
    name: &'a str,
    version: &'a str,
    first_commit_lsn: String,
    metadata_columns: [&'static str; 6],
    columns: Vec<ColumnDoc<'a>>,
    key_columns: Vec<&'a str>,
}

#[derive(Serialize)]
struct ColumnDoc<'a> {
    name: &'a str,
    position: usize,
    #[serde(rename = "type")]
    type_name: &'a str,
    type_oid: u32,
    type_modifier: i32,
    key: bool,
}

/// 64-bit FNV-1a over the column list: stable across builds and platforms (unlike std's
/// hasher), which is what a name compared across restarts needs.
pub fn fingerprint(table: &Table) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for column in &table.columns {
        feed(column.name.as_bytes());
        feed(column.type_name.as_bytes());
        feed(&column.type_oid.to_le_bytes());
        feed(&column.type_modifier.to_le_bytes());
        feed(&[u8::from(column.is_key)]);
    }
    format!("{hash:016x}")
}

/// `<first commit LSN>-<first _seq>-<fingerprint>`: names sort in the order shapes appeared.
fn version(table: &Table, (first_commit, first_seq): (Lsn, u64)) -> String {
    format!(
        "{}-{first_seq:08X}-{}",
        first_commit.to_file_hex(),
        fingerprint(table)
    )
}

/// The key and JSON text of the schema file for `table`, first used by the row at `first_row`
/// (commit LSN, `_seq`).
pub fn render(table: &Table, first_row: (Lsn, u64)) -> (String, Vec<u8>) {
    let (first_commit, _) = first_row;
    let version = version(table, first_row);
    let doc = Document {
        table: table.to_string(),
        schema: &table.schema,
        name: &table.name,
        version: &version,
        first_commit_lsn: first_commit.to_string(),
        metadata_columns: METADATA_COLUMNS,
        columns: table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| ColumnDoc {
                name: &c.name,
                position: i + 1,
                type_name: &c.type_name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                key: c.is_key,
            })
            .collect(),
        key_columns: table
            .columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_str())
            .collect(),
    };
    let mut json = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    json.push(b'\n');
    (layout::schema_key(&table.folder(), &version), json)
}

/// The schemas already in the sink, per table folder, by fingerprint.
#[derive(Debug, Default)]
pub struct KnownSchemas {
    by_folder: BTreeMap<String, BTreeSet<String>>,
}

impl KnownSchemas {
    /// Reads the fingerprints out of a listing of the sink.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> KnownSchemas {
        let mut known = KnownSchemas::default();
        for key in keys {
            let Some((folder, version)) = layout::parse_schema_key(key) else {
                continue;
            };
            let Some((_, fp)) = version.rsplit_once('-') else {
                continue;
            };
            known
                .by_folder
                .entry(folder.to_owned())
                .or_default()
                .insert(fp.to_owned());
        }
        known
    }

    /// The fingerprints known, per table folder (for the checkpoint).
    pub fn by_folder(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.by_folder
    }

    /// Schemas recorded in a checkpoint.
    pub fn from_map(by_folder: BTreeMap<String, BTreeSet<String>>) -> KnownSchemas {
        KnownSchemas { by_folder }
    }

    /// Adds what a listing (of some keys) says, to what is known.
    pub fn add_keys<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        for (folder, fps) in KnownSchemas::from_keys(keys).by_folder {
            self.by_folder.entry(folder).or_default().extend(fps);
        }
    }

    /// The key [`KnownSchemas::ensure`] would write for `table`, or `None` when the sink has
    /// its schema already.
    pub fn missing_key(&self, table: &Table, first_row: (Lsn, u64)) -> Option<String> {
        (!self.knows(table))
            .then(|| layout::schema_key(&table.folder(), &version(table, first_row)))
    }

    fn knows(&self, table: &Table) -> bool {
        self.by_folder
            .get(&table.folder())
            .is_some_and(|s| s.contains(&fingerprint(table)))
    }

    /// Records that the sink holds the schema file of `table` (written by the caller, from
    /// [`render`]).
    pub fn learn(&mut self, table: &Table) {
        self.by_folder
            .entry(table.folder())
            .or_default()
            .insert(fingerprint(table));
    }

    /// Writes the schema file of `table` unless the sink has it already.
    pub fn ensure(
        &mut self,
        sink: &dyn Sink,
        table: &Table,
        first_row: (Lsn, u64),
    ) -> Result<(), SinkError> {
        if self.knows(table) {
            return Ok(());
        }
        let (key, json) = render(table, first_row);
        sink.write(&key, &json)?;
        tracing::info!(key = %key, "Schema file written");
        self.learn(table);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::ColumnInfo;

    fn table(columns: &[(&str, &str, u32, bool)]) -> Table {
        Table {
            schema: "public".into(),
            name: "t".into(),
            columns: columns
                .iter()
                .map(|&(name, type_name, type_oid, is_key)| ColumnInfo {
                    name: name.into(),
                    type_name: type_name.into(),
                    type_oid,
                    type_modifier: -1,
                    is_key,
                })
                .collect(),
        }
    }

    #[test]
    fn document_lists_types_and_keys() {
        let t = table(&[("id", "integer", 23, true), ("body", "text", 25, false)]);
        let (key, json) = render(&t, (Lsn::new(0x1_0000_0010), 3));
        assert_eq!(
            key,
            format!(
                "public.t/_schema/0000000100000010-00000003-{}.json",
                fingerprint(&t)
            )
        );
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc["table"], "public.t");
        assert_eq!(doc["first_commit_lsn"], "1/10");
        assert_eq!(doc["key_columns"], serde_json::json!(["id"]));
        assert_eq!(doc["columns"][1]["type"], "text");
        assert_eq!(doc["columns"][1]["position"], 2);
        assert_eq!(doc["metadata_columns"][0], "_op");
    }

    #[test]
    fn fingerprint_changes_with_any_column_attribute() {
        let base = table(&[("id", "integer", 23, true)]);
        let renamed = table(&[("ident", "integer", 23, true)]);
        let retyped = table(&[("id", "bigint", 20, true)]);
        let unkeyed = table(&[("id", "integer", 23, false)]);
        let fps: BTreeSet<String> = [&base, &renamed, &retyped, &unkeyed]
            .iter()
            .map(|t| fingerprint(t))
            .collect();
        assert_eq!(fps.len(), 4);
        assert_eq!(fingerprint(&base), fingerprint(&base.clone()));
    }

    #[test]
    fn listing_tells_which_schemas_exist() {
        let t = table(&[("id", "integer", 23, true)]);
        let (key, _) = render(&t, (Lsn::new(5), 0));
        let known = KnownSchemas::from_keys([
            key.as_str(),
            "public.t/dt=2024-01-01/hour=00/0-1.csv.gz",
            "_pgcdc/s/checkpoint.json",
        ]);
        assert!(known.by_folder["public.t"].contains(&fingerprint(&t)));
        assert_eq!(known.by_folder.len(), 1);
    }
}

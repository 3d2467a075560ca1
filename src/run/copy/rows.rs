//! A chunk's rows as a worker read them, and the keys in them: what the window rule compares
//! with the stream's rows, by the same encoded form. Pure.

use std::sync::Arc;

use crate::changes::Table;
use crate::checkpoint::CopyPlan;
use crate::control::{ChunkId, Visibility};
use crate::encode::{split_encoded, unquote_field};

/// What a chunk reads: a range of the plan's heap blocks, or the rows of some keys.
///
/// A key is read again when an update during the copy left a TOASTed value unchanged: the
/// stream's row lacks the value, and a non-HOT update may have moved the row into blocks a
/// chunk already read, where no later chunk finds it. Read between watermarks like any chunk,
/// the key's row comes with its value, whatever block it is in now.
#[derive(Debug, Clone)]
pub(in crate::run) enum Part {
    Range(u32),
    /// Each key's values (the key columns' text, in the copy's identity order).
    Keys(Arc<Vec<Vec<String>>>),
}

/// The values of the key columns at `positions` of an encoded line (`_unchanged,f1,…`), as the
/// server printed them.
pub(in crate::run) fn key_values(line: &[u8], positions: &[usize]) -> Vec<String> {
    let fields: Vec<&[u8]> = split_encoded(line).skip(1).collect();
    positions
        .iter()
        .map(|&p| {
            let field = fields.get(p).copied().unwrap_or_default();
            String::from_utf8_lossy(&unquote_field(field)).into_owned()
        })
        .collect()
}

/// One chunk's rows, read and encoded by a worker.
#[derive(Debug)]
pub(in crate::run) struct ChunkRows {
    pub id: ChunkId,
    pub folder: String,
    /// The copy attempt it was read for ([`super::Live::attempt`]).
    pub attempt: u64,
    pub part: Part,
    /// The plan the chunk was read under, and the heap file the read saw ([`rewrite`]).
    pub plan: Arc<CopyPlan>,
    pub filenode: Option<u32>,
    pub seen: Visibility,
    /// Each row's `_unchanged` value and fields, as the batcher writes them, back to back.
    pub lines: Vec<u8>,
    pub line_ends: Vec<usize>,
    /// Each row's key ([`encoded_key`]), back to back.
    pub keys: Vec<u8>,
    pub key_ends: Vec<usize>,
}

impl ChunkRows {
    /// The rows as (line, key).
    pub fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let lines = self.line_ends.iter().scan(0, |start, &end| {
            let line = self.lines.get(*start..end).unwrap_or_default();
            *start = end;
            Some(line)
        });
        let keys = self.key_ends.iter().scan(0, |start, &end| {
            let key = self.keys.get(*start..end).unwrap_or_default();
            *start = end;
            Some(key)
        });
        lines.zip(keys)
    }
}

/// The key of a row from its encoded line (`_unchanged,f1,…`): the key fields' CSV forms,
/// each with its length, so `(a,bc)` and `(ab,c)` differ. Also whether `_unchanged` is set.
pub(in crate::run) fn encoded_key(line: &[u8], positions: &[usize], out: &mut Vec<u8>) -> bool {
    let mut fields = split_encoded(line);
    let unchanged = fields.next().is_some_and(|f| !f.is_empty());
    let fields: Vec<&[u8]> = fields.collect();
    for &p in positions {
        let field = fields.get(p).copied().unwrap_or_default();
        out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        out.extend_from_slice(field);
    }
    unchanged
}

/// The positions of the columns a stream row's `_unchanged` names (its encoded line's first
/// field, a JSON list of names); `None` if it names a column `table` does not have.
pub(in crate::run) fn unchanged_positions(line: &[u8], table: &Table) -> Option<Vec<usize>> {
    let field = split_encoded(line).next().unwrap_or_default();
    if field.is_empty() {
        return Some(Vec::new());
    }
    let json = crate::encode::unquote_field(field);
    let names: Vec<String> = serde_json::from_slice(&json).ok()?;
    names
        .iter()
        .map(|n| table.columns.iter().position(|c| c.name == *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_the_servers_text_unquoted() {
        let line = br#"["body"],7,"a ""q"", b",x"#;
        assert_eq!(key_values(line, &[1, 0]), ["a \"q\", b", "7"]);
        assert_eq!(key_values(line, &[5]), [""]);
    }

    #[test]
    fn keys_are_length_prefixed_field_forms() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert!(!encoded_key(b",ab,c,x", &[0, 1], &mut a));
        assert!(!encoded_key(b",a,bc,x", &[0, 1], &mut b));
        assert_ne!(a, b);
        let mut c = Vec::new();
        assert!(encoded_key(b"[\"x\"],ab,c,\"y\"", &[0, 1], &mut c));
        assert_eq!(a, c);
    }
}

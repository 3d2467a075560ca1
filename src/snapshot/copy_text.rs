//! PostgreSQL's COPY text format, parsed back into fields.
//!
//! The snapshot reads tables with `COPY ... TO STDOUT` in text format because its values are the
//! same text output pgoutput sends while streaming, so snapshot rows and streamed rows look
//! alike in the files. Rows end with LF, fields are separated by TAB, `\N` is NULL, and
//! backslash escapes encode the rest (PostgreSQL docs, COPY, "Text Format").

use bytes::Bytes;

use crate::changes::{Field, Table, normalise};
use crate::encode::push_field;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyTextError {
    #[error("COPY data ended in the middle of a row ({0} bytes without a line end)")]
    UnterminatedRow(usize),
}

/// Splits a COPY byte stream, delivered in arbitrary chunks, into rows.
#[derive(Debug, Default)]
pub struct CopyTextParser {
    partial: Vec<u8>,
}

impl CopyTextParser {
    pub fn new() -> CopyTextParser {
        CopyTextParser::default()
    }

    /// Feeds one chunk and calls `on_row` for every complete row in it.
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut on_row: impl FnMut(Vec<Field>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.feed_lines(chunk, |line| on_row(parse_line(line)))
    }

    /// Feeds one chunk and calls `on_line` for every complete row in it, still in COPY text form
    /// (without its LF).
    pub fn feed_lines<E>(
        &mut self,
        chunk: &[u8],
        mut on_line: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = chunk;
        while let Some(pos) = memchr_lf(rest) {
            let (line, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                on_line(line)?;
            } else {
                self.partial.extend_from_slice(line);
                let line = std::mem::take(&mut self.partial);
                on_line(&line)?;
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Checks that the stream ended on a row boundary.
    pub fn finish(&self) -> Result<(), CopyTextError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(CopyTextError::UnterminatedRow(self.partial.len()))
        }
    }
}

/// Turns COPY text rows straight into the column part of CSV lines (`,v1,v2…`), without building
/// a field list per row: the snapshot's hot path.
#[derive(Debug, Default)]
pub struct Transcoder {
    /// Per column: whether its values are rewritten ([`normalise::applies_to`]), and the type.
    columns: Vec<(bool, u32)>,
    unescaped: Vec<u8>,
    normalised: Vec<u8>,
}

impl Transcoder {
    pub fn new(table: &Table) -> Transcoder {
        Transcoder {
            columns: table
                .columns
                .iter()
                .map(|c| (normalise::applies_to(c.type_oid), c.type_oid))
                .collect(),
            unescaped: Vec::new(),
            normalised: Vec::new(),
        }
    }

    /// Appends `,field` for each field of `line` (a row without its LF) and returns how many
    /// fields it had. The result equals [`parse_line`] followed by the CSV encoder.
    ///
    /// One pass over the bytes classifies each one (field end, escape, needs CSV quotes); only a
    /// field with an escape or a rewritten type takes the slower path through a scratch buffer.
    pub fn transcode(&mut self, line: &[u8], out: &mut Vec<u8>) -> usize {
        let mut count = 0;
        let mut start = 0;
        let mut escaped = false;
        let mut special = false;
        for (i, &b) in line
            .iter()
            .enumerate()
            .chain(std::iter::once((line.len(), &b'\t')))
        {
            match CLASS[usize::from(b)] {
                PLAIN => continue,
                ESCAPE => escaped = true,
                SPECIAL => special = true,
                _ => {
                    let raw = line.get(start..i).unwrap_or_default();
                    self.field(count, raw, escaped, special, out);
                    count += 1;
                    start = i + 1;
                    escaped = false;
                    special = false;
                }
            }
        }
        count
    }

    fn field(&mut self, index: usize, raw: &[u8], escaped: bool, special: bool, out: &mut Vec<u8>) {
        out.push(b',');
        if escaped && raw == b"\\N" {
            return;
        }
        let rewrite = self.columns.get(index).copied().filter(|&(r, _)| r);
        if !escaped && rewrite.is_none() {
            if special || raw.is_empty() {
                push_field(out, Some(raw));
            } else {
                out.extend_from_slice(raw);
            }
            return;
        }
        let mut value = raw;
        if escaped {
            self.unescaped.clear();
            unescape(raw, &mut self.unescaped);
            value = &self.unescaped;
        }
        if let Some((_, type_oid)) = rewrite {
            self.normalised.clear();
            normalise::write(type_oid, value, &mut self.normalised);
            value = &self.normalised;
        }
        push_field(out, Some(value));
    }
}

const PLAIN: u8 = 0;
const FIELD_END: u8 = 1;
const ESCAPE: u8 = 2;
const SPECIAL: u8 = 3;

/// What each byte of a COPY text row means to [`Transcoder::transcode`]. CR and LF never appear
/// unescaped inside a COPY text field, but are marked anyway so the CSV side stays right.
const CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    table[b'\t' as usize] = FIELD_END;
    table[b'\\' as usize] = ESCAPE;
    table[b',' as usize] = SPECIAL;
    table[b'"' as usize] = SPECIAL;
    table[b'\r' as usize] = SPECIAL;
    table[b'\n' as usize] = SPECIAL;
    table
};

fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// Parses one row (without its LF).
pub fn parse_line(line: &[u8]) -> Vec<Field> {
    line.split(|&b| b == b'\t').map(parse_field).collect()
}

fn parse_field(raw: &[u8]) -> Field {
    if raw == b"\\N" {
        return Field::Null;
    }
    if !raw.contains(&b'\\') {
        return Field::Text(Bytes::copy_from_slice(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    unescape(raw, &mut out);
    Field::Text(Bytes::from(out))
}

/// Decodes COPY text's backslash escapes into `out`.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = raw.get(i) else {
            // A lone trailing backslash: keep it rather than lose a byte.
            out.push(b'\\');
            break;
        };
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0C),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0B),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xFF) as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push((value & 0xFF) as u8);
                }
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Field {
        Field::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn nulls_empties_and_escapes() {
        assert_eq!(
            parse_line(b"1\t\\N\t\tline\\nbreak\ttab\\there\tback\\\\slash\t\\101\\x41"),
            vec![
                text("1"),
                Field::Null,
                text(""),
                text("line\nbreak"),
                text("tab\there"),
                text("back\\slash"),
                text("AA"),
            ]
        );
        assert_eq!(parse_line(b"\\101\\x41z"), vec![text("AAz")]);
        assert_eq!(parse_line(b"\\r\\b\\f\\v"), vec![text("\r\u{8}\u{c}\u{b}")]);
    }

    #[test]
    fn rows_split_across_chunks() {
        let data = b"1\tone\n2\ttw\\to\n3\t\\N\n";
        for split in 0..data.len() {
            let mut parser = CopyTextParser::new();
            let mut rows = Vec::new();
            let (a, b) = data.split_at(split);
            for chunk in [a, b] {
                parser
                    .feed(chunk, |r| {
                        rows.push(r);
                        Ok::<_, ()>(())
                    })
                    .unwrap();
            }
            parser.finish().unwrap();
            assert_eq!(rows.len(), 3, "split at {split}");
            assert_eq!(rows[1], vec![text("2"), text("tw\to")]);
            assert_eq!(rows[2], vec![text("3"), Field::Null]);
        }
    }

    #[test]
    fn transcoding_equals_parsing_then_encoding() {
        use crate::changes::{ChangeRow, ColumnInfo, Op, TxnMeta};
        use std::sync::Arc;
        let column = |name: &str, type_oid| ColumnInfo {
            name: name.into(),
            type_name: String::new(),
            type_oid,
            type_modifier: -1,
            is_key: false,
        };
        let table = Arc::new(Table {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                column("a", 25),
                column("b", 25),
                column("c", 1184),
                column("d", 790),
                column("e", 25),
            ],
        });
        let lines: [&[u8]; 4] = [
            b"1\t\\N\t2024-01-02 03:04:05+00\t$1,234.50\tsay \"hi\", ok",
            b"\t\\N\tinfinity\t-$0.01\tline\\nbreak\\\\ \\101",
            b"\\N\t\t\\N\t\\N\t\\r\\t",
            b"x\ty\t2024-01-02 03:04:05.5+00\t0.00\t\xc3\xa9\xf0\x9f\x98\x80",
        ];
        let mut transcoder = Transcoder::new(&table);
        for line in lines {
            let mut fast = Vec::new();
            assert_eq!(transcoder.transcode(line, &mut fast), 5);
            let fields = parse_line(line)
                .into_iter()
                .zip(&table.columns)
                .map(|(f, c)| match f {
                    Field::Text(t) => Field::Text(normalise::value(c.type_oid, t)),
                    other => other,
                })
                .collect();
            let row = ChangeRow {
                table: table.clone(),
                op: Op::Read,
                seq: 0,
                fields,
            };
            let meta = TxnMeta {
                xid: None,
                commit_lsn: crate::lsn::Lsn::new(1),
                commit_ts: 0,
            };
            let mut slow = Vec::new();
            crate::encode::encode_row(&mut slow, &meta, "ts", &row);
            let slow_columns = slow
                .strip_prefix(b"R,1,0,,ts,".as_slice())
                .and_then(|s| s.strip_suffix(b"\n".as_slice()))
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(slow_columns)
            );
        }
    }

    #[test]
    fn unterminated_row_is_an_error() {
        let mut parser = CopyTextParser::new();
        parser.feed(b"1\tx", |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(parser.finish(), Err(CopyTextError::UnterminatedRow(3)));
    }
}

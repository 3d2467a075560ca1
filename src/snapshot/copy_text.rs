//! PostgreSQL's COPY text format, parsed back into fields.
//!
//! The snapshot reads tables with `COPY ... TO STDOUT` in text format because its values are the
//! same text output pgoutput sends while streaming, so snapshot rows and streamed rows look
//! alike in the files. Rows end with LF, fields are separated by TAB, `\N` is NULL, and
//! backslash escapes encode the rest (PostgreSQL docs, COPY, "Text Format").

use bytes::Bytes;

use crate::changes::Field;

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
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                on_row(parse_line(line))?;
            } else {
                self.partial.extend_from_slice(line);
                let line = std::mem::take(&mut self.partial);
                on_row(parse_line(&line))?;
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
    Field::Text(Bytes::from(out))
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
    fn unterminated_row_is_an_error() {
        let mut parser = CopyTextParser::new();
        parser.feed(b"1\tx", |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(parser.finish(), Err(CopyTextError::UnterminatedRow(3)));
    }
}

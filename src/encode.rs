//! The CSV encoding of change rows.
//!
//! RFC 4180 with one addition the `csv` crate cannot express: NULL and the empty string must stay
//! distinct, so NULL is an unquoted empty field and the empty string is `""`. Snowflake
//! (`FIELD_OPTIONALLY_ENCLOSED_BY='"'`, `EMPTY_FIELD_AS_NULL=TRUE`), DuckDB's `read_csv` and
//! PostgreSQL's `COPY ... (FORMAT csv)` all read it back that way. A field is quoted when it is
//! empty or holds a comma, a quote, CR or LF; quotes inside are doubled. Bytes are written as
//! they come (PostgreSQL's text output in UTF-8), so nothing is re-encoded on the way.

use crate::changes::{ChangeRow, Field, Op, Table, TxnMeta};

/// The metadata columns that precede the table's own columns in every file.
pub const METADATA_COLUMNS: [&str; 6] = [
    "_op",
    "_commit_lsn",
    "_seq",
    "_xid",
    "_commit_ts",
    "_unchanged",
];

/// The bytes that make a field need quotes: a table lookup per byte is the encoder's inner loop.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b',' as usize] = true;
    table[b'"' as usize] = true;
    table[b'\r' as usize] = true;
    table[b'\n' as usize] = true;
    table
};

fn needs_quotes(value: &[u8]) -> bool {
    value.is_empty() || value.iter().any(|&b| SPECIAL[usize::from(b)])
}

/// Appends one field; `None` is NULL.
pub fn push_field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else { return };
    if !needs_quotes(value) {
        out.extend_from_slice(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push(b'"');
    for piece in value.split_inclusive(|&b| b == b'"') {
        out.extend_from_slice(piece);
        if piece.ends_with(b"\"") {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

/// The header line of a file holding rows of `table`.
pub fn encode_header(out: &mut Vec<u8>, table: &Table) {
    let names = METADATA_COLUMNS
        .iter()
        .copied()
        .chain(table.columns.iter().map(|c| c.name.as_str()));
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_field(out, Some(name.as_bytes()));
    }
    out.push(b'\n');
}

/// ISO-8601 UTC with microseconds from PostgreSQL's epoch-2000 microseconds.
pub fn format_commit_ts(pg_micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(crate::pg_time::to_unix_micros(pg_micros)) {
        Some(ts) => ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        // Only reachable for timestamps hundreds of thousands of years out; keep the raw value
        // rather than fail a whole file over it.
        None => pg_micros.to_string(),
    }
}

/// The metadata columns of a row, without the `_unchanged` value or anything after it.
pub fn encode_metadata(out: &mut Vec<u8>, meta: &TxnMeta, commit_ts: &str, op: Op, seq: u64) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(op.code().as_bytes());
    out.push(b',');
    out.extend_from_slice(number.format(meta.commit_lsn.as_u64()).as_bytes());
    out.push(b',');
    out.extend_from_slice(number.format(seq).as_bytes());
    out.push(b',');
    // Rows pgcdc writes itself belong to no transaction of the source's, whatever transaction
    // they are placed in (a chunk's rows sit in its high watermark's).
    if let Some(xid) = meta.xid.filter(|_| !op.is_written_by_pgcdc()) {
        out.extend_from_slice(number.format(xid).as_bytes());
    }
    out.push(b',');
    out.extend_from_slice(commit_ts.as_bytes());
    out.push(b',');
}

/// One change row as a CSV line (with its trailing LF).
pub fn encode_row(out: &mut Vec<u8>, meta: &TxnMeta, commit_ts: &str, row: &ChangeRow) {
    encode_metadata(out, meta, commit_ts, row.op, row.seq);
    encode_unchanged_and_fields(out, row);
    out.push(b'\n');
}

/// The `_unchanged` value and the row's fields, each field after a comma.
pub fn encode_unchanged_and_fields(out: &mut Vec<u8>, row: &ChangeRow) {
    let unchanged: Vec<&str> = row
        .fields
        .iter()
        .zip(&row.table.columns)
        .filter(|(f, _)| matches!(f, Field::Unchanged))
        .map(|(_, c)| c.name.as_str())
        .collect();
    if !unchanged.is_empty() {
        // serde_json cannot fail on a list of strings.
        let json = serde_json::to_string(&unchanged).unwrap_or_default();
        push_field(out, Some(json.as_bytes()));
    }
    for field in &row.fields {
        out.push(b',');
        match field {
            Field::Null | Field::Unchanged => {}
            Field::Text(bytes) => push_field(out, Some(bytes)),
        }
    }
}

/// A field's value from its CSV form: the quotes around it taken off and doubled quotes made
/// single again.
pub fn unquote_field(field: &[u8]) -> Vec<u8> {
    let Some(inner) = field
        .strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
    else {
        return field.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut quote = false;
    for &b in inner {
        if b == b'"' && quote {
            quote = false;
            continue;
        }
        quote = b == b'"';
        out.push(b);
    }
    out
}

/// Splits what [`encode_unchanged_and_fields`] wrote (`_unchanged,f1,…`) into each field's
/// CSV form, quotes included. The encoder is deterministic, so equal values give equal slices:
/// a key can be compared without decoding it.
pub fn split_encoded(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut quoted = false;
        for (i, &b) in current.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    rest = current.get(i + 1..);
                    return current.get(..i);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::changes::{ColumnInfo, Op};
    use crate::lsn::Lsn;

    fn field(value: Option<&str>) -> String {
        let mut out = Vec::new();
        push_field(&mut out, value.map(str::as_bytes));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn split_encoded_keeps_quoted_commas_inside_a_field() {
        let line: &[u8] = b"[x],1,\"a,\"\"y\"\"\",,\"\"";
        let fields: Vec<&[u8]> = split_encoded(line).collect();
        let expected: Vec<&[u8]> = vec![b"[x]", b"1", b"\"a,\"\"y\"\"\"", b"", b"\"\""];
        assert_eq!(fields, expected);
        assert_eq!(split_encoded(b"").count(), 1);
    }

    #[test]
    fn null_and_empty_string_differ() {
        assert_eq!(field(None), "");
        assert_eq!(field(Some("")), "\"\"");
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(field(Some("plain")), "plain");
        assert_eq!(field(Some("a,b")), "\"a,b\"");
        assert_eq!(field(Some("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(field(Some("line\nbreak")), "\"line\nbreak\"");
        assert_eq!(field(Some("cr\rhere")), "\"cr\rhere\"");
        assert_eq!(field(Some("back\\slash")), "back\\slash");
        assert_eq!(field(Some("ünï€😀")), "ünï€😀");
        assert_eq!(field(Some(" padded ")), " padded ");
    }

    #[test]
    fn commit_timestamps_are_iso_utc() {
        assert_eq!(format_commit_ts(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_commit_ts(1_234_567), "2000-01-01T00:00:01.234567Z");
        assert_eq!(format_commit_ts(-1), "1999-12-31T23:59:59.999999Z");
    }

    fn table() -> Arc<Table> {
        let col = |name: &str| ColumnInfo {
            name: name.into(),
            type_name: "text".into(),
            type_oid: 25,
            type_modifier: -1,
            is_key: false,
        };
        Arc::new(Table {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![col("id"), col("note, with comma"), col("big")],
        })
    }

    #[test]
    fn header_and_row_layout() {
        let mut out = Vec::new();
        encode_header(&mut out, &table());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,\"note, with comma\",big\n"
        );
        let row = ChangeRow {
            table: table(),
            op: Op::Update,
            seq: 3,
            fields: vec![
                Field::Text(Bytes::from_static(b"1")),
                Field::Text(Bytes::from_static(b"")),
                Field::Unchanged,
            ],
        };
        let meta = TxnMeta {
            xid: Some(42),
            commit_lsn: Lsn::new(0x1_0000_0000),
            commit_ts: 0,
        };
        let mut out = Vec::new();
        encode_row(&mut out, &meta, "2000-01-01T00:00:00.000000Z", &row);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "U,4294967296,3,42,2000-01-01T00:00:00.000000Z,\"[\"\"big\"\"]\",1,\"\",\n"
        );
    }

    #[test]
    fn a_quoted_field_unquotes_to_its_value() {
        let mut out = Vec::new();
        push_field(&mut out, Some(b"[\"a, b\",\"c\"]"));
        assert_eq!(unquote_field(&out), b"[\"a, b\",\"c\"]");
        assert_eq!(unquote_field(b"plain"), b"plain");
        assert_eq!(unquote_field(b"\"\""), b"");
    }
}

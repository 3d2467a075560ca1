//! Rewrites the few PostgreSQL text forms that warehouses do not read as they are.
//!
//! Everything else is written exactly as PostgreSQL's output function printed it under
//! [`SESSION_SETTINGS`](crate::source::conn::SESSION_SETTINGS). Only scalar columns are touched;
//! array elements keep PostgreSQL's form (arrays are loaded as text or parsed by the model).

use bytes::Bytes;

/// `timestamp without time zone`.
const TIMESTAMP: u32 = 1114;
/// `timestamp with time zone`.
const TIMESTAMPTZ: u32 = 1184;
/// `money`.
const MONEY: u32 = 790;

/// Whether values of this type are rewritten at all.
pub fn applies_to(type_oid: u32) -> bool {
    matches!(type_oid, TIMESTAMP | TIMESTAMPTZ | MONEY)
}

/// The value as it goes into the file.
pub fn value(type_oid: u32, text: Bytes) -> Bytes {
    if !applies_to(type_oid) {
        return text;
    }
    let mut out = Vec::with_capacity(text.len() + 4);
    write(type_oid, &text, &mut out);
    Bytes::from(out)
}

/// Appends the file form of `text` to `out`.
pub fn write(type_oid: u32, text: &[u8], out: &mut Vec<u8>) {
    match type_oid {
        TIMESTAMP => iso_timestamp(text, false, out),
        TIMESTAMPTZ => iso_timestamp(text, true, out),
        MONEY => out.extend(text.iter().copied().filter(|&b| b != b'$' && b != b',')),
        _ => out.extend_from_slice(text),
    }
}

/// `2024-01-02 03:04:05.5+00` → `2024-01-02T03:04:05.5+00:00`: ISO 8601 with a `T` and a full
/// offset, which Snowflake's `AUTO` format and DuckDB both read. `infinity` and BC dates keep
/// PostgreSQL's spelling: ISO 8601 has none for them.
///
/// Money: `-$1,234.56` → `-1234.56`. With `lc_monetary = C` PostgreSQL prints `$`, `,` thousands
/// separators and two decimals; without them the value is a plain decimal every loader reads.
fn iso_timestamp(text: &[u8], with_zone: bool, out: &mut Vec<u8>) {
    let space = text.iter().position(|&b| b == b' ');
    let (Some(space), false) = (space, text.ends_with(b" BC")) else {
        out.extend_from_slice(text);
        return;
    };
    out.extend_from_slice(&text[..space]);
    out.push(b'T');
    out.extend_from_slice(&text[space + 1..]);
    // The session runs in UTC, so the offset is `+00`; an offset with minutes is already full.
    if with_zone && text.len() >= 3 && matches!(text[text.len() - 3], b'+' | b'-') {
        out.extend_from_slice(b":00");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(oid: u32, s: &str) -> String {
        String::from_utf8(value(oid, Bytes::copy_from_slice(s.as_bytes())).to_vec()).unwrap()
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(
            norm(TIMESTAMPTZ, "2024-01-02 03:04:05.123456+00"),
            "2024-01-02T03:04:05.123456+00:00"
        );
        assert_eq!(
            norm(TIMESTAMPTZ, "2024-01-02 03:04:05+05:30"),
            "2024-01-02T03:04:05+05:30"
        );
        assert_eq!(norm(TIMESTAMPTZ, "infinity"), "infinity");
        assert_eq!(
            norm(TIMESTAMPTZ, "0044-03-15 12:00:00+00 BC"),
            "0044-03-15 12:00:00+00 BC"
        );
        assert_eq!(
            norm(TIMESTAMP, "2024-01-02 03:04:05"),
            "2024-01-02T03:04:05"
        );
        assert_eq!(norm(TIMESTAMP, "-infinity"), "-infinity");
    }

    #[test]
    fn money_loses_its_symbol_and_separators() {
        assert_eq!(norm(MONEY, "$1,234.56"), "1234.56");
        assert_eq!(
            norm(MONEY, "-$92,233,720,368,547,758.08"),
            "-92233720368547758.08"
        );
        assert_eq!(norm(MONEY, "0.00"), "0.00");
    }

    #[test]
    fn other_types_pass_through() {
        assert_eq!(norm(25, "a b+00"), "a b+00");
    }
}

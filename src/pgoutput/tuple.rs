//! `TupleData` blocks: the column values carried by Insert, Update and Delete.
//!
//! Contract: pure and panic-free. Values are zero-copy [`Bytes::slice`]s of the message buffer, so
//! decoding a wide row allocates one `Vec` and no per-column buffers. Values are passed through
//! untouched: pgoutput sends the type's text output (or binary send format when `binary = true`),
//! and interpreting it needs the Relation's column types, which is not this module's job.
//!
//! Layout (see [TupleData] in the PostgreSQL docs): `Int16` column count, then per column one kind
//! byte, followed for `t`/`b` by an `Int32` length and that many bytes.
//!
//! [TupleData]: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html

use bytes::Bytes;

use super::cursor::Cursor;
use super::{DecodeError, tag};

/// One row image: the column values in the order of the Relation message's columns.
///
/// The server sends one value per column of the most recent Relation message for the relation
/// (with PG ≥ 15 column lists, that message lists only the published columns), so index `i` here
/// is column `i` of that Relation message. The decoder does not check the count: it has no state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<TupleData>);

impl Tuple {
    /// The column values, in Relation column order.
    pub fn columns(&self) -> &[TupleData] {
        &self.0
    }
}

/// One column value inside a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleData {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value whose content the server did not send.
    ///
    /// This is *not* NULL: the column has a value, it just was not logged because the UPDATE did
    /// not touch it and it lives out of line. Only Update new tuples (and Delete/Update old tuples
    /// under some replica identities) carry it; a writer must take the value from elsewhere or
    /// mark it as unknown, never write NULL.
    UnchangedToast,
    /// `t`: the value in the type's text output format.
    Text(Bytes),
    /// `b`: the value in the type's binary send format (only with the `binary` option).
    Binary(Bytes),
}

/// Reads one `TupleData` block at the cursor.
pub(super) fn decode_tuple(cur: &mut Cursor<'_>) -> Result<Tuple, DecodeError> {
    let ncols = cur.count_i16("tuple column count")?;
    // Each column takes at least its kind byte, so the remaining length bounds a sane capacity:
    // a corrupted count cannot make us allocate more than the message size.
    let mut values = Vec::with_capacity(ncols.min(cur.remaining()));
    for column in 0..ncols {
        let at = cur.position();
        let kind = cur.u8("tuple data kind")?;
        let value = match kind {
            tag::DATA_NULL => TupleData::Null,
            tag::DATA_UNCHANGED_TOAST => TupleData::UnchangedToast,
            tag::DATA_TEXT => {
                let len = cur.len_i32("text value length")?;
                TupleData::Text(cur.bytes(len, "text value")?)
            }
            tag::DATA_BINARY => {
                let len = cur.len_i32("binary value length")?;
                TupleData::Binary(cur.bytes(len, "binary value")?)
            }
            other => {
                return Err(DecodeError::UnknownTupleKind {
                    message: cur.message(),
                    at,
                    column,
                    kind: other,
                });
            }
        };
        values.push(value);
    }
    Ok(Tuple(values))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn decode_all(raw: &'static [u8]) -> (Result<Tuple, DecodeError>, usize) {
        let buf = Bytes::from_static(raw);
        let mut cur = Cursor::new(&buf, 0, "Insert");
        let r = decode_tuple(&mut cur);
        (r, cur.position())
    }

    #[test]
    fn decodes_every_kind() {
        let raw: &'static [u8] = &[
            0, 4, b'n', b'u', b't', 0, 0, 0, 3, b'a', b'b', b'c', b'b', 0, 0, 0, 2, 1, 2,
        ];
        let (r, pos) = decode_all(raw);
        assert_eq!(
            r.unwrap(),
            Tuple(vec![
                TupleData::Null,
                TupleData::UnchangedToast,
                TupleData::Text(Bytes::from_static(b"abc")),
                TupleData::Binary(Bytes::from_static(&[1, 2])),
            ])
        );
        assert_eq!(pos, raw.len());
    }

    #[test]
    fn empty_text_value_is_not_null() {
        let (r, _) = decode_all(&[0, 1, b't', 0, 0, 0, 0]);
        assert_eq!(
            r.unwrap(),
            Tuple(vec![TupleData::Text(Bytes::new())]),
            "a zero-length text value is the empty string, distinct from NULL"
        );
    }

    #[test]
    fn values_are_zero_copy_slices() {
        let buf = Bytes::from_static(&[0, 1, b't', 0, 0, 0, 2, b'h', b'i']);
        let mut cur = Cursor::new(&buf, 0, "Insert");
        let tuple = decode_tuple(&mut cur).unwrap();
        let TupleData::Text(v) = &tuple.0[0] else {
            panic!("expected text")
        };
        let range = buf.as_ptr_range();
        assert!(
            range.contains(&v.as_ptr()),
            "value must point into the input buffer"
        );
    }

    #[test]
    fn unknown_kind_names_offset_column_and_byte() {
        let (r, _) = decode_all(&[0, 2, b'n', b'x']);
        assert_eq!(
            r.unwrap_err(),
            DecodeError::UnknownTupleKind {
                message: "Insert",
                at: 3,
                column: 1,
                kind: b'x'
            }
        );
    }

    #[test]
    fn negative_lengths_are_rejected() {
        let (r, _) = decode_all(&[0, 1, b't', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            r.unwrap_err(),
            DecodeError::NegativeLength {
                message: "Insert",
                field: "text value length",
                at: 3,
                value: -1
            }
        );
        let (r, _) = decode_all(&[0xff, 0xff]);
        assert!(matches!(r, Err(DecodeError::NegativeLength { at: 0, .. })));
    }

    #[test]
    fn huge_column_count_does_not_allocate_or_panic() {
        let (r, _) = decode_all(&[0x7f, 0xff, b'n']);
        assert!(matches!(r, Err(DecodeError::Truncated { at: 3, .. })));
    }

    #[test]
    fn value_longer_than_buffer_is_truncated() {
        let (r, _) = decode_all(&[0, 1, b'b', 0, 0, 0, 9, 1, 2]);
        assert_eq!(
            r.unwrap_err(),
            DecodeError::Truncated {
                message: "Insert",
                field: "binary value",
                at: 7,
                needed: 9,
                available: 2
            }
        );
    }
}

//! Decoding errors for the pgoutput decoder.
//!
//! Contract: every error names *which* message kind was being decoded and the byte offset (from the
//! start of the message, i.e. offset 0 is the tag byte) where decoding stopped, so that a bad
//! `XLogData` payload can be diagnosed from the log line alone. Building or formatting an error
//! never panics and never does I/O.

use std::fmt;

use super::tag;

/// Why a pgoutput message could not be decoded.
///
/// `message` is the message kind (`"Relation"`, `"Insert"`, …) and `field` the protocol field being
/// read, both static strings so errors are cheap to build. `at` is always a byte offset into the
/// buffer passed to [`decode`](super::decode), counting the tag byte as offset 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ended before `field` was complete.
    ///
    /// For a NUL-terminated string without its terminator, `needed` is `available + 1`: the decoder
    /// only knows that at least one more byte (the NUL) was required.
    #[error(
        "pgoutput {message} message truncated while reading {field} at byte {at}: \
         needed {needed} byte(s), {available} available"
    )]
    Truncated {
        /// Message kind being decoded.
        message: &'static str,
        /// Protocol field being read.
        field: &'static str,
        /// Offset where the field starts.
        at: usize,
        /// Bytes the field required from `at`.
        needed: usize,
        /// Bytes that were left from `at`.
        available: usize,
    },

    /// The first byte is not a message tag this decoder handles (including the protocol v3
    /// two-phase tags, which pgcdc never asks for).
    #[error("{}", UnknownTagDisplay(*tag))]
    UnknownTag {
        /// The tag byte found at offset 0.
        tag: u8,
    },

    /// A column in a `TupleData` block has a kind byte other than `n`, `u`, `t` or `b`.
    #[error(
        "pgoutput {message} message: unknown tuple data kind {} for column {column} at byte {at}",
        ByteDisplay(*kind)
    )]
    UnknownTupleKind {
        /// Message kind being decoded.
        message: &'static str,
        /// Offset of the kind byte.
        at: usize,
        /// Zero-based column index inside the tuple.
        column: usize,
        /// The offending kind byte.
        kind: u8,
    },

    /// A Relation message carries a replica identity byte other than `d`, `n`, `f` or `i`.
    #[error(
        "pgoutput Relation message: unknown replica identity {} at byte {at}",
        ByteDisplay(*byte)
    )]
    UnknownReplicaIdentity {
        /// Offset of the replica identity byte.
        at: usize,
        /// The offending byte.
        byte: u8,
    },

    /// The byte announcing a tuple (`N` new, `K` key, `O` old) is not one allowed at this point.
    #[error(
        "pgoutput {message} message: expected {expected} at byte {at}, found {}",
        ByteDisplay(*found)
    )]
    UnexpectedTupleMarker {
        /// Message kind being decoded.
        message: &'static str,
        /// Offset of the marker byte.
        at: usize,
        /// What the protocol allows here, for the error text.
        expected: &'static str,
        /// The byte that was found.
        found: u8,
    },

    /// A NUL-terminated string is not valid UTF-8.
    ///
    /// pgcdc requires the replication connection to use `client_encoding=UTF8`, so anything else
    /// is a framing bug or a misconfigured server, not something to paper over with lossy decoding.
    #[error("pgoutput {message} message: {field} is not valid UTF-8 (first bad byte at {at})")]
    InvalidUtf8 {
        /// Message kind being decoded.
        message: &'static str,
        /// Protocol field being read.
        field: &'static str,
        /// Offset of the first byte that is not valid UTF-8.
        at: usize,
    },

    /// A signed count or length field is negative.
    #[error("pgoutput {message} message: {field} at byte {at} is negative ({value})")]
    NegativeLength {
        /// Message kind being decoded.
        message: &'static str,
        /// Protocol field being read.
        field: &'static str,
        /// Offset of the length field.
        at: usize,
        /// The value read.
        value: i32,
    },

    /// Bytes are left after the last field the negotiated protocol version defines.
    ///
    /// Rejected rather than ignored: extra bytes mean either a framing bug or a server speaking a
    /// newer protocol version than pgcdc requested, and silently dropping fields would hide both.
    #[error("pgoutput {message} message: {remaining} unexpected trailing byte(s) at byte {at}")]
    TrailingBytes {
        /// Message kind being decoded.
        message: &'static str,
        /// Offset of the first unexpected byte.
        at: usize,
        /// How many bytes were left over.
        remaining: usize,
    },
}

/// Shows a byte both as hex and, when printable, as the ASCII character the docs use.
struct ByteDisplay(u8);

impl fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "{:#04x} ('{}')", self.0, char::from(self.0))
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

/// Gives the two-phase tags a specific hint: seeing them means the slot was created with
/// `two_phase`, which pgcdc does not use, rather than a corrupted stream.
struct UnknownTagDisplay(u8);

impl fmt::Display for UnknownTagDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let two_phase = match self.0 {
            tag::BEGIN_PREPARE => Some("Begin Prepare"),
            tag::PREPARE => Some("Prepare"),
            tag::COMMIT_PREPARED => Some("Commit Prepared"),
            tag::ROLLBACK_PREPARED => Some("Rollback Prepared"),
            tag::STREAM_PREPARE => Some("Stream Prepare"),
            _ => None,
        };
        match two_phase {
            Some(kind) => write!(
                f,
                "pgoutput {kind} message (tag {}) is not supported: \
                 pgcdc does not enable two-phase decoding on its slot",
                ByteDisplay(self.0)
            ),
            None => write!(f, "unknown pgoutput message tag {}", ByteDisplay(self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_message_field_and_offset() {
        let e = DecodeError::Truncated {
            message: "Relation",
            field: "namespace",
            at: 9,
            needed: 4,
            available: 3,
        };
        assert_eq!(
            e.to_string(),
            "pgoutput Relation message truncated while reading namespace at byte 9: \
             needed 4 byte(s), 3 available"
        );
    }

    #[test]
    fn display_shows_printable_and_unprintable_bytes() {
        let e = DecodeError::UnknownTupleKind {
            message: "Insert",
            at: 12,
            column: 2,
            kind: b'x',
        };
        assert_eq!(
            e.to_string(),
            "pgoutput Insert message: unknown tuple data kind 0x78 ('x') for column 2 at byte 12"
        );
        let e = DecodeError::UnknownTag { tag: 0 };
        assert_eq!(e.to_string(), "unknown pgoutput message tag 0x00");
    }

    #[test]
    fn display_hints_at_two_phase() {
        let e = DecodeError::UnknownTag { tag: b'P' };
        assert!(e.to_string().contains("Prepare"), "{e}");
        assert!(e.to_string().contains("two-phase"), "{e}");
    }
}

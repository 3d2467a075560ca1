//! pgcdc's own logical decoding messages: the watermarks of chunked copies and requests to copy a
//! table again. They travel through the WAL (`pg_logical_emit_message`), so they reach the
//! running pgcdc in commit order with everything else, and a request written while pgcdc is down
//! waits in the slot until it starts.
//!
//! Pure: the message text and the snapshot visibility rule, with no I/O.

use serde::{Deserialize, Serialize};

/// The prefix of every control message. Messages with it are never written to `_messages`.
pub const PREFIX: &str = "pgcdc.control";

/// What a control message says. Each names the slot it is for: several pgcdc instances on one
/// database see each other's messages and ignore those for another slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Written just before a chunk's snapshot is taken: from its commit on, the pipeline
    /// remembers which keys of the table change.
    Low {
        slot: String,
        chunk: ChunkId,
        table: String,
    },
    /// Written after the chunk was read: the chunk's rows go into the files here, minus the keys
    /// that changed since the low watermark (the stream holds their newer state).
    High { slot: String, chunk: ChunkId },
    /// A copy of `table` begins here (its `B` row); the chunks' watermarks all follow it.
    Begin {
        slot: String,
        table: String,
        run: u64,
    },
    /// `pgcdc snapshot`: copy these tables (`schema.table`) again.
    Snapshot { slot: String, tables: Vec<String> },
}

/// One chunk of one copy of one table. `run` tells the chunks of this process apart from the
/// watermarks an earlier process left in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId {
    pub run: u64,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("a {PREFIX} message is not one pgcdc understands ({0}); it is ignored")]
pub struct ControlError(String);

impl Control {
    pub fn slot(&self) -> &str {
        match self {
            Control::Low { slot, .. }
            | Control::High { slot, .. }
            | Control::Begin { slot, .. }
            | Control::Snapshot { slot, .. } => slot,
        }
    }

    pub fn to_text(&self) -> String {
        // Serialising a plain enum of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(content: &[u8]) -> Result<Control, ControlError> {
        serde_json::from_slice(content).map_err(|e| ControlError(e.to_string()))
    }
}

/// A transaction snapshot as `pg_current_snapshot()` prints it (`xmin:xmax:xip,…`): which
/// transactions a chunk's read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the snapshot {0:?} (expected xmin:xmax:xip,…)")]
pub struct VisibilityError(String);

impl Visibility {
    pub fn parse(text: &str) -> Result<Visibility, VisibilityError> {
        let err = || VisibilityError(text.to_owned());
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let xmax = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let in_progress = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse().map_err(|_| err()))
                .collect::<Result<_, _>>()?,
        };
        Ok(Visibility {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether the snapshot saw the effects of the committed transaction `xid` (the 32-bit form
    /// pgoutput sends, widened with the snapshot's epoch).
    pub fn sees(&self, xid: u32) -> bool {
        let full = self.widen(xid);
        full < self.xmin || (full < self.xmax && !self.in_progress.contains(&full))
    }

    /// The full transaction id of a 32-bit `xid` near this snapshot: the one at or below `xmax`
    /// with the same low 32 bits (transactions pgcdc compares are never 2^31 apart).
    fn widen(&self, xid: u32) -> u64 {
        let epoch = self.xmax & !0xFFFF_FFFF;
        let full = epoch | u64::from(xid);
        if full > self.xmax && full - self.xmax > 1 << 31 && full >= 1 << 32 {
            full - (1 << 32)
        } else {
            full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_name_their_slot() {
        let chunk = ChunkId { run: 7, seq: 3 };
        for message in [
            Control::Low {
                slot: "s".into(),
                chunk,
                table: "public.t".into(),
            },
            Control::Begin {
                slot: "s".into(),
                table: "public.t".into(),
                run: 7,
            },
            Control::High {
                slot: "s".into(),
                chunk,
            },
            Control::Snapshot {
                slot: "s".into(),
                tables: vec!["public.t".into()],
            },
        ] {
            let text = message.to_text();
            assert_eq!(Control::parse(text.as_bytes()).unwrap(), message);
            assert_eq!(message.slot(), "s");
        }
        assert_eq!(
            Control::High {
                slot: "s".into(),
                chunk
            }
            .to_text(),
            r#"{"kind":"high","slot":"s","chunk":{"run":7,"seq":3}}"#
        );
        assert!(Control::parse(b"{\"kind\":\"nope\"}").is_err());
    }

    #[test]
    fn visibility_follows_xmin_xmax_and_the_in_progress_list() {
        let v = Visibility::parse("100:105:100,103").unwrap();
        assert!(v.sees(99));
        assert!(!v.sees(100));
        assert!(v.sees(101));
        assert!(!v.sees(103));
        assert!(v.sees(104));
        assert!(!v.sees(105));
        assert!(!v.sees(200));
        let empty = Visibility::parse("7:7:").unwrap();
        assert!(empty.sees(6) && !empty.sees(7));
        assert!(Visibility::parse("x:1:").is_err());
        assert!(Visibility::parse("1").is_err());
    }

    #[test]
    fn visibility_widens_32_bit_xids_across_an_epoch() {
        let base = 3u64 << 32;
        let v = Visibility::parse(&format!("{}:{}:", base + 10, base + 20)).unwrap();
        assert!(v.sees(15));
        assert!(!v.sees(25));
        // Just before the epoch boundary: the previous epoch.
        assert!(v.sees(u32::MAX - 5));
    }
}

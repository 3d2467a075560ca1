//! What holds the WAL: why the slot's retained WAL (`pgcdc_slot_retained_wal_bytes`) grows, as
//! one cause per line, biggest first, each with what to do about it.
//!
//! The WAL a logical slot keeps is `current - restart_lsn`, and it splits along the path a change
//! takes, so every byte has exactly one cause:
//!
//! ```text
//! restart_lsn ── confirmed_flush_lsn ── sent_lsn ── pg_current_wal_lsn()
//!   transaction       pgcdc_lag          server_sending        (slot active)
//!   transaction       pgcdc_stopped ─────────────────────      (slot inactive)
//! ```
//!
//! - `server_sending`: WAL the walsender has not decoded and sent yet (it is catching up, or
//!   decoding a huge transaction).
//! - `pgcdc_lag` / `pgcdc_stopped`: WAL pgcdc has not confirmed, because its windows are not
//!   durable yet (an S3 outage, a slow sink), or because nothing streams from the slot.
//! - `transaction`: logical decoding restarts at the start of the oldest transaction that was
//!   still open when the slot last moved, so `restart_lsn` cannot pass a transaction that writes
//!   (has an xid) and stays open, running or prepared, even after pgcdc confirmed everything
//!   behind it ([docs](https://www.postgresql.org/docs/current/logicaldecoding-explanation.html)).
//!   That transaction is named from `pg_stat_activity` / `pg_prepared_xacts`.
//!
//! And one cause outside that sum: `other_slot`, another slot on the server that retains more WAL
//! than ours. It is not pgcdc's WAL, but it fills the same disk.
//!
//! Split by job: [`gather`] is the only I/O (one SQL statement, PostgreSQL 13 to 18), [`rank`]
//! turns [`Facts`] into ranked [`Cause`]s and [`text`] says them to a person. Ranking and text are
//! pure and unit-tested without a server.

mod gather;
mod rank;
mod text;

pub use gather::{facts_from_json, gather};
pub use rank::{HOLD_MIN_SECONDS, MIN_BYTES, breakdown, by_label, causes, holder};
pub use text::{Explained, explain, render};

use serde::Serialize;

use crate::lsn::Lsn;

/// How much of a statement's first line is kept: enough to recognise it, little enough that a
/// value or secret further along stays out of the output.
pub const QUERY_CHARS: usize = 80;

/// What the server says about the slot, its walsender, open transactions and the other slots,
/// read in one statement so that every xid age counts from the same point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub current_wal_lsn: Lsn,
    /// `None` when the slot does not exist.
    pub slot: Option<SlotFacts>,
    /// The `pg_stat_replication` row of the slot's active pid.
    pub walsender: Option<Walsender>,
    /// Open transactions that have an xid, running or prepared, oldest xid first.
    pub transactions: Vec<Transaction>,
    pub other_slots: Vec<OtherSlot>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotFacts {
    pub active: bool,
    pub active_pid: Option<i32>,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Walsender {
    pub pid: i32,
    /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
    pub state: String,
    pub sent_lsn: Option<Lsn>,
}

/// An open transaction that has written something (an xid), which logical decoding must see
/// to its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transaction {
    pub xid: String,
    /// `age(xid)`: the larger, the earlier its first write.
    pub xid_age: i64,
    /// Seconds since it began (running) or was prepared; `None` when pgcdc's role may not see
    /// another user's session details (it needs `pg_read_all_stats`).
    pub age_seconds: Option<f64>,
    pub database: Option<String>,
    #[serde(flatten)]
    pub kind: TransactionKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransactionKind {
    /// A session in `pg_stat_activity`.
    Running {
        pid: i32,
        application: String,
        user: Option<String>,
        /// `active`, `idle in transaction`, ...
        state: Option<String>,
        /// The first line of its current or last statement, at most [`QUERY_CHARS`]
        /// characters: a statement may carry values or secrets, so no more of it is read.
        query: String,
    },
    /// A row of `pg_prepared_xacts`: no session; it lives until `COMMIT/ROLLBACK PREPARED`.
    Prepared { gid: String, owner: Option<String> },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OtherSlot {
    pub name: String,
    /// `logical` or `physical`.
    pub slot_type: String,
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    pub database: Option<String>,
}

/// One reason WAL is kept, with how many bytes it accounts for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub bytes: u64,
    #[serde(flatten)]
    pub holder: Holder,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Holder {
    /// Nothing streams from the slot: the WAL after its confirmed position waits for a consumer.
    PgcdcStopped,
    /// pgcdc receives but has not made durable (and so not confirmed) this much.
    PgcdcLag,
    /// The walsender has not decoded and sent this much yet.
    ServerSending { walsender: Walsender },
    /// `restart_lsn` stays behind the confirmed position for a transaction still open; `None`
    /// when no visible transaction is old enough (it just ended, or pgcdc's role cannot see
    /// other users' sessions).
    Transaction { transaction: Option<Transaction> },
    /// Another slot keeps more WAL than ours.
    OtherSlot { slot: OtherSlot },
}

impl Holder {
    /// The metric label: a fixed set, see [`Holder::LABELS`].
    pub fn label(&self) -> &'static str {
        match self {
            Holder::PgcdcStopped => "pgcdc_stopped",
            Holder::PgcdcLag => "pgcdc_lag",
            Holder::ServerSending { .. } => "server_sending",
            Holder::Transaction { .. } => "transaction",
            Holder::OtherSlot { .. } => "other_slot",
        }
    }

    /// Every value of the `cause` label of `pgcdc_slot_wal_held_bytes`.
    pub const LABELS: [&'static str; 5] = [
        "pgcdc_stopped",
        "pgcdc_lag",
        "server_sending",
        "transaction",
        "other_slot",
    ];
}

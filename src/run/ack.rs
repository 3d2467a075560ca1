//! The acknowledgement rule, the heart of the delivery promise: what pgcdc may report to
//! PostgreSQL as flushed.
//!
//! PostgreSQL discards WAL (and will never re-send a transaction) once pgcdc reports a position
//! as flushed, so that position may only move past a transaction once the file holding its rows
//! is durable in the sink, or once pgcdc knows it had nothing to write. The rule, in full:
//! - a closed window, once its files are published, makes its last transaction durable;
//! - while nothing is buffered (no open window, no open transaction, no upload in flight),
//!   everything received is durable or was never ours, so the server's current position (its
//!   keepalive) can be confirmed, and the slot does not hold WAL for an idle table;
//! - a transaction at or before the durable commit LSN is written already: a replay skips it;
//! - positions only move forward.
//!
//! Pure: no I/O and no clock of its own (the caller passes `now`), so each case is a unit test.
//! The caller writes the checkpoint with the positions it returns, then reports `flush`.
//! May import only [`crate::lsn`].

use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// Positions to record in the checkpoint and to report to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Commit LSN of the last transaction whose rows are all durable.
    pub commit: Lsn,
    /// The position PostgreSQL may discard WAL before.
    pub flush: Lsn,
}

#[derive(Debug)]
pub struct Ack {
    durable: Position,
    /// Windows handed to the upload thread whose outcome is not known yet. While any is
    /// pending, nothing past them may be acknowledged.
    pending_uploads: usize,
    /// Commit and end LSN of the last transaction received.
    last_received: Option<(Lsn, Lsn)>,
    /// When the checkpoint was last written: an idle confirmation writes it at most once per
    /// `idle_interval`, not at every keepalive or empty transaction.
    last_saved: Instant,
    idle_interval: Duration,
}

impl Ack {
    /// Starts from the checkpoint's positions.
    pub fn new(durable: Position, idle_interval: Duration, now: Instant) -> Ack {
        Ack {
            durable,
            pending_uploads: 0,
            last_received: None,
            last_saved: now,
            idle_interval,
        }
    }

    pub fn durable(&self) -> Position {
        self.durable
    }

    /// Whether a transaction committed at `commit_lsn` is already durable, so a replay of it is
    /// skipped rather than written twice.
    pub fn covers(&self, commit_lsn: Lsn) -> bool {
        commit_lsn <= self.durable.commit
    }

    /// A transaction was received in full.
    pub fn received(&mut self, commit: Lsn, end: Lsn) {
        self.last_received = Some((commit, end));
    }

    /// A closed window went to the upload thread.
    pub fn submitted(&mut self) {
        self.pending_uploads += 1;
    }

    pub fn uploads_pending(&self) -> usize {
        self.pending_uploads
    }

    /// The upload thread reported on a window (success or failure).
    pub fn upload_finished(&mut self) {
        self.pending_uploads = self.pending_uploads.saturating_sub(1);
    }

    /// A window whose last transaction is `last_commit` (commit and end LSN) is durable. Returns
    /// the new positions, or `None` when they do not move.
    pub fn window_durable(&mut self, last_commit: Option<(Lsn, Lsn)>) -> Option<Position> {
        let (commit, end) = last_commit?;
        if commit <= self.durable.commit && end <= self.durable.flush {
            return None;
        }
        Some(self.advance(commit, end))
    }

    /// Confirms the server's position while nothing is buffered: `buffered` is whether an open
    /// window or transaction holds anything, `wal_end` the server's keepalive position if any.
    /// Unless `force`d (at shutdown), at most once per idle interval.
    pub fn idle(
        &mut self,
        buffered: bool,
        wal_end: Option<Lsn>,
        force: bool,
        now: Instant,
    ) -> Option<Position> {
        if buffered || self.pending_uploads > 0 {
            return None;
        }
        let (commit, end) = self.last_received.unwrap_or_default();
        let flush = end.max(wal_end.unwrap_or_default());
        if flush <= self.durable.flush {
            return None;
        }
        if !force && now.saturating_duration_since(self.last_saved) < self.idle_interval {
            return None;
        }
        Some(self.advance(commit, flush))
    }

    /// The checkpoint was written at `now`.
    pub fn saved(&mut self, now: Instant) {
        self.last_saved = now;
    }

    fn advance(&mut self, commit: Lsn, flush: Lsn) -> Position {
        self.durable = Position {
            commit: self.durable.commit.max(commit),
            flush: self.durable.flush.max(flush),
        };
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn at(commit: u64, flush: u64) -> Position {
        Position {
            commit: Lsn::new(commit),
            flush: Lsn::new(flush),
        }
    }

    fn ack(t0: Instant) -> Ack {
        Ack::new(at(100, 110), INTERVAL, t0)
    }

    #[test]
    fn a_durable_window_acknowledges_its_last_transaction() {
        let t0 = Instant::now();
        let mut a = ack(t0);
        a.submitted();
        a.upload_finished();
        assert_eq!(
            a.window_durable(Some((Lsn::new(200), Lsn::new(210)))),
            Some(at(200, 210))
        );
        assert!(a.covers(Lsn::new(200)));
        assert!(!a.covers(Lsn::new(201)));
    }

    #[test]
    fn positions_never_move_back() {
        let mut a = ack(Instant::now());
        assert_eq!(a.window_durable(Some((Lsn::new(50), Lsn::new(60)))), None);
        assert_eq!(
            a.window_durable(None),
            None,
            "a window without transactions"
        );
        assert_eq!(a.durable(), at(100, 110));
    }

    #[test]
    fn nothing_is_confirmed_while_anything_is_buffered_or_uploading() {
        let t0 = Instant::now();
        let later = t0 + INTERVAL * 2;
        let mut a = ack(t0);
        a.received(Lsn::new(300), Lsn::new(310));
        assert_eq!(a.idle(true, Some(Lsn::new(400)), true, later), None);
        a.submitted();
        assert_eq!(
            a.idle(false, Some(Lsn::new(400)), true, later),
            None,
            "a window in flight holds the position back"
        );
        a.upload_finished();
        assert_eq!(
            a.idle(false, Some(Lsn::new(400)), false, later),
            Some(at(300, 400))
        );
    }

    #[test]
    fn idle_confirmations_are_rate_limited_unless_forced() {
        let t0 = Instant::now();
        let mut a = ack(t0);
        let soon = t0 + INTERVAL / 2;
        assert_eq!(a.idle(false, Some(Lsn::new(500)), false, soon), None);
        assert_eq!(
            a.idle(false, Some(Lsn::new(500)), true, soon),
            Some(at(100, 500)),
            "shutdown confirms at once"
        );
        a.saved(soon);
        assert_eq!(
            a.idle(false, Some(Lsn::new(600)), false, soon + INTERVAL / 2),
            None
        );
        assert_eq!(
            a.idle(false, Some(Lsn::new(600)), false, soon + INTERVAL),
            Some(at(100, 600))
        );
        assert_eq!(
            a.idle(false, Some(Lsn::new(600)), true, soon + INTERVAL * 3),
            None,
            "nothing new to confirm"
        );
    }

    #[test]
    fn an_empty_transaction_alone_is_confirmed_by_its_end() {
        let t0 = Instant::now();
        let mut a = ack(t0);
        a.received(Lsn::new(700), Lsn::new(710));
        assert_eq!(
            a.idle(false, None, false, t0 + INTERVAL),
            Some(at(700, 710))
        );
        assert!(a.covers(Lsn::new(700)));
    }
}

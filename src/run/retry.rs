//! When reconnecting stops helping: the same error, again and again, with nothing made durable
//! in between. A loop like that hides a fault (a slot another consumer holds, a publication
//! that was dropped) while WAL piles up behind the slot, so pgcdc stops with the error after
//! `source.max_retries` such tries.

use super::error::RunError;

/// Consecutive failed connections that ended in one and the same error.
#[derive(Debug, Default)]
pub(super) struct Repeats {
    last: Option<String>,
    tries: u32,
}

impl Repeats {
    /// Records a connection that ended in `error`; `progressed` when the checkpoint moved during
    /// it. Returns how many connections in a row ended in this same error (0 for errors that
    /// are waited out rather than counted, see [`RunError::counts_as_a_retry`]).
    pub fn record(&mut self, error: &RunError, progressed: bool) -> u32 {
        if progressed || !error.counts_as_a_retry() {
            self.last = None;
            self.tries = 0;
        }
        if !error.counts_as_a_retry() {
            return 0;
        }
        let text = error.repeat_key();
        if self.last.as_deref() == Some(text.as_str()) {
            self.tries += 1;
        } else {
            self.last = Some(text);
            self.tries = 1;
        }
        self.tries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    fn in_use(pid: i32) -> RunError {
        RunError::SlotInUse {
            slot: "pgcdc".to_owned(),
            pid,
        }
    }

    fn unreachable() -> RunError {
        RunError::Source(SourceError::Closed)
    }

    #[test]
    fn the_same_error_again_and_again_is_counted() {
        let mut repeats = Repeats::default();
        assert_eq!(repeats.record(&in_use(7), false), 1);
        assert_eq!(repeats.record(&in_use(7), false), 2);
        assert_eq!(repeats.record(&in_use(7), false), 3);
        // Another consumer (another pid) holding it is still the same error.
        assert_eq!(repeats.record(&in_use(8), false), 4);
        // Another error starts a new count.
        let invalidated = RunError::SlotInvalidated {
            slot: "pgcdc".to_owned(),
            reason: "wal_removed".to_owned(),
            durable: super::super::error::Durable(None),
        };
        assert_eq!(repeats.record(&invalidated, false), 1);
    }

    #[test]
    fn progress_in_between_starts_the_count_over() {
        let mut repeats = Repeats::default();
        repeats.record(&in_use(7), false);
        repeats.record(&in_use(7), false);
        assert_eq!(repeats.record(&in_use(7), true), 1);
    }

    #[test]
    fn a_busy_server_refusing_the_copies_connections_is_not_counted() {
        let mut repeats = Repeats::default();
        let busy = RunError::SqlConnect(tokio_postgres::Error::__private_api_timeout());
        for _ in 0..100 {
            assert_eq!(repeats.record(&busy, false), 0);
        }
    }

    #[test]
    fn an_unreachable_server_is_waited_for_not_counted() {
        let mut repeats = Repeats::default();
        repeats.record(&in_use(7), false);
        for _ in 0..100 {
            assert_eq!(repeats.record(&unreachable(), false), 0);
        }
        // And it breaks a run of the same error.
        assert_eq!(repeats.record(&in_use(7), false), 1);
    }
}

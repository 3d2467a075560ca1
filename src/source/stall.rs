//! When to give the replication connection up because pgcdc cannot take more changes.
//!
//! The stream task stops reading the socket while the pipeline's channel is full. A walsender
//! whose socket is full blocks, and a blocked walsender cannot die: a checkpoint that must
//! invalidate the slot (`max_slot_wal_keep_size`), `pg_terminate_backend` and a fast shutdown
//! all wait on it, for as long as pgcdc does not read. So the socket may stay unread only
//! briefly: when the sink is down the pipeline will not move until it is back, and pgcdc closes
//! the connection at once; when the pipeline is merely slow (a large upload), it waits up to
//! `source.stall_timeout`. The server keeps everything from the slot's confirmed position, so
//! closing loses nothing: the reconnect reads it again.

use std::fmt;
use std::time::Duration;

/// How long a sink must have failed, and the socket gone unread, before the connection is closed:
/// long enough that one retried request of a working sink does not end a stream.
pub const SINK_OUTAGE_GRACE: Duration = Duration::from_secs(1);

/// Why the connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The sink failed every request for `failing` while the socket went unread for `unread`.
    SinkDown { failing: Duration, unread: Duration },
    /// The pipeline took nothing for `unread`, the configured bound.
    Pipeline { unread: Duration },
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::SinkDown { failing, unread } => write!(
                f,
                "the sink has failed every request for {} and pgcdc could not take more changes for {}",
                secs(*failing),
                secs(*unread)
            ),
            Stall::Pipeline { unread } => write!(
                f,
                "pgcdc could not take more changes for {} (source.stall_timeout)",
                secs(*unread)
            ),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The rule, apart from any clock or socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPolicy {
    /// `source.stall_timeout`: the longest the socket may go unread while the sink works.
    pub timeout: Duration,
}

impl StallPolicy {
    /// Whether to close, given how long the socket has gone unread and how long the sink has
    /// been failing (`None` while it answers).
    pub fn verdict(&self, unread: Duration, sink_failing: Option<Duration>) -> Option<Stall> {
        if let Some(failing) = sink_failing
            && failing >= SINK_OUTAGE_GRACE
            && unread >= SINK_OUTAGE_GRACE
        {
            return Some(Stall::SinkDown { failing, unread });
        }
        (unread >= self.timeout).then_some(Stall::Pipeline { unread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: StallPolicy = StallPolicy {
        timeout: Duration::from_secs(60),
    };

    #[test]
    fn a_sink_outage_closes_the_connection_within_the_grace() {
        let failing = Some(Duration::from_secs(30));
        assert_eq!(POLICY.verdict(Duration::from_millis(500), failing), None);
        assert_eq!(
            POLICY.verdict(SINK_OUTAGE_GRACE, failing),
            Some(Stall::SinkDown {
                failing: Duration::from_secs(30),
                unread: SINK_OUTAGE_GRACE
            })
        );
    }

    #[test]
    fn one_failed_request_of_a_working_sink_does_not() {
        let just_failed = Some(Duration::from_millis(200));
        assert_eq!(POLICY.verdict(Duration::from_secs(5), just_failed), None);
    }

    #[test]
    fn a_slow_pipeline_with_a_working_sink_waits_for_the_timeout() {
        assert_eq!(POLICY.verdict(Duration::from_secs(59), None), None);
        assert_eq!(
            POLICY.verdict(Duration::from_secs(60), None),
            Some(Stall::Pipeline {
                unread: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn the_reason_says_what_happened() {
        let text = Stall::SinkDown {
            failing: Duration::from_secs(3),
            unread: Duration::from_millis(1500),
        }
        .to_string();
        assert!(
            text.contains("sink has failed every request for 3.0 s"),
            "{text}"
        );
        assert!(text.contains("1.5 s"), "{text}");
    }
}

//! `pgcdc check`: PostgreSQL 18's `idle_replication_slot_timeout` against
//! `source.maintenance_window`. The server invalidates a slot that nobody streams from for longer
//! than the timeout; a pgcdc stopped for a longer maintenance than that comes back to a lost slot
//! and has to copy every table again. A warning, not a failure: pgcdc works today.

use std::time::Duration;

use super::Finding;
use crate::slot_forecast::{IDLE_TIMEOUT_SQL, about};
use crate::source::Connection;

/// The finding, or none on a server without the setting (before 18).
pub(super) async fn check(conn: &mut Connection, window: Duration) -> Option<Finding> {
    match conn.simple_query(IDLE_TIMEOUT_SQL).await {
        Err(e) => Some(Finding::fail("idle timeout", e)),
        Ok(result) => {
            let seconds = result.first("idle_timeout_seconds")?.parse::<f64>().ok()?;
            Some(judge(seconds, window))
        }
    }
}

/// The decision, apart from the server: `timeout_seconds` 0 means off.
pub(super) fn judge(timeout_seconds: f64, window: Duration) -> Finding {
    let what = "idle timeout";
    if timeout_seconds <= 0.0 {
        return Finding::pass(what, "idle_replication_slot_timeout = 0 (off)");
    }
    let window_seconds = window.as_secs_f64();
    if timeout_seconds < window_seconds {
        Finding::warn(
            what,
            format!(
                "idle_replication_slot_timeout = {} is shorter than source.maintenance_window = {}: a pgcdc stopped, or waiting out an S3 outage, for longer than {} loses its slot (the server invalidates it, and `pgcdc slot reset` with a fresh copy of every table follows). Set it to at least the window (ALTER SYSTEM SET idle_replication_slot_timeout = '{}'; SELECT pg_reload_conf()), or 0 to turn it off",
                about(timeout_seconds),
                about(window_seconds),
                about(timeout_seconds),
                setting_value(window)
            ),
        )
    } else {
        Finding::pass(
            what,
            format!(
                "idle_replication_slot_timeout = {} covers source.maintenance_window = {}",
                about(timeout_seconds),
                about(window_seconds)
            ),
        )
    }
}

/// A duration as a PostgreSQL time setting, in the largest unit that keeps it whole.
fn setting_value(d: Duration) -> String {
    let s = d.as_secs().max(1);
    match s {
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}min", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_timeout_shorter_than_the_window_warns_and_says_what_to_set() {
        let f = judge(12.0 * 3600.0, DAY);
        assert_eq!(f.level, Level::Warn);
        assert!(f.ok(), "a warning does not fail the check");
        assert!(
            f.detail.starts_with(
                "idle_replication_slot_timeout = 12 h is shorter than source.maintenance_window = 1 d: a pgcdc stopped, or waiting out an S3 outage, for longer than 12 h loses its slot"
            ),
            "{}",
            f.detail
        );
        assert!(
            f.detail
                .contains("ALTER SYSTEM SET idle_replication_slot_timeout = '1d'"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn off_or_long_enough_passes() {
        assert_eq!(judge(0.0, DAY).level, Level::Pass);
        assert!(judge(0.0, DAY).detail.contains("off"));
        assert_eq!(judge(86_400.0, DAY).level, Level::Pass);
        assert_eq!(judge(7.0 * 86_400.0, DAY).level, Level::Pass);
    }

    #[test]
    fn the_suggested_value_is_a_valid_setting() {
        assert_eq!(setting_value(DAY), "1d");
        assert_eq!(setting_value(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(setting_value(Duration::from_secs(90 * 60)), "90min");
        assert_eq!(setting_value(Duration::from_secs(61)), "61s");
        assert_eq!(setting_value(Duration::ZERO), "1s");
    }
}

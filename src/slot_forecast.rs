//! When will the server invalidate the slot? A forecast from the two limits PostgreSQL enforces:
//!
//! - `max_slot_wal_keep_size` (13+): `pg_replication_slots.safe_wal_size` bytes of WAL can still
//!   be written before the slot is past the limit; divided by the server's recent WAL rate, that
//!   is a time. A server that writes no WAL never reaches it, so a zero rate is "not approaching",
//!   never a division by zero.
//! - `idle_replication_slot_timeout` (18+, 0 = off): a slot inactive for longer is invalidated;
//!   `pg_replication_slots.inactive_since` (17+, NULL while a process streams) says since when.
//!
//! Both are enforced at checkpoints, so the forecast is the earliest moment, not the exact one.
//! Pure: the monitor and `pgcdc slot status` read the figures ([`LIMITS_SQL`]) and the clock,
//! this module only does arithmetic and words.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lsn::Lsn;

/// How far back the WAL rate looks: long enough that one burst (a `VACUUM`, a bulk load) does not
/// swing the forecast by hours, short enough to follow a workload that changed.
pub const RATE_WINDOW: Duration = Duration::from_secs(300);

/// `idle_replication_slot_timeout` in seconds as an SQL expression, NULL before 18. Read with its
/// unit from `pg_settings`, so that the unit never matters here.
macro_rules! idle_timeout_seconds {
    () => {
        "(select setting::float8 * case unit when 'ms' then 0.001 when 'min' then 60 when 'h' then 3600 when 'd' then 86400 else 1 end \
           from pg_catalog.pg_settings where name = 'idle_replication_slot_timeout')"
    };
}

/// The settings and slot columns the forecast needs beyond `pg_replication_slots.safe_wal_size`,
/// readable on every supported version: NULL where the server lacks the setting (before 18) or
/// the column (before 17), and `inactive_seconds` NULL while the slot is active. `$1` is the slot.
pub const LIMITS_SQL: &str = concat!(
    "select ",
    idle_timeout_seconds!(),
    " as idle_timeout_seconds, \
     (select extract(epoch from now() - (to_jsonb(s)->>'inactive_since')::timestamptz)::float8 \
        from pg_catalog.pg_replication_slots s where slot_name = $1) as inactive_seconds"
);

/// One column, `idle_timeout_seconds` (NULL before 18), for `pgcdc check`: no parameters, so
/// it runs on the replication connection too.
pub const IDLE_TIMEOUT_SQL: &str = concat!(
    "select ",
    idle_timeout_seconds!(),
    "::text as idle_timeout_seconds"
);

/// The server's WAL rate from successive readings of `pg_current_wal_lsn()`, averaged over
/// [`RATE_WINDOW`] (or what the readings span so far).
#[derive(Debug, Clone)]
pub struct WalRate {
    window: Duration,
    readings: VecDeque<(Instant, Lsn)>,
}

impl WalRate {
    pub fn new(window: Duration) -> WalRate {
        WalRate {
            window,
            readings: VecDeque::new(),
        }
    }

    pub fn record(&mut self, at: Instant, lsn: Lsn) {
        // A position going backwards is another server (a restore, a failover to a standby that
        // had less): what came before says nothing about this one.
        if self.readings.back().is_some_and(|&(_, last)| lsn < last) {
            self.readings.clear();
        }
        self.readings.push_back((at, lsn));
        // Keep the newest reading at least a window old, so the average spans the whole window.
        while self
            .readings
            .get(1)
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) >= self.window)
        {
            self.readings.pop_front();
        }
    }

    /// Bytes per second; `None` until two readings some time apart exist.
    pub fn bytes_per_second(&self) -> Option<f64> {
        let (&(t0, l0), &(t1, l1)) = (self.readings.front()?, self.readings.back()?);
        let seconds = t1.saturating_duration_since(t0).as_secs_f64();
        (seconds > 0.0).then(|| l1.saturating_sub(l0) as f64 / seconds)
    }
}

/// What limits the slot, as the server reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Limits {
    /// `safe_wal_size`: NULL when `max_slot_wal_keep_size = -1`. Negative once the slot is past it.
    pub safe_wal_size: Option<i64>,
    /// `idle_replication_slot_timeout`; `None` when it is 0 (off) or the server predates it.
    pub idle_timeout_seconds: Option<f64>,
    /// How long the slot has been inactive; `None` while a process streams from it.
    pub inactive_seconds: Option<f64>,
}

impl Limits {
    /// From the raw columns: a timeout of 0 is off, and a negative idle time (clock skew between
    /// `inactive_since` and `now()` on a standby-synced slot) counts as just now.
    pub fn new(
        safe_wal_size: Option<i64>,
        idle_timeout_seconds: Option<f64>,
        inactive_seconds: Option<f64>,
    ) -> Limits {
        Limits {
            safe_wal_size,
            idle_timeout_seconds: idle_timeout_seconds.filter(|t| *t > 0.0),
            inactive_seconds: inactive_seconds.map(|s| s.max(0.0)),
        }
    }
}

/// Which limit the forecast is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    MaxSlotWalKeepSize,
    IdleReplicationSlotTimeout,
}

impl Limit {
    pub fn setting(self) -> &'static str {
        match self {
            Limit::MaxSlotWalKeepSize => "max_slot_wal_keep_size",
            Limit::IdleReplicationSlotTimeout => "idle_replication_slot_timeout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Forecast {
    /// Neither limit applies to the slot: it can hold WAL and stay idle for ever.
    NotLimited,
    /// A limit applies but is not counting down: no WAL is written (or the rate is not measured
    /// yet), and the idle timeout only starts once the slot is inactive.
    NotApproaching,
    /// The server may invalidate the slot in `seconds` (0: at its next checkpoint).
    Eta { seconds: f64, by: Limit },
}

impl Forecast {
    pub fn eta_seconds(&self) -> Option<f64> {
        match self {
            Forecast::Eta { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }
}

/// The smaller of the two countdowns; `wal_rate` in bytes per second (`None`: not measured yet).
pub fn forecast(limits: &Limits, wal_rate: Option<f64>) -> Forecast {
    let by_wal = limits.safe_wal_size.and_then(|safe| {
        if safe <= 0 {
            return Some(0.0);
        }
        wal_rate
            .filter(|r| *r > 0.0 && r.is_finite())
            .map(|r| safe as f64 / r)
    });
    let by_idle = match (limits.idle_timeout_seconds, limits.inactive_seconds) {
        (Some(timeout), Some(inactive)) => Some((timeout - inactive).max(0.0)),
        _ => None,
    };
    let eta = match (by_wal, by_idle) {
        (Some(w), Some(i)) if i < w => Some((i, Limit::IdleReplicationSlotTimeout)),
        (Some(w), _) => Some((w, Limit::MaxSlotWalKeepSize)),
        (None, Some(i)) => Some((i, Limit::IdleReplicationSlotTimeout)),
        (None, None) => None,
    };
    match eta {
        Some((seconds, by)) => Forecast::Eta { seconds, by },
        None if limits.safe_wal_size.is_some() || limits.idle_timeout_seconds.is_some() => {
            Forecast::NotApproaching
        }
        None => Forecast::NotLimited,
    }
}

/// The forecast in one line of words, for `pgcdc slot status`.
pub fn describe(limits: &Limits, wal_rate: Option<f64>, forecast: &Forecast) -> String {
    let left = |safe: i64| {
        if safe <= 0 {
            format!(
                "max_slot_wal_keep_size: {} past the limit",
                bytes(safe.unsigned_abs())
            )
        } else {
            format!(
                "max_slot_wal_keep_size: {} left",
                bytes(safe.unsigned_abs())
            )
        }
    };
    let idle = |timeout: f64| match limits.inactive_seconds {
        Some(inactive) => format!(
            "inactive for {} of idle_replication_slot_timeout = {}",
            about(inactive),
            about(timeout)
        ),
        None => format!(
            "idle_replication_slot_timeout = {} counts once the slot is inactive",
            about(timeout)
        ),
    };
    let mut text = match forecast {
        Forecast::NotLimited => {
            return "not limited (max_slot_wal_keep_size = -1, no idle timeout)".to_owned();
        }
        Forecast::Eta { seconds, by } if *seconds <= 0.0 => format!(
            "imminent: past {}, the next checkpoint may invalidate the slot",
            by.setting()
        ),
        Forecast::Eta {
            seconds,
            by: Limit::MaxSlotWalKeepSize,
        } => format!(
            "in about {} at the current WAL rate ({}/s)",
            about(*seconds),
            bytes(wal_rate.unwrap_or(0.0) as u64)
        ),
        Forecast::Eta {
            seconds,
            by: Limit::IdleReplicationSlotTimeout,
        } => format!("in about {} unless a consumer resumes", about(*seconds)),
        Forecast::NotApproaching => match wal_rate {
            _ if limits.safe_wal_size.is_none() => "not approaching".to_owned(),
            Some(_) => "not approaching: the server writes no WAL at the moment".to_owned(),
            None => "not approaching as far as known: the WAL rate is not measured yet".to_owned(),
        },
    };
    let details: Vec<String> = limits
        .safe_wal_size
        .map(left)
        .into_iter()
        .chain(limits.idle_timeout_seconds.map(idle))
        .collect();
    text.push_str(&format!(" ({})", details.join("; ")));
    text
}

/// A duration as a person says it, to two units: `45 s`, `12 min`, `3 h 20 min`, `2 d 4 h`.
pub fn about(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0).round() as u64
    } else {
        u64::MAX
    };
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: i64 = 1 << 30;

    fn rate_over(readings: &[(u64, u64)]) -> Option<f64> {
        let start = Instant::now();
        let mut rate = WalRate::new(RATE_WINDOW);
        for &(secs, lsn) in readings {
            rate.record(start + Duration::from_secs(secs), Lsn::new(lsn));
        }
        rate.bytes_per_second()
    }

    #[test]
    fn the_rate_needs_two_readings_apart() {
        assert_eq!(rate_over(&[]), None);
        assert_eq!(rate_over(&[(0, 100)]), None);
        assert_eq!(rate_over(&[(5, 100), (5, 200)]), None);
        assert_eq!(rate_over(&[(0, 0), (10, 1000)]), Some(100.0));
        assert_eq!(rate_over(&[(0, 500), (10, 500)]), Some(0.0));
    }

    #[test]
    fn the_rate_is_smoothed_over_the_window_and_forgets_older_readings() {
        // A burst of 60 MB in the first 15 s, then 1 kB/s: over 5 minutes the burst still counts.
        let mut readings = vec![(0, 0), (15, 60_000_000)];
        readings.extend((1..=19).map(|i| (15 + i * 15, 60_000_000 + i * 15_000)));
        let smoothed = rate_over(&readings).unwrap();
        assert!((smoothed - 60_285_000.0 / 300.0).abs() < 1.0, "{smoothed}");
        // Ten minutes later the burst has left the window.
        readings.extend((20..=60).map(|i| (15 + i * 15, 60_000_000 + i * 15_000)));
        let later = rate_over(&readings).unwrap();
        assert!((later - 1000.0).abs() < 1.0, "{later}");
    }

    #[test]
    fn a_position_going_backwards_starts_the_rate_over() {
        assert_eq!(rate_over(&[(0, 0), (10, 10_000), (20, 50)]), None);
        assert_eq!(
            rate_over(&[(0, 0), (10, 10_000), (20, 50), (30, 1050)]),
            Some(100.0)
        );
    }

    #[test]
    fn nothing_limits_the_slot() {
        let limits = Limits::new(None, None, Some(3600.0));
        assert_eq!(forecast(&limits, Some(1e6)), Forecast::NotLimited);
        // A timeout of 0 is off.
        let limits = Limits::new(None, Some(0.0), Some(3600.0));
        assert_eq!(forecast(&limits, None), Forecast::NotLimited);
        assert_eq!(
            describe(&limits, None, &Forecast::NotLimited),
            "not limited (max_slot_wal_keep_size = -1, no idle timeout)"
        );
    }

    #[test]
    fn safe_wal_size_over_the_rate() {
        let limits = Limits::new(Some(GIB), None, None);
        let f = forecast(&limits, Some(131_072.0));
        assert_eq!(
            f,
            Forecast::Eta {
                seconds: 8192.0,
                by: Limit::MaxSlotWalKeepSize
            }
        );
        let text = describe(&limits, Some(131_072.0), &f);
        assert!(
            text.starts_with("in about 2 h 16 min at the current WAL rate ("),
            "{text}"
        );
        assert!(
            text.ends_with("(max_slot_wal_keep_size: 1.1 GB left)")
                || text.ends_with("(max_slot_wal_keep_size: 1.0 GiB left)"),
            "{text}"
        );
    }

    #[test]
    fn a_zero_or_unknown_rate_is_not_approaching() {
        let limits = Limits::new(Some(GIB), None, None);
        for rate in [Some(0.0), None, Some(f64::NAN)] {
            assert_eq!(
                forecast(&limits, rate),
                Forecast::NotApproaching,
                "{rate:?}"
            );
        }
        let text = describe(&limits, Some(0.0), &Forecast::NotApproaching);
        assert!(
            text.starts_with("not approaching: the server writes no WAL"),
            "{text}"
        );
        let text = describe(&limits, None, &Forecast::NotApproaching);
        assert!(text.contains("not measured yet"), "{text}");
    }

    #[test]
    fn past_the_limit_is_now_whatever_the_rate() {
        for safe in [0, -5 * GIB] {
            let limits = Limits::new(Some(safe), None, None);
            for rate in [None, Some(0.0), Some(1e9)] {
                assert_eq!(
                    forecast(&limits, rate),
                    Forecast::Eta {
                        seconds: 0.0,
                        by: Limit::MaxSlotWalKeepSize
                    }
                );
            }
        }
        let limits = Limits::new(Some(-GIB), None, None);
        let text = describe(&limits, Some(1.0), &forecast(&limits, Some(1.0)));
        assert!(
            text.starts_with("imminent: past max_slot_wal_keep_size"),
            "{text}"
        );
        assert!(text.contains("past the limit"), "{text}");
    }

    #[test]
    fn the_idle_timeout_counts_only_while_inactive() {
        // Active: the timer does not run.
        let active = Limits::new(None, Some(86_400.0), None);
        assert_eq!(forecast(&active, Some(1e6)), Forecast::NotApproaching);
        let text = describe(&active, Some(1e6), &Forecast::NotApproaching);
        assert_eq!(
            text,
            "not approaching (idle_replication_slot_timeout = 1 d counts once the slot is inactive)"
        );
        // Inactive for 23 h 20 min of a day.
        let idle = Limits::new(None, Some(86_400.0), Some(84_000.0));
        let f = forecast(&idle, None);
        assert_eq!(
            f,
            Forecast::Eta {
                seconds: 2400.0,
                by: Limit::IdleReplicationSlotTimeout
            }
        );
        assert_eq!(
            describe(&idle, None, &f),
            "in about 40 min unless a consumer resumes (inactive for 23 h 20 min of idle_replication_slot_timeout = 1 d)"
        );
        // Past the timeout: now.
        let over = Limits::new(None, Some(60.0), Some(600.0));
        assert_eq!(forecast(&over, None).eta_seconds(), Some(0.0));
    }

    #[test]
    fn the_nearer_limit_wins() {
        // 1 GiB at 1 MiB/s = 1024 s; idle timeout 10 min away.
        let limits = Limits::new(Some(GIB), Some(3600.0), Some(3000.0));
        assert_eq!(
            forecast(&limits, Some(1_048_576.0)),
            Forecast::Eta {
                seconds: 600.0,
                by: Limit::IdleReplicationSlotTimeout
            }
        );
        assert_eq!(
            forecast(&limits, Some(4.0 * 1_048_576.0)),
            Forecast::Eta {
                seconds: 256.0,
                by: Limit::MaxSlotWalKeepSize
            }
        );
        // No WAL written: the idle timeout still counts.
        assert_eq!(forecast(&limits, Some(0.0)).eta_seconds(), Some(600.0));
    }

    #[test]
    fn limits_clean_up_their_inputs() {
        let l = Limits::new(Some(1), Some(-1.0), Some(-3.0));
        assert_eq!(l.idle_timeout_seconds, None);
        assert_eq!(l.inactive_seconds, Some(0.0));
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(about(0.0), "0 s");
        assert_eq!(about(45.4), "45 s");
        assert_eq!(about(720.0), "12 min");
        assert_eq!(about(3.0 * 3600.0), "3 h");
        assert_eq!(about(12_000.0), "3 h 20 min");
        assert_eq!(about(2.0 * 86_400.0 + 4.0 * 3600.0 + 59.0), "2 d 4 h");
        assert_eq!(about(86_400.0), "1 d");
        assert_eq!(about(-5.0), "0 s");
    }

    #[test]
    fn the_forecast_serialises_with_its_state() {
        let f = Forecast::Eta {
            seconds: 1.5,
            by: Limit::IdleReplicationSlotTimeout,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"state":"eta","seconds":1.5,"by":"idle_replication_slot_timeout"}"#
        );
        assert_eq!(
            serde_json::to_string(&Forecast::NotLimited).unwrap(),
            r#"{"state":"not_limited"}"#
        );
    }
}

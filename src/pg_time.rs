//! PostgreSQL's clock: timestamps on the wire (commit times, status updates) count microseconds
//! since 2000-01-01 00:00:00 UTC, not since the Unix epoch. The one place that conversion lives.

/// Microseconds between the Unix epoch and PostgreSQL's epoch.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;

/// The wall clock in Unix microseconds.
pub fn now_unix_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A PostgreSQL timestamp as Unix microseconds.
pub fn to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// Unix microseconds as a PostgreSQL timestamp.
pub fn from_unix_micros(unix_micros: i64) -> i64 {
    unix_micros.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_epoch() {
        assert_eq!(to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(from_unix_micros(to_unix_micros(42)), 42);
    }
}

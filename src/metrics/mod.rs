//! Every metric pgcdc exports, registered in one place; the HTTP listener that serves them is in
//! `http.rs`.
//!
//! Names follow Prometheus conventions: `pgcdc_` prefix, base units, `_total` for counters.
//! Every series carries a constant `slot` label (one pgcdc serves one slot); other labels take
//! bounded values only (table names, op codes, error kinds), never an LSN or an object key.
//! Positions are exported as integers (bytes since 0/0), so differences are byte counts.
//!
//! Two gauges are derived at scrape time from timestamps the pipeline keeps
//! ([`Live`]): the open window's age and the replication lag in seconds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use crate::lsn::Lsn;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, TextEncoder,
};

pub mod copies;
mod http;
mod registry;
pub mod tables;
pub use copies::{CopyGauges, CopySeries};
pub use http::{bind, serve};
use registry::build;
pub use tables::{TableCounters, TableSeries};

/// Every metric name, so dashboards, alert rules and tests can be checked against one list.
pub mod names {
    pub const ROWS: &str = "pgcdc_rows_total";
    pub const TRANSACTIONS: &str = "pgcdc_transactions_total";
    pub const FILES: &str = "pgcdc_files_written_total";
    pub const BYTES: &str = "pgcdc_bytes_written_total";
    pub const RECEIVED_LSN: &str = "pgcdc_received_lsn";
    pub const WRITTEN_LSN: &str = "pgcdc_written_lsn";
    pub const ACKNOWLEDGED_LSN: &str = "pgcdc_acknowledged_lsn";
    pub const SERVER_WAL_LSN: &str = "pgcdc_server_wal_lsn";
    pub const LAG_BYTES: &str = "pgcdc_replication_lag_bytes";
    pub const LAG_SECONDS: &str = "pgcdc_replication_lag_seconds";
    pub const RETAINED_WAL: &str = "pgcdc_slot_retained_wal_bytes";
    pub const SAFE_WAL_SIZE: &str = "pgcdc_slot_safe_wal_size_bytes";
    pub const SLOT_INVALIDATION_ETA: &str = "pgcdc_slot_invalidation_eta_seconds";
    pub const WAL_STATUS: &str = "pgcdc_slot_wal_status";
    pub const SLOT_ACTIVE: &str = "pgcdc_slot_active";
    pub const SLOT_FAILOVER: &str = "pgcdc_slot_failover";
    pub const SLOT_STATS: &str = "pgcdc_slot_stats";
    pub const WAL_HELD: &str = "pgcdc_slot_wal_held_bytes";
    pub const OLDEST_XACT_AGE: &str = "pgcdc_slot_oldest_xact_age_seconds";
    pub const STREAMING: &str = "pgcdc_streaming";
    pub const WINDOW_AGE: &str = "pgcdc_window_age_seconds";
    pub const UPLOAD_SECONDS: &str = "pgcdc_upload_duration_seconds";
    pub const FLUSH_SECONDS: &str = "pgcdc_flush_duration_seconds";
    pub const COMMIT_TO_DURABLE: &str = "pgcdc_commit_to_durable_seconds";
    pub const SINK_ERRORS: &str = "pgcdc_sink_errors_total";
    pub const ERRORS: &str = "pgcdc_errors_total";
    pub const RECONNECTS: &str = "pgcdc_reconnects_total";
    pub const REPEATED_FAILURES: &str = "pgcdc_repeated_failures";
    pub const COPY_ROWS: &str = "pgcdc_copy_rows";
    pub const COPY_ROWS_ESTIMATED: &str = "pgcdc_copy_rows_estimated";
    pub const COPY_CHUNKS_DONE: &str = "pgcdc_copy_chunks_done";
    pub const COPY_CHUNKS: &str = "pgcdc_copy_chunks";
    pub const COPY_ETA_SECONDS: &str = "pgcdc_copy_eta_seconds";
    pub const COPY_CHUNKS_REDONE: &str = "pgcdc_copy_chunks_redone_total";
    pub const COPY_RESTARTS: &str = "pgcdc_copy_restarts_total";
    pub const BUILD_INFO: &str = "pgcdc_build_info";
}

/// The label values of a vector metric with no labels of its own (the slot is a const label):
/// one that must stay absent until it has a value.
pub const NO_LABELS: &[&str] = &[];

/// Every `kind` of `pgcdc_errors_total` (what `RunError::kind` returns). Each series exists at 0
/// from the first scrape: `increase()` over a counter that appears at 1 misses the first error,
/// and a dashboard cannot tell "no errors" from "not scraped".
pub const ERROR_KINDS: &[&str] = &["source", "decode", "sink", "checkpoint", "snapshot", "slot"];

/// Every `kind` of `pgcdc_sink_errors_total` (the labels of `sink::retry::Failure`), at 0 from the
/// first scrape for the same reason.
pub const SINK_ERROR_KINDS: &[&str] = &[
    "timeout",
    "connection",
    "response",
    "throttled",
    "server",
    "permanent",
];

/// The op codes of `pgcdc_rows_total` (insert, update, delete, truncate, snapshot read).
pub const ROW_OPS: &[&str] = &["I", "U", "D", "T", "R"];

pub struct Metrics {
    pub registry: Registry,
    /// Per table: rows by op, files, bytes and chunks read again (see [`tables`]).
    pub tables: TableCounters,
    pub transactions: IntCounter,
    pub received_lsn: IntGauge,
    pub written_lsn: IntGauge,
    pub acknowledged_lsn: IntGauge,
    pub server_wal_lsn: IntGauge,
    pub lag_bytes: IntGauge,
    pub lag_seconds: Gauge,
    pub retained_wal: IntGauge,
    /// No labels, but a vector so it is absent until set: a server without the column, or a
    /// slot with no `max_slot_wal_keep_size` limit (NULL), must not read as "0 bytes left".
    pub safe_wal_size: IntGaugeVec,
    /// Seconds until the server may invalidate the slot (see `slot_forecast`); absent, like
    /// `safe_wal_size`, while nothing limits the slot or no limit is approaching.
    pub slot_invalidation_eta: GaugeVec,
    pub wal_status: IntGaugeVec,
    pub slot_active: IntGauge,
    /// Absent before PostgreSQL 17, which has no failover slots.
    pub slot_failover: IntGaugeVec,
    pub slot_stats: IntGaugeVec,
    /// The slot's retained WAL split by what holds it (`crate::wal_hold`), one series per cause.
    pub wal_held: IntGaugeVec,
    /// No labels, but a vector so it is absent while no transaction holds the slot's decoding
    /// position: "0 seconds" would claim a transaction that does not exist.
    pub oldest_xact_age: GaugeVec,
    pub streaming: IntGauge,
    pub window_age: Gauge,
    pub upload_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub commit_to_durable: Histogram,
    pub sink_errors: IntCounterVec,
    pub errors: IntCounterVec,
    pub reconnects: IntCounter,
    /// Connections in a row that ended in the same error; pgcdc stops at `source.max_retries`.
    pub repeated_failures: IntGauge,
    /// Per table being copied: rows durable, the planner's estimate, chunks durable and planned,
    /// seconds left at the current rate.
    pub copies: CopyGauges,
}

/// Timestamps and flags the pipeline updates and the scrape turns into gauges.
#[derive(Debug, Default)]
pub struct Live {
    /// Unix microseconds when the open window got its first row; 0 when none is open.
    pub window_opened_us: AtomicI64,
    /// Unix microseconds of the newest moment pgcdc was fully caught up: the commit time of the
    /// last durable change, or the time an idle stream confirmed there was nothing to send.
    pub caught_up_us: AtomicI64,
    /// Whether the replication stream is up.
    pub streaming: AtomicBool,
    /// Replication lag in bytes from the last slot poll; -1 before the first poll.
    pub lag_bytes: AtomicI64,
    /// Unix microseconds since when every request to the sink has failed and is being retried;
    /// 0 while the sink answers. The replication stream reads it to tell a sink outage (close
    /// the connection at once, so the server is never held) from a slow upload (wait).
    pub sink_failing_since_us: AtomicI64,
    /// Failed sink requests since the last one that succeeded.
    pub sink_failures: AtomicU32,
}

/// Failed requests in a row that make a sink "down": one reset connection followed by a long,
/// successful retry is a working sink, and must not end the replication stream.
pub const SINK_DOWN_AFTER_FAILURES: u32 = 3;

impl Live {
    /// Records a failed sink request; the outage started at the first of a run of failures.
    pub fn sink_failed(&self) {
        let now = crate::pg_time::now_unix_micros();
        let _ = self.sink_failing_since_us.compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.sink_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a sink request that succeeded: any outage is over.
    pub fn sink_answered(&self) {
        self.sink_failing_since_us.store(0, Ordering::Relaxed);
        self.sink_failures.store(0, Ordering::Relaxed);
    }

    /// How long the sink has been down: failing, [`SINK_DOWN_AFTER_FAILURES`] requests or more
    /// in a row, without a success in between; `None` while it answers.
    pub fn sink_failing_for(&self) -> Option<std::time::Duration> {
        let since = self.sink_failing_since_us.load(Ordering::Relaxed);
        let failures = self.sink_failures.load(Ordering::Relaxed);
        (since > 0 && failures >= SINK_DOWN_AFTER_FAILURES).then(|| {
            let micros = (crate::pg_time::now_unix_micros() - since).max(0);
            std::time::Duration::from_micros(micros.unsigned_abs())
        })
    }
}

/// Brings the per-table counters into existence at 0 for the tables pgcdc captures (`schema.table`),
/// once it knows them: `increase()` and the "no files" alerts then see the first file as a change
/// from 0 rather than a series that appears.
pub fn init_tables(tables: &[String]) {
    let m = get();
    for table in tables {
        m.tables.table(table);
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static LIVE: OnceLock<Live> = OnceLock::new();

/// Sets the slot label; call once at start-up before anything records a metric.
pub fn init(slot: &str) {
    #[allow(clippy::expect_used)]
    let _ = METRICS.get_or_init(|| build(slot).expect("metric names are valid and unique"));
}

/// The process-wide metrics. Registration of these fixed, distinct names cannot fail; if it
/// ever did, that is a programming error caught by the first test that touches metrics.
pub fn get() -> &'static Metrics {
    #[allow(clippy::expect_used)]
    METRICS.get_or_init(|| build("").expect("metric names are valid and unique"))
}

pub fn live() -> &'static Live {
    LIVE.get_or_init(|| Live {
        lag_bytes: AtomicI64::new(-1),
        ..Live::default()
    })
}

/// An LSN as a gauge value (LSNs stay far below 2^63 in practice).
pub fn lsn_value(lsn: Lsn) -> i64 {
    i64::try_from(lsn.as_u64()).unwrap_or(i64::MAX)
}

/// Whether pgcdc should receive traffic: streaming, and the last known lag within `max_lag`.
pub fn ready(max_lag_bytes: u64) -> bool {
    let live = live();
    let lag = live.lag_bytes.load(Ordering::Relaxed);
    live.streaming.load(Ordering::Relaxed)
        && (lag < 0 || u64::try_from(lag).unwrap_or(0) <= max_lag_bytes)
}

pub fn render() -> Vec<u8> {
    let m = get();
    let live = live();
    let now = crate::pg_time::now_unix_micros();
    let opened = live.window_opened_us.load(Ordering::Relaxed);
    m.window_age.set(if opened > 0 {
        (now - opened).max(0) as f64 / 1e6
    } else {
        0.0
    });
    let caught_up = live.caught_up_us.load(Ordering::Relaxed);
    m.lag_seconds.set(if caught_up > 0 {
        (now - caught_up).max(0) as f64 / 1e6
    } else {
        0.0
    });
    m.streaming
        .set(i64::from(live.streaming.load(Ordering::Relaxed)));
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug in `build`.
    let _ = TextEncoder::new().encode(&m.registry.gather(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_is_down_only_after_failures_in_a_row() {
        let live = Live::default();
        live.sink_failed();
        assert_eq!(
            live.sink_failing_for(),
            None,
            "one failed request is not an outage"
        );
        live.sink_failed();
        live.sink_failed();
        assert!(live.sink_failing_for().is_some());
        live.sink_answered();
        assert_eq!(live.sink_failing_for(), None);
        live.sink_failed();
        assert_eq!(
            live.sink_failing_for(),
            None,
            "a success starts the count over"
        );
    }

    #[test]
    fn every_named_metric_is_exported() {
        init("test_slot");
        let m = get();
        let t = m.tables.table("public.t");
        t.files.inc();
        t.bytes.inc();
        m.wal_status.with_label_values(&["reserved"]).set(1);
        m.slot_stats.with_label_values(&["spill_bytes"]).set(0);
        m.safe_wal_size.with_label_values(NO_LABELS).set(1);
        m.slot_failover.with_label_values(NO_LABELS).set(1);
        m.slot_invalidation_eta
            .with_label_values(NO_LABELS)
            .set(3600.0);
        m.wal_held.with_label_values(&["transaction"]).set(1);
        m.oldest_xact_age.with_label_values(NO_LABELS).set(1.0);
        let text = String::from_utf8(render()).unwrap();
        for name in [
            names::ROWS,
            names::TRANSACTIONS,
            names::FILES,
            names::BYTES,
            names::RECEIVED_LSN,
            names::WRITTEN_LSN,
            names::ACKNOWLEDGED_LSN,
            names::SERVER_WAL_LSN,
            names::LAG_BYTES,
            names::LAG_SECONDS,
            names::RETAINED_WAL,
            names::SAFE_WAL_SIZE,
            names::SLOT_INVALIDATION_ETA,
            names::WAL_STATUS,
            names::SLOT_ACTIVE,
            names::SLOT_FAILOVER,
            names::SLOT_STATS,
            names::WAL_HELD,
            names::OLDEST_XACT_AGE,
            names::STREAMING,
            names::WINDOW_AGE,
            names::UPLOAD_SECONDS,
            names::FLUSH_SECONDS,
            names::COMMIT_TO_DURABLE,
            names::SINK_ERRORS,
            names::ERRORS,
            names::RECONNECTS,
            names::REPEATED_FAILURES,
            names::BUILD_INFO,
        ] {
            assert!(
                text.contains(&format!("\n{name}")) || text.starts_with(name),
                "{name} missing"
            );
        }
        assert!(text.contains("slot=\"test_slot\""), "{text}");
    }

    fn scrape(m: &Metrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn labelled_counters_exist_at_zero_from_the_start() {
        let m = build("fresh").unwrap();
        let text = scrape(&m);
        for (family, kinds) in [
            (names::ERRORS, ERROR_KINDS),
            (names::SINK_ERRORS, SINK_ERROR_KINDS),
        ] {
            for kind in kinds {
                let series = format!("{family}{{kind=\"{kind}\",slot=\"fresh\"}} 0");
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
        // Unlabelled counters are there from the start anyway.
        for name in [names::TRANSACTIONS, names::RECONNECTS] {
            assert!(
                text.contains(&format!("{name}{{slot=\"fresh\"}} 0")),
                "{name}:\n{text}"
            );
        }
        // What must stay absent until it has a value does.
        for name in [
            names::SAFE_WAL_SIZE,
            names::SLOT_INVALIDATION_ETA,
            names::SLOT_FAILOVER,
        ] {
            assert!(
                !text.contains(&format!("\n{name}{{")),
                "{name} present:\n{text}"
            );
        }
    }

    #[test]
    fn per_table_counters_exist_at_zero_once_the_tables_are_known() {
        init("test_slot");
        init_tables(&["public.zero".to_owned()]);
        let text = String::from_utf8(render()).unwrap();
        for op in ROW_OPS {
            let series = format!(
                "{}{{op=\"{op}\",table=\"public.zero\",slot=\"test_slot\"}} 0",
                names::ROWS
            );
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for name in [names::FILES, names::BYTES, names::COPY_CHUNKS_REDONE] {
            let series = format!("{name}{{table=\"public.zero\",slot=\"test_slot\"}} 0");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }
}

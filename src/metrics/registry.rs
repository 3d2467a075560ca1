//! The registration of every metric family, with its help text and labels: the one place a
//! metric comes into being. Counters whose label values are known up front start at 0 here.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use super::copies::CopyGauges;
use super::tables::TableCounters;
use super::{ERROR_KINDS, Metrics, SINK_ERROR_KINDS, names};

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

pub(super) fn build(slot: &str) -> Result<Metrics, prometheus::Error> {
    use names::*;
    let labels = HashMap::from([("slot".to_owned(), slot.to_owned())]);
    let registry = Registry::new_custom(None, Some(labels))?;
    let r = &registry;
    let int = |name: &str, help: &str| IntGauge::new(name, help);
    let latency_buckets = vec![
        0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let build_info = IntGaugeVec::new(
        Opts::new(BUILD_INFO, "Always 1; labels carry the pgcdc version"),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    register(r, build_info)?;
    let metrics = Metrics {
        tables: register(
            r,
            TableCounters::new(
                [ROWS, FILES, BYTES, COPY_CHUNKS_REDONE, COPY_RESTARTS],
                [
                    "Change rows written, by table and op (I, U, D, T, R)",
                    "Change files made durable",
                    "Bytes of change files made durable",
                    "Chunks read again because the stream changed them in a way the watermarks cannot settle",
                    "Copies started over because the table was rewritten (VACUUM FULL, CLUSTER, TRUNCATE, a rewriting ALTER TABLE) or its columns changed while they ran",
                ],
            )?,
        )?,
        transactions: register(
            r,
            IntCounter::new(TRANSACTIONS, "Transactions received from the server")?,
        )?,
        received_lsn: register(r, int(RECEIVED_LSN, "WAL position of the last message received")?)?,
        written_lsn: register(
            r,
            int(WRITTEN_LSN, "Commit LSN of the last change made durable in the sink")?,
        )?,
        acknowledged_lsn: register(
            r,
            int(ACKNOWLEDGED_LSN, "Position acknowledged to the server as flushed (the checkpoint)")?,
        )?,
        server_wal_lsn: register(r, int(SERVER_WAL_LSN, "The server's current WAL position")?)?,
        lag_bytes: register(
            r,
            int(LAG_BYTES, "Server WAL position minus the slot's confirmed flush position")?,
        )?,
        lag_seconds: register(
            r,
            Gauge::new(
                LAG_SECONDS,
                "Seconds since pgcdc was last caught up: now minus the commit time of the last durable change (0 while idle and caught up)",
            )?,
        )?,
        retained_wal: register(
            r,
            int(RETAINED_WAL, "WAL the slot holds back: server WAL position minus restart_lsn")?,
        )?,
        safe_wal_size: register(
            r,
            IntGaugeVec::new(
                Opts::new(SAFE_WAL_SIZE, "WAL that can still be written before the slot is invalidated (only with max_slot_wal_keep_size)"),
                &[],
            )?,
        )?,
        slot_invalidation_eta: register(
            r,
            GaugeVec::new(
                Opts::new(SLOT_INVALIDATION_ETA, "Seconds until the server may invalidate the slot: safe_wal_size at the recent WAL rate, or what is left of idle_replication_slot_timeout, whichever is sooner (absent when nothing limits the slot or no limit is approaching)"),
                &[],
            )?,
        )?,
        wal_status: register(
            r,
            IntGaugeVec::new(
                Opts::new(WAL_STATUS, "1 for the slot's wal_status (reserved, extended, unreserved, lost)"),
                &["status"],
            )?,
        )?,
        slot_active: register(r, int(SLOT_ACTIVE, "1 when a process streams from the slot")?)?,
        slot_failover: register(
            r,
            IntGaugeVec::new(
                Opts::new(SLOT_FAILOVER, "1 when the slot is a failover slot that standbys copy (PostgreSQL 17+)"),
                &[],
            )?,
        )?,
        slot_stats: register(
            r,
            IntGaugeVec::new(
                Opts::new(SLOT_STATS, "pg_stat_replication_slots counters (PostgreSQL 14+): spill_txns, spill_count, spill_bytes, stream_txns, stream_count, stream_bytes, total_txns, total_bytes, mem_exceeded_count (19+)"),
                &["stat"],
            )?,
        )?,
        wal_held: register(
            r,
            IntGaugeVec::new(
                Opts::new(WAL_HELD, "WAL held, by cause: pgcdc_stopped, pgcdc_lag (not durable yet), server_sending (not sent yet) and transaction (an open transaction holds restart_lsn) add up to the slot's retained WAL; other_slot is what the oldest other slot retains when it is more"),
                &["cause"],
            )?,
        )?,
        oldest_xact_age: register(
            r,
            GaugeVec::new(
                Opts::new(OLDEST_XACT_AGE, "Age of the oldest open transaction (running or prepared) that holds the slot's decoding position; absent when none does"),
                &[],
            )?,
        )?,
        streaming: register(r, int(STREAMING, "1 while the replication stream is connected")?)?,
        window_age: register(
            r,
            Gauge::new(WINDOW_AGE, "Age of the open window (0 when none is open)")?,
        )?,
        upload_seconds: register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(UPLOAD_SECONDS, "Time to make one file durable in the sink, retries included")
                    .buckets(latency_buckets.clone()),
            )?,
        )?,
        flush_seconds: register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(FLUSH_SECONDS, "Time to close a window: finish its files, publish them and write the checkpoint")
                    .buckets(latency_buckets.clone()),
            )?,
        )?,
        commit_to_durable: register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(COMMIT_TO_DURABLE, "Per transaction with captured rows: from its commit on the server to its file being durable and checkpointed")
                    .buckets(vec![
                        0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 5.5, 6.0, 7.0, 8.0, 10.0, 15.0, 30.0, 60.0,
                        90.0, 120.0, 300.0, 600.0,
                    ]),
            )?,
        )?,
        sink_errors: register(
            r,
            IntCounterVec::new(
                Opts::new(SINK_ERRORS, "Failed sink requests, by kind (timeout, connection, response, throttled, server, permanent)"),
                &["kind"],
            )?,
        )?,
        errors: register(
            r,
            IntCounterVec::new(
                Opts::new(ERRORS, "Errors that stopped or restarted replication, by kind"),
                &["kind"],
            )?,
        )?,
        reconnects: register(
            r,
            IntCounter::new(RECONNECTS, "Times the replication connection was re-established after an interruption")?,
        )?,
        repeated_failures: register(
            r,
            int(REPEATED_FAILURES, "Reconnects in a row that ended in the same error (0 once one makes progress); pgcdc stops when it reaches source.max_retries")?,
        )?,
        copies: register(
            r,
            CopyGauges::new(
                [COPY_ROWS, COPY_ROWS_ESTIMATED, COPY_CHUNKS_DONE, COPY_CHUNKS, COPY_ETA_SECONDS],
                [
                    "Rows of the table copy under way that are durable",
                    "Rows the table copy under way expects (pg_class.reltuples when it began)",
                    "Chunks of the table copy under way that are durable",
                    "Chunks the table copy under way reads in all",
                    "Seconds the table copy under way still needs at its rate so far (the copy lag)",
                ],
            )?,
        )?,
        registry,
    };
    for kind in ERROR_KINDS {
        metrics.errors.with_label_values(&[kind]);
    }
    for kind in SINK_ERROR_KINDS {
        metrics.sink_errors.with_label_values(&[kind]);
    }
    Ok(metrics)
}

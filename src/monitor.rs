//! Reads the slot's figures from the server on an ordinary connection, at an interval, into the
//! metrics; and, when configured, emits the heartbeat message that keeps an idle slot moving.
//!
//! Best effort by design: a failed poll is logged and tried again at the next tick, and never
//! stops replication. One finding does stop it: a slot the server has invalidated, which no
//! reconnect can cure ([`run`] returns it, and `pgcdc run` exits naming the reason). What a
//! server version lacks (`pg_stat_replication_slots` before 14, the slot's `failover` column
//! before 17, `mem_exceeded_count` before 19) simply leaves its metric absent.
//!
//! Each poll also feeds the server's WAL position into a [`WalRate`], so the forecast of the
//! slot's invalidation ([`slot_forecast`]) divides by the rate of the last few minutes.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::config::Config;
use crate::lsn::Lsn;
use crate::metrics;
use crate::slot_forecast::{self, Limits, RATE_WINDOW, WalRate};
use crate::wal_hold;

const SLOT_STATS: &[&str] = &[
    "spill_txns",
    "spill_count",
    "spill_bytes",
    "stream_txns",
    "stream_count",
    "stream_bytes",
    "total_txns",
    "total_bytes",
    // PostgreSQL 19: times the decoding of a transaction exceeded logical_decoding_work_mem.
    "mem_exceeded_count",
];

/// The server invalidated pgcdc's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInvalidated {
    /// Why, in words ([`crate::source::slot::invalidation`]).
    pub reason: String,
}

/// Runs until the process ends, or returns once the slot is seen invalidated.
pub async fn run(config: Config) -> SlotInvalidated {
    let mut ticker = tokio::time::interval(config.metrics.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heartbeat = config.source.heartbeat.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut client: Option<tokio_postgres::Client> = None;
    let mut warned = false;
    let mut wal_rate = WalRate::new(RATE_WINDOW);
    loop {
        let beat = tokio::select! {
            _ = ticker.tick() => false,
            _ = tick(&mut heartbeat) => true,
        };
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match crate::source::sql_connect(&config.source).await {
                Ok((c, connection)) => {
                    tokio::spawn(connection);
                    Some(c)
                }
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "Cannot connect to read slot metrics; retrying at the next poll");
                        warned = true;
                    }
                    continue;
                }
            };
        }
        let Some(c) = &client else { continue };
        let result = if beat {
            c.batch_execute("select pg_logical_emit_message(false, 'pgcdc.heartbeat', now()::text)")
                .await
                .map(|_| {
                    debug!("Heartbeat emitted");
                    None
                })
        } else {
            poll(c, config.source.slot.as_str(), &mut wal_rate).await
        };
        match result {
            Ok(Some(reason)) => return SlotInvalidated { reason },
            Ok(None) => warned = false,
            Err(e) if !warned => {
                warn!(error = %e, heartbeat = beat, "Reading slot metrics failed; retrying at the next poll");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Both reads, each whatever the other did: what holds the WAL must not cost the slot's figures,
/// nor the other way round. Returns why the slot is invalidated, if it is.
async fn poll(
    client: &tokio_postgres::Client,
    slot: &str,
    wal_rate: &mut WalRate,
) -> Result<Option<String>, tokio_postgres::Error> {
    let figures = poll_slot(client, slot, wal_rate).await;
    let holds = record_holds(client, slot).await;
    match (figures, holds) {
        // A lost slot is news even if the second read failed.
        (Ok(Some(lost)), _) => Ok(Some(lost)),
        (figures, holds) => holds.and(figures),
    }
}

/// Reads the slot's figures into the metrics; returns why the slot is invalidated, if it is.
async fn poll_slot(
    client: &tokio_postgres::Client,
    slot: &str,
    wal_rate: &mut WalRate,
) -> Result<Option<String>, tokio_postgres::Error> {
    let m = metrics::get();
    let row = client
        .query_one(
            "select pg_current_wal_lsn()::text, \
                    (select to_jsonb(s)::text from pg_catalog.pg_replication_slots s where slot_name = $1), \
                    current_setting('server_version_num')::int",
            &[&slot],
        )
        .await?;
    let current: Lsn = row.get::<_, String>(0).parse().unwrap_or_default();
    m.server_wal_lsn.set(metrics::lsn_value(current));
    wal_rate.record(Instant::now(), current);
    let version: i32 = row.get(2);
    let Some(text) = row.get::<_, Option<String>>(1) else {
        m.slot_active.set(0);
        let _ = m
            .slot_invalidation_eta
            .remove_label_values(metrics::NO_LABELS);
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    // Decided before any further query, so a failing one cannot hide a lost slot.
    let invalidated = crate::source::slot::invalidation(
        json["wal_status"].as_str(),
        json["invalidation_reason"].as_str(),
        json["conflicting"].as_bool(),
    );
    let lsn = |key: &str| json[key].as_str().and_then(|s| s.parse::<Lsn>().ok());
    m.slot_active
        .set(i64::from(json["active"].as_bool().unwrap_or(false)));
    if let Some(confirmed) = lsn("confirmed_flush_lsn") {
        let lag = i64::try_from(current.saturating_sub(confirmed)).unwrap_or(i64::MAX);
        m.lag_bytes.set(lag);
        metrics::live().lag_bytes.store(lag, Ordering::Relaxed);
    }
    if let Some(restart) = lsn("restart_lsn") {
        m.retained_wal
            .set(i64::try_from(current.saturating_sub(restart)).unwrap_or(i64::MAX));
    }
    if let Some(status) = json["wal_status"].as_str() {
        for known in ["reserved", "extended", "unreserved", "lost"] {
            m.wal_status
                .with_label_values(&[known])
                .set(i64::from(known == status));
        }
    }
    match json["safe_wal_size"].as_i64() {
        Some(safe) => m
            .safe_wal_size
            .with_label_values(metrics::NO_LABELS)
            .set(safe),
        // NULL: no max_slot_wal_keep_size, nothing to count down to.
        None => {
            let _ = m.safe_wal_size.remove_label_values(metrics::NO_LABELS);
        }
    }
    if invalidated.is_some() {
        return Ok(invalidated);
    }
    let limits = client
        .query_one(slot_forecast::LIMITS_SQL, &[&slot])
        .await?;
    let limits = Limits::new(json["safe_wal_size"].as_i64(), limits.get(0), limits.get(1));
    match slot_forecast::forecast(&limits, wal_rate.bytes_per_second()).eta_seconds() {
        Some(eta) => m
            .slot_invalidation_eta
            .with_label_values(metrics::NO_LABELS)
            .set(eta),
        // Nothing limits the slot, or no limit is approaching: no countdown to show.
        None => {
            let _ = m
                .slot_invalidation_eta
                .remove_label_values(metrics::NO_LABELS);
        }
    }
    if let Some(failover) = json["failover"].as_bool() {
        m.slot_failover
            .with_label_values(metrics::NO_LABELS)
            .set(i64::from(failover));
    }
    if version >= 140000 {
        let stats = client
            .query_opt(
                "select to_jsonb(r)::text from pg_catalog.pg_stat_replication_slots r where slot_name = $1",
                &[&slot],
            )
            .await?;
        if let Some(row) = stats {
            let json: serde_json::Value =
                serde_json::from_str(&row.get::<_, String>(0)).unwrap_or_default();
            for stat in SLOT_STATS {
                if let Some(value) = json[*stat].as_i64() {
                    m.slot_stats.with_label_values(&[stat]).set(value);
                }
            }
        }
    }
    Ok(invalidated)
}

/// What holds the WAL (`crate::wal_hold`): the retained WAL by cause, and the age of the
/// transaction holding the slot's decoding position, which alerts can watch before the bytes pile up.
async fn record_holds(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<(), tokio_postgres::Error> {
    let m = metrics::get();
    let facts = wal_hold::gather(client, slot).await?;
    for (cause, bytes) in wal_hold::by_label(&wal_hold::breakdown(&facts)) {
        m.wal_held
            .with_label_values(&[cause])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    match wal_hold::holder(&facts).and_then(|t| t.age_seconds) {
        Some(age) => m
            .oldest_xact_age
            .with_label_values(metrics::NO_LABELS)
            .set(age),
        None => {
            let _ = m.oldest_xact_age.remove_label_values(metrics::NO_LABELS);
        }
    }
    Ok(())
}

//! Slot safety: pgcdc never holds the primary hostage, and a slot the server invalidated stops
//! pgcdc loudly instead of a silent loop.
//!
//! A walsender whose socket pgcdc does not read cannot be stopped by the server: a checkpoint
//! that must invalidate the slot (`max_slot_wal_keep_size`) and `pg_terminate_backend` wait
//! for it. These tests take S3 away while a writer fills the WAL, and ask the server to do
//! exactly those things.

mod common;

use std::time::{Duration, Instant};

use common::s3::Outage;
use common::*;

const DEADLINE: Duration = Duration::from_secs(120);
/// The fixtures' window (`1s`) and half as much again.
const WINDOW_AND_A_HALF: Duration = Duration::from_millis(1500);
/// What "promptly" means for a checkpoint or a termination while pgcdc waits on S3. Without
/// the stall rule they never finish (the walsender blocks on a full socket for ever).
const PROMPTLY: Duration = Duration::from_secs(15);

const FILLER_DDL: &str = "
    create table public.filler (id bigserial primary key, pad text not null);
    create publication pgcdc_pub for table public.filler;
";

/// About 21 MB of WAL and of pgoutput: 20,000 rows of 1,000 bytes, too short to be TOASTed or
/// compressed, so all of it reaches pgcdc's socket.
const FILL_ROUND: &str =
    "insert into public.filler (pad) select repeat('x', 1000) from generate_series(1, 20000)";

/// Runs `sql` on a connection of its own and fails the test if it takes longer than `PROMPTLY`;
/// returns the first column of its first row.
async fn promptly(cluster: &PgCluster, what: &str, sql: &str) -> (Duration, Option<String>) {
    let client = cluster.client("shop").await;
    let started = Instant::now();
    match tokio::time::timeout(PROMPTLY, client.simple_query(sql)).await {
        Ok(Ok(messages)) => {
            let first = messages.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            });
            (started.elapsed(), first)
        }
        Ok(Err(e)) => panic!("{what} failed: {}", pg_error(&e)),
        Err(_) => panic!(
            "{what} did not complete within {PROMPTLY:?}: the server is held by pgcdc\n{}",
            cluster.log_tail(30)
        ),
    }
}

const ETA: &str = "pgcdc_slot_invalidation_eta_seconds";

/// The shipped alert rules, run by promtool over the scraped forecast (one sample a minute): the
/// page fires. Rule files are checked against ALERTS, so the annotations' wording is not pinned.
fn the_alert_fires_on(etas: &[f64]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/alerts/pgcdc.rules.yml");
    let values: Vec<String> = etas.iter().map(|v| format!("{v:.3}")).collect();
    let last = etas.len() - 1;
    let test = format!(
        "rule_files: ['{rules}']
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{ETA}{{job=\"pgcdc\", instance=\"pgcdc:9464\", slot=\"pgcdc\"}}'
        values: '{values}'
    promql_expr_test:
      - expr: ALERTS{{alertname=\"PgcdcSlotInvalidationImminent\", alertstate=\"firing\"}}
        eval_time: {last}m
        exp_samples:
          - labels: 'ALERTS{{alertname=\"PgcdcSlotInvalidationImminent\", alertstate=\"firing\", severity=\"critical\", job=\"pgcdc\", instance=\"pgcdc:9464\", slot=\"pgcdc\"}}'
            value: 1
",
        rules = rules.display(),
        values = values.join(" "),
    );
    let file = dir.path().join("scraped.test.yml");
    std::fs::write(&file, test).expect("promtool test file");
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "the page did not fire over the scraped forecast:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `public.filler` published, pgcdc streaming it to moto through an outage proxy (`server`:
/// extra postgresql.conf settings, `metrics`: lines for its `[metrics]`), the first copy confirmed.
async fn streaming_to_s3_behind_a_proxy(
    server: &[(&str, &str)],
    metrics: &str,
) -> (Fixture, Outage, std::path::PathBuf, Pgcdc) {
    let setup = Fixture::builder()
        .ddl(FILLER_DDL)
        .settings(server)
        .table("public.filler", &["id"])
        .moto("pgcdc-test", "cdc")
        .window("1s")
        .deadline(DEADLINE)
        .start()
        .await;
    let outage = Outage::start(setup.moto().port()).await;
    let config = setup.s3_config(&outage.endpoint(), "");
    if !metrics.is_empty() {
        add_settings(&config, "metrics", metrics);
    }
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .wait_slot_confirms_now("pgcdc", "the first copy is confirmed", DEADLINE)
        .await;
    (setup, outage, config, pgcdc)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_never_holds_the_primary_and_the_invalidated_slot_stops_pgcdc() {
    let (setup, outage, config, mut pgcdc) = streaming_to_s3_behind_a_proxy(
        &[
            ("max_slot_wal_keep_size", "64MB"),
            ("max_wal_size", "256MB"),
        ],
        "poll_interval = \"250ms\"",
    )
    .await;

    // The forecast, scraped all through the outage.
    let addr = metrics_listen(&config);
    let etas = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let sampler = tokio::spawn({
        let etas = etas.clone();
        async move {
            loop {
                if let Some((_, body)) = common::http::get(&addr, "/metrics").await
                    && let Some(eta) = common::http::sample(&body, ETA)
                {
                    etas.lock().expect("etas").push(eta);
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    });

    outage.take_down().await;
    let mut checkpoints = Vec::new();
    let mut terminated = false;
    let mut lost = false;
    for round in 0..14 {
        setup.cluster.execute(FILL_ROUND).await;
        // The walsender, if pgcdc still has one, must die when told to.
        let walsender = setup
            .cluster
            .query_scalar(
                "select active_pid::text from pg_replication_slots where slot_name = 'pgcdc'",
            )
            .await;
        if round >= 1
            && let Some(pid) = walsender
        {
            // PostgreSQL 14+ waits for the backend to exit, up to the timeout (ms).
            let sql = if setup.cluster.major().await >= 14 {
                format!("select pg_terminate_backend({pid}, 10000)")
            } else {
                format!("select pg_terminate_backend({pid})")
            };
            let (_, done) = promptly(
                &setup.cluster,
                "pg_terminate_backend of the walsender",
                &sql,
            )
            .await;
            // false: the backend was still there when the timeout passed.
            assert_eq!(
                done.as_deref(),
                Some("t"),
                "the walsender did not exit when told to"
            );
            terminated = true;
        }
        checkpoints.push(promptly(&setup.cluster, "CHECKPOINT", "checkpoint").await.0);
        let status = setup
            .cluster
            .query_scalar("select wal_status from pg_replication_slots where slot_name = 'pgcdc'")
            .await;
        if status.as_deref() == Some("lost") {
            lost = true;
            break;
        }
    }
    assert!(
        lost,
        "the server never invalidated the slot (checkpoints took {checkpoints:?})\n{}",
        pgcdc.output_text()
    );
    eprintln!("checkpoints while S3 was down took {checkpoints:?}");
    sampler.abort();
    let etas = etas.lock().expect("etas").clone();
    eprintln!("{ETA} while S3 was down: {etas:?}");
    assert!(etas.len() >= 3, "the forecast was exported: {etas:?}");
    assert!(
        etas.last() < etas.first(),
        "the forecast falls while pgcdc waits on the sink: {etas:?}"
    );
    the_alert_fires_on(&etas);
    // pgcdc gave its connection up while S3 was down, or was terminated; either way it did not
    // hold the server.
    assert!(
        terminated
            || pgcdc
                .output_text()
                .contains("closed the replication connection"),
        "{}",
        pgcdc.output_text()
    );

    // S3 is still down: the lost slot must stop pgcdc all the same.
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("replication slot pgcdc was invalidated by the server"),
        "{output}"
    );
    let named = if setup.cluster.major().await >= 17 {
        "wal_removed"
    } else {
        "wal_status is lost"
    };
    assert!(output.contains(named), "the reason is named: {output}");
    assert!(output.contains("last durable position is"), "{output}");
    assert!(output.contains("pgcdc slot reset --yes"), "{output}");
    outage.bring_back().await;
}

/// The socket task gives the connection up within about a second of S3 going away once pgcdc
/// cannot take more, and pgcdc comes back by itself when S3 returns: nothing lost, nothing
/// doubled.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_given_up_during_an_outage_resumes_exactly_when_s3_returns() {
    let (setup, outage, _, mut pgcdc) = streaming_to_s3_behind_a_proxy(&[], "").await;

    outage.take_down().await;
    // pgcdc fills its windows until the upload queue is full, then stops taking changes. A
    // window closes only once it is older than `window` (1 s), so the rounds come at most one per
    // window and a half: a burst that pgcdc reads into one or two windows leaves its queue with
    // room, and it rightly keeps its connection (nothing is left unread). Bounded: ~20 MB a round.
    let mut rounds = 0;
    while rounds < 30 {
        setup.cluster.execute(FILL_ROUND).await;
        rounds += 1;
        if pgcdc
            .output_within("closed the replication connection", WINDOW_AND_A_HALF)
            .await
        {
            break;
        }
    }
    eprintln!("pgcdc gave the connection up after {rounds} rounds");
    pgcdc
        .wait_output("closed the replication connection", DEADLINE)
        .await;
    setup
        .cluster
        .wait_true(
            "the slot is released while S3 is down",
            DEADLINE,
            "select not active from pg_replication_slots where slot_name = 'pgcdc'",
        )
        .await;
    setup
        .cluster
        .execute("update public.filler set pad = 'y' where id % 1000 = 0; delete from public.filler where id % 999 = 0")
        .await;

    outage.bring_back().await;
    let rows = setup
        .wait_replay_matches("the replay equals the table after S3 returns")
        .await;
    assert_eq!(duplicate_keys(&rows), 0, "no change row twice");
    assert_eq!(pgcdc.try_exit(), None, "{}", pgcdc.output_text());
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// PostgreSQL 18 invalidates a slot nobody streamed from for `idle_replication_slot_timeout`;
/// pgcdc then refuses to start and names the reason and the way back.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_timeout_invalidation_stops_pgcdc_naming_it() {
    let Some(setup) = Fixture::builder()
        .ddl(FILLER_DDL)
        .table("public.filler", &["id"])
        .min_major(18)
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup.cluster.execute(FILL_ROUND).await;
    setup.wait_replay_matches("rows before the pause").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    setup
        .cluster
        .set_config("idle_replication_slot_timeout", "2s")
        .await;
    setup
        .cluster
        .wait_true(
            "the slot has been idle past the timeout",
            DEADLINE,
            "select inactive_since < now() - interval '3 seconds' from pg_replication_slots where slot_name = 'pgcdc'",
        )
        .await;
    setup.cluster.execute("checkpoint").await;
    assert_eq!(
        setup
            .cluster
            .query_scalar(
                "select invalidation_reason from pg_replication_slots where slot_name = 'pgcdc'"
            )
            .await
            .as_deref(),
        Some("idle_timeout")
    );

    let mut again = setup.run(&setup.config);
    let status = again.wait_exit(DEADLINE).await;
    let output = again.output_text();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("idle_timeout"), "{output}");
    assert!(output.contains("idle_replication_slot_timeout"), "{output}");
    assert!(output.contains("pgcdc slot reset --yes"), "{output}");
}

/// The same error on every reconnect (here: another consumer took the slot while pgcdc was
/// away) stops pgcdc after `source.max_retries` tries with that error, instead of a silent loop
/// while WAL piles up behind the slot.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_error_on_every_reconnect_stops_pgcdc_after_max_retries() {
    let setup = Fixture::builder()
        .ddl(FILLER_DDL)
        .table("public.filler", &["id"])
        .setting("source.max_retries = 2")
        .deadline(DEADLINE)
        .start()
        .await;
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .wait_slot_confirms_now("pgcdc", "the first copy is confirmed", DEADLINE)
        .await;

    // pgcdc is frozen; its walsender is ended; another consumer takes the slot.
    pgcdc.signal("STOP");
    let walsender = setup
        .cluster
        .query_scalar("select active_pid::text from pg_replication_slots where slot_name = 'pgcdc'")
        .await
        .expect("pgcdc's walsender");
    setup
        .cluster
        .execute(&format!("select pg_terminate_backend({walsender})"))
        .await;
    setup
        .cluster
        .wait_true(
            "pgcdc's walsender is gone",
            DEADLINE,
            "select not active from pg_replication_slots where slot_name = 'pgcdc'",
        )
        .await;
    let other_sink = setup.dir.path().join("other-stage");
    let other = setup.config_variant("other", |c| c.local_sink(&other_sink));
    let mut intruder = setup.run(&other);
    intruder.wait_output("Streaming changes", DEADLINE).await;

    pgcdc.signal("CONT");
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("is in use by another process"), "{output}");
    assert!(
        output.contains("the same error ended 2 connections in a row"),
        "{output}"
    );
    intruder.stop_cleanly(DEADLINE).await;
}

//! `pgcdc slot ...` against a real server: what each command does, and what it refuses.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(120);

fn slot(config: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "slot",
        args[0],
        "--config",
        config.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(&args[1..]);
    let output = pgcdc_output(&all, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (output.status.success(), text)
}

fn gap_markers(sink: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(sink.join("_pgcdc/pgcdc/gaps"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn slot_commands_inspect_repair_and_refuse() {
    let setup = Fixture::builder()
        .ddl(
            "create table public.t (id int primary key, v text);
             create publication pgcdc_pub for table public.t;
             insert into public.t select g, 'v' || g from generate_series(1, 50) g;",
        )
        .max_file_bytes("128MiB")
        .format("csv")
        .start()
        .await;
    let cluster = &setup.cluster;
    let (sink, config) = (setup.sink.clone(), setup.config.clone());

    let (ok, text) = slot(&config, &["status"]);
    assert!(ok, "{text}");
    assert!(text.contains("exists               no"), "{text}");

    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let (ok, text) = slot(&config, &["status", "--json"]);
    assert!(ok, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    assert_eq!(status["exists"], true);
    assert_eq!(status["plugin"], "pgoutput");
    assert!(status["active_pid"].is_number(), "{status}");
    assert_eq!(status["checkpoint"]["snapshot"], "done");

    // Destructive commands refuse while pgcdc holds the slot, even with --yes.
    for args in [
        &["drop", "--yes"][..],
        &["reset", "--yes"][..],
        &["advance", "--to", "FF/0", "--yes"][..],
    ] {
        let (ok, text) = slot(&config, args);
        assert!(!ok, "{args:?} must refuse: {text}");
        assert!(text.contains("is in use by pid"), "{text}");
    }
    pgcdc.stop_cleanly(DEADLINE).await;

    // No terminal and no --yes: no confirmation, nothing done.
    let (ok, text) = slot(&config, &["drop"]);
    assert!(
        !ok && text.contains("without confirmation: pass --yes"),
        "{text}"
    );
    let (ok, text) = slot(&config, &["create"]);
    assert!(!ok && text.contains("already exists"), "{text}");

    // Advance: never backwards; forward skips and says so, and pgcdc carries on.
    let (ok, text) = slot(&config, &["advance", "--to", "0/1", "--yes"]);
    assert!(!ok && text.contains("backwards"), "{text}");
    cluster
        .execute("insert into public.t values (1000, 'skipped by advance')")
        .await;
    // The insert position: with synchronous_commit=off the write position may trail the commit.
    let target = cluster
        .query_scalar("select pg_current_wal_insert_lsn()::text")
        .await
        .expect("lsn");
    // A slot advances only over WAL the server has flushed (asynchronous commit delays it).
    cluster
        .wait_true(
            "the WAL up to the target is flushed",
            DEADLINE,
            &format!("select pg_current_wal_flush_lsn() >= '{target}'::pg_lsn"),
        )
        .await;
    let (ok, text) = slot(&config, &["advance", "--to", &target, "--yes"]);
    assert!(ok, "{text}");
    assert_eq!(gap_markers(&sink).len(), 1);
    let checkpoint =
        std::fs::read_to_string(sink.join("_pgcdc/pgcdc/checkpoint.json")).expect("checkpoint");
    assert!(
        checkpoint.contains(&format!("\"flush_lsn\":\"{target}\"")),
        "{checkpoint}"
    );
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let rows = read_change_files(&sink, "public.t");
    assert!(
        rows.iter().all(|r| r.get("id") != Some("1000")),
        "the change before the advance target is skipped"
    );

    // Reset: the next run takes a fresh snapshot at the new slot, which holds the skipped row.
    let (ok, text) = slot(&config, &["reset", "--yes"]);
    assert!(ok, "{text}");
    assert!(!sink.join("_pgcdc/pgcdc/checkpoint.json").exists());
    assert_eq!(gap_markers(&sink).len(), 2);
    let mut pgcdc = Pgcdc::run(&config);
    // The copy runs beside the stream (whole, in the exported snapshot, on PostgreSQL 13).
    let copied = sink.clone();
    wait_until(
        "the fresh snapshot copies the row the advance skipped",
        DEADLINE,
        || {
            let copied = copied.clone();
            async move {
                read_change_files(&copied, "public.t")
                    .iter()
                    .any(|r| r.op == 'R' && r.get("id") == Some("1000"))
                    .then_some(())
            }
        },
    )
    .await;
    pgcdc.stop_cleanly(DEADLINE).await;

    // Reset without a snapshot recreates the slot at once.
    let (ok, text) = slot(&config, &["reset", "--no-snapshot", "--yes"]);
    assert!(ok && text.contains("recreated at"), "{text}");
    let (ok, text) = slot(&config, &["status", "--json"]);
    assert!(ok, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    assert_eq!(status["exists"], true);
    assert_eq!(status["checkpoint"]["snapshot"], "skipped");

    let (ok, text) = slot(&config, &["drop", "--yes"]);
    assert!(ok, "{text}");
    let (ok, text) = slot(&config, &["status"]);
    assert!(ok && text.contains("exists               no"), "{text}");
}

/// The counters a Grafana panel or an alert rule reads (`pgcdc_*_total`), from the files
/// themselves: each must exist from the first scrape, or `increase()` misses its first step.
fn counters_the_dashboard_and_rules_read() -> Vec<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    for file in [
        "grafana/dashboards/pgcdc.json",
        "grafana/alerts/pgcdc.rules.yml",
    ] {
        let text = std::fs::read_to_string(repo.join(file)).expect(file);
        for (at, _) in text.match_indices("pgcdc_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name.ends_with("_total") && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Issue 23: `pgcdc_slot_invalidation_eta_seconds` counts down while max_slot_wal_keep_size
/// limits the slot and a writer fills WAL, and is absent once nothing limits it; `slot status`
/// says it in words. And a fresh pgcdc exports every counter the dashboard and rules read.
#[tokio::test(flavor = "multi_thread")]
async fn the_invalidation_forecast_follows_max_slot_wal_keep_size() {
    use common::http::{get, sample};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let setup = Fixture::builder()
        .settings(&[("max_slot_wal_keep_size", "64MB")])
        .ddl(
            "create table public.t (id bigserial primary key, v text);
             create publication pgcdc_pub for table public.t;",
        )
        .setting("metrics.poll_interval = \"200ms\"")
        .start()
        .await;
    let config = setup.config.clone();
    let addr = metrics_listen(&config);
    let scrape = || {
        let addr = addr.clone();
        async move { get(&addr, "/metrics").await.map(|(_, body)| body) }
    };
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;

    // A fresh start: every counter the dashboard and the rules read is there; those that count
    // trouble are at 0, one series per kind.
    let fresh = wait_until("the first scrape", DEADLINE, scrape).await;
    let counters = counters_the_dashboard_and_rules_read();
    assert!(counters.len() >= 6, "{counters:?}");
    for name in &counters {
        assert!(
            fresh.contains(&format!("\n{name}{{")),
            "{name} is missing from a fresh pgcdc:\n{fresh}"
        );
    }
    for kind in ["source", "decode", "sink", "checkpoint", "snapshot", "slot"] {
        let series = format!("pgcdc_errors_total{{kind=\"{kind}\",slot=\"pgcdc\"}} 0\n");
        assert!(fresh.contains(&series), "{series}:\n{fresh}");
    }
    for kind in [
        "timeout",
        "connection",
        "response",
        "throttled",
        "server",
        "permanent",
    ] {
        let series = format!("pgcdc_sink_errors_total{{kind=\"{kind}\",slot=\"pgcdc\"}} 0\n");
        assert!(fresh.contains(&series), "{series}:\n{fresh}");
    }
    assert_eq!(
        sample(&fresh, "pgcdc_reconnects_total"),
        Some(0.0),
        "{fresh}"
    );

    // A writer fills WAL for as long as the test needs it, at a steady pace (a load shape, not a
    // wait): about 100 KB/s, so 64MB last minutes. Unpaced, it outruns the slot's restart_lsn
    // (which moves only with running-xacts records) and the slot is past the limit in seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = setup.cluster.client(SHOP_DB).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            let mut statements = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                client
                    .batch_execute(
                        "insert into public.t (v) select repeat('x', 200) from generate_series(1, 20)",
                    )
                    .await
                    .expect("the writer's insert");
                statements += 1;
            }
            statements
        })
    };

    let eta = wait_until(
        "the invalidation ETA appears while WAL is written",
        DEADLINE,
        || async { sample(&scrape().await?, "pgcdc_slot_invalidation_eta_seconds") },
    )
    .await;
    assert!(eta.is_finite() && eta > 0.0, "ETA {eta}");
    let metrics = scrape().await.expect("a scrape");
    assert!(
        sample(&metrics, "pgcdc_slot_safe_wal_size_bytes").is_some_and(|s| s > 0.0),
        "the ETA comes from safe_wal_size:\n{metrics}"
    );

    // `slot status` says it in words, and in JSON.
    let (ok, text) = slot(&config, &["status"]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("invalidation "))
        .unwrap_or_else(|| panic!("no invalidation line:\n{text}"));
    assert!(
        line.contains("in about ") && line.contains("max_slot_wal_keep_size: "),
        "{line}"
    );
    let (ok, text) = slot(&config, &["status", "--json"]);
    assert!(ok, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    let invalidation = &status["invalidation"];
    assert_eq!(invalidation["state"], "eta", "{status}");
    assert_eq!(invalidation["by"], "max_slot_wal_keep_size", "{status}");
    assert!(
        invalidation["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{status}"
    );
    assert!(
        invalidation["wal_rate"].as_f64().is_some_and(|r| r > 0.0),
        "{status}"
    );

    // Lift the limit (a reload suffices): nothing limits the slot, so the gauge goes away.
    // (ALTER SYSTEM refuses a multi-statement batch, which runs as one transaction.)
    let cluster = &setup.cluster;
    cluster
        .execute("alter system set max_slot_wal_keep_size = -1")
        .await;
    cluster.execute("select pg_reload_conf()").await;
    let metrics = wait_until(
        "the ETA is absent without max_slot_wal_keep_size",
        DEADLINE,
        || async {
            let body = scrape().await?;
            let polled = !body.contains("pgcdc_slot_safe_wal_size_bytes{");
            (polled && sample(&body, "pgcdc_slot_invalidation_eta_seconds").is_none())
                .then_some(body)
        },
    )
    .await;
    assert_eq!(
        sample(&metrics, "pgcdc_slot_active"),
        Some(1.0),
        "{metrics}"
    );
    let (ok, text) = slot(&config, &["status"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("invalidation         not limited (max_slot_wal_keep_size = -1"),
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    let statements = writer.await.expect("the writer");
    assert!(statements > 0);
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// Issue 23, PostgreSQL 18: `idle_replication_slot_timeout` shorter than
/// `source.maintenance_window` is a warning of `pgcdc check` that says what to set, and while
/// nobody streams from the slot `slot status` counts the timeout down.
#[tokio::test(flavor = "multi_thread")]
async fn the_idle_timeout_is_checked_against_the_maintenance_window_and_counted_down() {
    let Some(setup) = Fixture::builder()
        .ddl(
            "create table public.t (id int primary key);
             create publication pgcdc_pub for table public.t;",
        )
        .min_major(18)
        .start_if_supported()
        .await
    else {
        return;
    };
    let config = setup.config.clone();
    let path = config.to_str().expect("utf-8 path");
    let check_line = |envs: &[(&str, &str)]| {
        let output = pgcdc_output(["check", "--config", path], envs);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "a warning does not fail the check:\n{text}"
        );
        text.lines()
            .find(|l| l.contains("idle timeout"))
            .unwrap_or_else(|| panic!("no idle timeout line:\n{text}"))
            .to_owned()
    };
    assert_eq!(
        check_line(&[]),
        "ok    idle timeout idle_replication_slot_timeout = 0 (off)"
    );

    // The server setting is reloadable (and unknown before 18, so not in the fixture's settings).
    setup
        .cluster
        .execute("alter system set idle_replication_slot_timeout = '12h'")
        .await;
    setup.cluster.execute("select pg_reload_conf()").await;
    let line = check_line(&[]);
    assert!(
        line.starts_with("WARN  idle timeout idle_replication_slot_timeout = 12 h is shorter than source.maintenance_window = 1 d: a pgcdc stopped, or waiting out an S3 outage, for longer than 12 h loses its slot")
            && line.contains("ALTER SYSTEM SET idle_replication_slot_timeout = '1d'"),
        "{line}"
    );
    let line = check_line(&[("PGCDC_SOURCE_MAINTENANCE_WINDOW", "8h")]);
    assert!(line.starts_with("ok    idle timeout"), "{line}");

    // No consumer: the timeout counts from the slot's inactive_since.
    let (ok, text) = slot(&config, &["create"]);
    assert!(ok, "{text}");
    let (ok, text) = slot(&config, &["status", "--json"]);
    assert!(ok, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    let invalidation = &status["invalidation"];
    assert_eq!(invalidation["state"], "eta", "{status}");
    assert_eq!(
        invalidation["by"], "idle_replication_slot_timeout",
        "{status}"
    );
    let seconds = invalidation["seconds"].as_f64().expect("seconds");
    assert!(
        seconds > 11.0 * 3600.0 && seconds <= 12.0 * 3600.0,
        "{status}"
    );
    let summary = invalidation["summary"].as_str().expect("summary");
    assert!(
        summary.contains("unless a consumer resumes")
            && summary.contains("of idle_replication_slot_timeout = 12 h"),
        "{summary}"
    );
}

/// `slot status` in a blocking thread: the command waits on its own process, not on the runtime.
async fn slot_async(config: &Path, args: &[&str]) -> (bool, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        slot(&config, &args)
    })
    .await
    .expect("slot command thread")
}

/// The `transaction` causes in `slot status --json` that name session `pid`.
fn json_names_pid(text: &str, pid: i32) -> bool {
    let status: serde_json::Value = serde_json::from_str(text).expect("status JSON");
    status["what_holds_the_wal"]
        .as_array()
        .expect("what_holds_the_wal is a list")
        .iter()
        .any(|c| c["cause"] == "transaction" && c["transaction"]["pid"] == pid)
}

// Issue 23: retained WAL grows and the user does not know why; `slot status` names the open
// transaction that keeps restart_lsn behind, and stops naming it once it commits.
#[tokio::test(flavor = "multi_thread")]
async fn slot_status_names_the_open_transaction_that_holds_the_wal() {
    use common::http::{get, sample};

    let setup = Fixture::builder()
        .ddl(
            "create table public.t (id int primary key, v text);
             create table public.audit (id int);
             create publication pgcdc_pub for table public.t;",
        )
        .setting("metrics.poll_interval = \"200ms\"")
        .start()
        .await;
    let cluster = &setup.cluster;
    let config = setup.config.clone();
    let addr = metrics_listen(&config);
    let mut pgcdc = setup.run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;

    // A transaction with an xid (it wrote to an unpublished table), open before the burst.
    let holder = cluster.client("shop").await;
    let pid: i32 = holder
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    for sql in [
        "set application_name = 'audit_job'",
        "begin",
        "insert into public.audit values (1)",
    ] {
        holder.batch_execute(sql).await.expect(sql);
    }
    // Well over a WAL segment (the smallest cause shown), which pgcdc streams and confirms.
    cluster
        .execute(
            "insert into public.t select g, repeat('x', 200) from generate_series(1, 150000) g",
        )
        .await;
    cluster
        .wait_slot_confirms_now("pgcdc", "pgcdc confirms the burst", DEADLINE)
        .await;
    // Named once it is older than the server's running-transactions interval (15 s), which is
    // how far restart_lsn trails anyway.
    let named = format!("transaction pid {pid} (audit_job");
    let text = wait_until(
        "slot status names the open transaction",
        DEADLINE,
        || async {
            let (ok, text) = slot_async(&config, &["status"]).await;
            if ok && text.contains(&named) {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(
        text.contains("what holds the WAL   biggest first"),
        "{text}"
    );
    assert!(
        text.contains("insert into public.audit values (1)"),
        "its first line of query: {text}"
    );
    assert!(
        text.contains(&format!("select pg_terminate_backend({pid})")),
        "what to do: {text}"
    );
    let (ok, json) = slot_async(&config, &["status", "--json"]).await;
    assert!(ok && json_names_pid(&json, pid), "{json}");
    // The monitor says the same: the age of the transaction holding the decoding position.
    let scrape = || async { get(&addr, "/metrics").await.map(|(_, body)| body) };
    wait_until(
        "the oldest transaction's age is exported",
        DEADLINE,
        || async {
            let metrics = scrape().await?;
            let held = metrics
                .lines()
                .find(|l| l.starts_with("pgcdc_slot_wal_held_bytes{cause=\"transaction\""))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (sample(&metrics, "pgcdc_slot_oldest_xact_age_seconds")? >= 0.0
                && held >= 16.0 * 1024.0 * 1024.0)
                .then_some(())
        },
    )
    .await;

    holder.batch_execute("commit").await.expect("commit");
    let (ok, text) = slot_async(&config, &["status"]).await;
    assert!(ok, "{text}");
    assert!(
        !text.contains(&format!("pid {pid} (")),
        "a committed transaction holds nothing: {text}"
    );
    let (ok, json) = slot_async(&config, &["status", "--json"]).await;
    assert!(ok && !json_names_pid(&json, pid), "{json}");
    wait_until("the age is gone once it commits", DEADLINE, || async {
        let metrics = scrape().await?;
        sample(&metrics, "pgcdc_slot_oldest_xact_age_seconds")
            .is_none()
            .then_some(())
    })
    .await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

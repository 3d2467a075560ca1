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
        checkpoint.contains(&format!("\"flush_lsn\": \"{target}\"")),
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

//! The spine, end to end: a real PostgreSQL cluster, the real `pgcdc` binary, a local sink
//! directory. Every test compares the replay of the files with the table itself.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(120);

const SALES_DDL: &str = "
    create table public.sales (
        id bigint primary key,
        note text,
        qty integer,
        price numeric(10,2),
        updated_at timestamptz default now()
    );
    create publication pgcdc_pub for table public.sales;
    grant select on public.sales to public;
";

/// The suite's fixture: `public.sales`, files of `window`, at most `max_file_bytes`, in `format`.
async fn sales_fixture(window: &str, max_file_bytes: &str, format: &str) -> Fixture {
    Fixture::builder()
        .ddl(SALES_DDL)
        .table("public.sales", &["id"])
        .window(window)
        .max_file_bytes(max_file_bytes)
        .format(format)
        .deadline(DEADLINE)
        .start()
        .await
}

/// A writer that keeps changing `public.sales` in small transactions until stopped.
struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    async fn start(cluster: &PgCluster, first_id: i64) -> Writer {
        let client = cluster.client(SHOP_DB).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut id = first_id;
            let mut transactions = 0;
            while !*stop_rx.borrow() {
                let sql = format!(
                    "begin;
                     insert into public.sales (id, note, qty, price) values
                        ({a}, 'new, \"quoted\"', 1, 9.99), ({b}, '', 2, 0.5), ({c}, null, 3, 1);
                     update public.sales set qty = qty + 1, note = 'line1\nline2' where id = {a};
                     delete from public.sales where id = {b};
                     commit;",
                    a = id,
                    b = id + 1,
                    c = id + 2
                );
                client
                    .batch_execute(&sql)
                    .await
                    .expect("writer transaction");
                id += 3;
                transactions += 1;
            }
            transactions
        });
        Writer { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        self.task.await.expect("writer task")
    }
}

fn assert_no_duplicates(rows: &[ChangeRow]) {
    assert_eq!(
        duplicate_keys(rows),
        0,
        "the files repeat (_commit_lsn, _seq) pairs"
    );
}

fn data_files(sink: &Path) -> Vec<PathBuf> {
    change_files(sink, "public.sales").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_concurrent_writes_have_no_gap_and_no_double() {
    let setup = sales_fixture("1s", "128MiB", "csv.gz").await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, 'seed ' || g, g % 7, g / 100.0 from generate_series(1, 20000) g",
        )
        .await;
    // Changes keep arriving while the slot is created and the snapshot copied.
    let writer = Writer::start(&setup.cluster, 1_000_000).await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Snapshot complete", DEADLINE).await;
    let sink = setup.sink.clone();
    wait_until("a streamed file lands after the snapshot", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "public.sales").ok()?;
            rows.iter().any(|r| r.op == 'I').then_some(())
        }
    })
    .await;
    let transactions = writer.stop().await;
    assert!(transactions > 0);
    setup.wait_replay_matches("replay equals the table").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    let rows = setup.rows();
    assert_no_duplicates(&rows);
    let snapshot_rows = rows.iter().filter(|r| r.op == 'R').count();
    assert!(
        snapshot_rows >= 20_000,
        "snapshot copied {snapshot_rows} rows"
    );
    // The copy is chunked beside the stream: its rows follow its B row and precede its E row.
    let position = |op| {
        rows.iter()
            .find(|r| r.op == op)
            .map(|r| (r.commit_lsn, r.seq))
    };
    let (begin, end) = (position('B'), position('E'));
    assert!(begin.is_some() && end.is_some(), "a B and an E row");
    assert!(
        rows.iter()
            .filter(|r| r.op == 'R')
            .all(|r| Some((r.commit_lsn, r.seq)) > begin && Some((r.commit_lsn, r.seq)) < end),
        "copied rows lie between the copy's B and E rows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_change_and_tricky_text_survive() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price) values
                (1, null, 1, 1.00),
                (2, '', 2, 2.00),
                (3, 'comma, \"quote\" and ''apostrophe''', 3, 3.00),
                (4, E'new\nline and\r\ncrlf', 4, 4.00),
                (5, E'back\\\\slash \\\\N tab\there', 5, 5.00),
                (6, 'ünïcödé – 日本語 – 😀', 6, 6.00),
                (7, '   padded   ', 7, 7.00);
             update public.sales set note = 'was null' where id = 1;
             update public.sales set note = null where id = 3;
             update public.sales set id = 70 where id = 7;
             delete from public.sales where id = 2;",
        )
        .await;
    setup
        .wait_replay_matches("inserts, updates and deletes replay")
        .await;

    setup
        .cluster
        .execute(
            "truncate public.sales;
             insert into public.sales (id, note, qty, price) values (10, 'after truncate', 1, 0.01);",
        )
        .await;
    setup.wait_replay_matches("truncate replays").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    let rows = setup.rows();
    assert_no_duplicates(&rows);
    let ops: String = {
        // The copy runs beside the stream: rows inserted before its chunk is read may also
        // come as R rows (the latest wins), so R may or may not be there.
        let mut ops: Vec<char> = rows.iter().map(|r| r.op).filter(|&op| op != 'R').collect();
        ops.sort_unstable();
        ops.dedup();
        ops.into_iter().collect()
    };
    // B and E: the table's copy.
    assert_eq!(ops, "BDEITU");
    let truncates = rows.iter().filter(|r| r.op == 'T').count();
    assert_eq!(truncates, 1, "one T row per truncated table");
    let empty = rows
        .iter()
        .find(|r| r.op == 'I' && r.get("id") == Some("2"))
        .expect("insert of id 2");
    assert_eq!(empty.get("note"), Some(""), "the empty string is not NULL");
    let null = rows
        .iter()
        .find(|r| r.op == 'I' && r.get("id") == Some("1"))
        .expect("insert of id 1");
    assert_eq!(null.get("note"), None, "NULL is not the empty string");
    let deleted: Vec<Option<&str>> = rows
        .iter()
        .filter(|r| r.op == 'D')
        .map(|r| r.get("id"))
        .collect();
    assert_eq!(
        deleted,
        vec![Some("7"), Some("2")],
        "deletes carry the key, and a key change deletes the old key"
    );
    for row in &rows {
        assert!(
            row.commit_ts
                .as_deref()
                .is_some_and(|ts| ts.ends_with('Z') && ts.contains('T')),
            "commit timestamps are ISO-8601 UTC: {:?}",
            row.commit_ts
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_transaction_is_split_into_parts() {
    let setup = sales_fixture("2s", "4MiB", "csv.gz").await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, 'row number ' || g, g % 100, (g % 1000) / 10.0
             from generate_series(1, 1000000) g",
        )
        .await;
    let sink = setup.sink.clone();
    let files = wait_until(
        "all parts of the big transaction land",
        DEADLINE * 3,
        || {
            let sink = sink.clone();
            async move {
                let files = change_files(&sink, "public.sales").ok()?;
                let names: Vec<FileName> = files
                    .iter()
                    .filter_map(|f| parse_file_name(f.strip_prefix(&sink).ok()?).ok())
                    // The copy's B and E rows are in files of their own.
                    .filter(|n| n.part.is_some())
                    .collect();
                let (_, of) = names.first()?.part?;
                (names.len() == of as usize).then_some(names)
            }
        },
    )
    .await;
    assert!(files.len() > 1, "expected parts, got {files:?}");
    pgcdc.stop_cleanly(DEADLINE).await;

    let rows = setup.rows();
    assert_eq!(
        rows.iter().filter(|r| !matches!(r.op, 'B' | 'E')).count(),
        1_000_000
    );
    assert_no_duplicates(&rows);
    let client = setup.cluster.client(SHOP_DB).await;
    let expected = table_state(&client, "public.sales", &["id"]).await;
    let actual = replay(&rows, &["id"]);
    assert_eq!(describe_diff(&expected, &actual), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_after_sigkill_and_sigterm_lose_and_double_nothing() {
    let setup = sales_fixture("1s", "256KiB", "csv.gz").await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, 'seed', 1, 1 from generate_series(1, 5000) g",
        )
        .await;
    let writer = Writer::start(&setup.cluster, 1_000_000).await;

    for round in 0..4 {
        let mut pgcdc = Pgcdc::run(&setup.config);
        let before = data_files(&setup.sink).len();
        let sink = setup.sink.clone();
        wait_until(
            &format!("round {round}: pgcdc makes progress"),
            DEADLINE,
            || {
                let sink = sink.clone();
                async move { (data_files(&sink).len() > before + 1).then_some(()) }
            },
        )
        .await;
        if round == 2 {
            pgcdc.stop_cleanly(DEADLINE).await;
        } else {
            pgcdc.kill();
        }
    }

    writer.stop().await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    setup
        .wait_replay_matches("after kills and restarts the replay equals the table")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_no_duplicates(&setup.rows());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_slot_still_advances() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    setup.add_source_setting("status_interval = \"1s\"");
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // WAL that has nothing to do with the published table.
    setup
        .cluster
        .execute(
            "create table public.unpublished (id int);
             insert into public.unpublished select generate_series(1, 10000);",
        )
        .await;
    setup
        .cluster
        .wait_slot_confirms_now(
            "pgcdc",
            "the slot confirms WAL it had nothing to send for",
            DEADLINE,
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert!(
        setup.rows().iter().all(|r| matches!(r.op, 'B' | 'E')),
        "no changes: only the empty table's copy markers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn password_roles_stream_with_scram_md5_and_cleartext() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    for role in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let config = setup.config_variant(&format!("pgcdc-{role}"), |c| {
            c.set("source.url", &setup.cluster.role_url(role, SHOP_DB))
                .set("source.slot", role)
                .local_sink(&setup.dir.path().join(role))
        });
        let mut pgcdc = Pgcdc::run(&config);
        pgcdc.wait_output("Streaming changes", DEADLINE).await;
        pgcdc.stop_cleanly(DEADLINE).await;
        let output = pgcdc.output_text();
        assert!(
            !output.contains(&password_for(role)),
            "the password of {role} appears in the output"
        );
    }
}

async fn expect_failure(config: &Path, envs: &[(&str, &str)], needle: &str, secret: Option<&str>) {
    let mut pgcdc = Pgcdc::spawn(
        ["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        envs,
    );
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(!status.success(), "pgcdc should fail; output:\n{output}");
    assert!(
        output.contains(needle),
        "expected {needle:?} in the output:\n{output}"
    );
    assert!(!output.contains("panicked"), "pgcdc panicked:\n{output}");
    if let Some(secret) = secret {
        assert!(!output.contains(secret), "secret leaked:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_setups_fail_with_actionable_messages() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    let url = setup.cluster.url(SUPERUSER, None, SHOP_DB);
    let config = setup.config.clone();

    // Missing publication.
    expect_failure(
        &config,
        &[("PGCDC_SOURCE_PUBLICATION", "nope")],
        "publication \"nope\" does not exist",
        None,
    )
    .await;

    // Wrong password.
    let wrong = setup
        .cluster
        .url(SCRAM_USER, Some("definitely-wrong-pw"), SHOP_DB);
    expect_failure(
        &config,
        &[("PGCDC_SOURCE_URL", &wrong)],
        "authentication as pgcdc_scram@127.0.0.1",
        Some("definitely-wrong-pw"),
    )
    .await;

    // Nothing listening.
    let closed = format!("postgres://postgres@127.0.0.1:{}/shop", free_port());
    expect_failure(
        &config,
        &[("PGCDC_SOURCE_URL", &closed)],
        "cannot connect to PostgreSQL at postgres@127.0.0.1",
        None,
    )
    .await;

    // Bad configuration values.
    expect_failure(
        &config,
        &[("PGCDC_BATCH_WINDOW", "soon")],
        "batch.window",
        None,
    )
    .await;
    expect_failure(
        &config,
        &[("PGCDC_SINK_URL", "file:///proc/pgcdc-cannot-write-here")],
        "cannot create spool directory",
        None,
    )
    .await;
    let _ = url;
    let _ = &setup.dir;
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_replica_is_refused_with_the_fix() {
    let setup = Fixture::builder()
        .settings(&[("wal_level", "replica")])
        .ddl("create table public.t (id int primary key); create publication pgcdc_pub for table public.t;")
        .max_file_bytes("128MiB")
        .format("csv")
        .start()
        .await;
    let config = setup.config.clone();
    expect_failure(&config, &[], "wal_level must be logical", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_snapshot_is_redone_from_a_fresh_slot() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, 'seed', 1, 1 from generate_series(1, 100) g;",
        )
        .await;
    setup
        .cluster
        .execute("select pg_create_logical_replication_slot('pgcdc', 'pgoutput');")
        .await;
    // What a crash in the middle of the first snapshot leaves behind: the slot, a pending
    // checkpoint and a partial snapshot file.
    let bookkeeping = setup.sink.join("_pgcdc/pgcdc");
    std::fs::create_dir_all(&bookkeeping).expect("bookkeeping dir");
    std::fs::write(
        bookkeeping.join("checkpoint.json"),
        r#"{"slot":"pgcdc","snapshot":"pending","snapshot_lsn":"0/10","commit_lsn":"0/0","flush_lsn":"0/0","updated_at":""}"#,
    )
    .expect("checkpoint");
    let partial_dir = setup.sink.join("public.sales/dt=2024-01-01/hour=00");
    std::fs::create_dir_all(&partial_dir).expect("partial dir");
    let partial = partial_dir.join("0000000000000010-0000000000000010.csv");
    std::fs::write(
        &partial,
        "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,note,qty,price,updated_at\nR,16,0,,2024-01-01T00:00:00.000000Z,,1,stale,1,1,\n",
    )
    .expect("partial file");

    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Snapshot complete", DEADLINE).await;
    assert!(!partial.exists(), "the partial snapshot file is removed");
    setup
        .wait_replay_matches("the redone snapshot equals the table")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let rows = setup.rows();
    assert_eq!(rows.iter().filter(|r| r.op == 'R').count(), 100);
    assert_no_duplicates(&rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_restarts_and_killed_connections_are_ridden_out() {
    let setup = sales_fixture("1s", "128MiB", "csv.gz").await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note, qty, price)
             select g, 'seed', 1, 1 from generate_series(1, 1000) g",
        )
        .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;

    for (round, fault) in ["restart fast", "restart immediate", "terminate backend"]
        .into_iter()
        .enumerate()
    {
        let writer = Writer::start(&setup.cluster, 1_000_000 * (round as i64 + 1)).await;
        let sink = setup.sink.clone();
        let before = data_files(&sink).len();
        wait_until(&format!("{fault}: files land first"), DEADLINE, || {
            let sink = sink.clone();
            async move { (data_files(&sink).len() > before).then_some(()) }
        })
        .await;
        // The writer's connection dies with the server; stop it first.
        writer.stop().await;
        match fault {
            "restart fast" => setup.cluster.restart(StopMode::Fast).await,
            "restart immediate" => setup.cluster.restart(StopMode::Immediate).await,
            _ => {
                setup
                    .cluster
                    .execute(
                        "select pg_terminate_backend(active_pid) from pg_replication_slots
                         where slot_name = 'pgcdc' and active_pid is not null",
                    )
                    .await
            }
        }
        setup
            .cluster
            .execute(&format!(
                "insert into public.sales (id, note, qty, price) values ({}, 'after {fault}', 1, 1)",
                100_000 + round
            ))
            .await;
        setup
            .wait_replay_matches(&format!("after {fault} the replay equals the table"))
            .await;
        assert!(
            pgcdc.try_exit().is_none(),
            "pgcdc must reconnect, not exit:\n{}",
            pgcdc.output_text()
        );
    }
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_no_duplicates(&setup.rows());
    assert!(pgcdc.output_text().contains("reconnecting"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_slot_stops_pgcdc_with_the_documented_error() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // Someone kills pgcdc's walsender and drops the slot behind its back.
    let client = setup.cluster.client(SHOP_DB).await;
    wait_until("the slot is dropped", DEADLINE, || {
        let client = &client;
        async move {
            let _ = client
                .batch_execute(
                    "select pg_terminate_backend(active_pid) from pg_replication_slots
                     where slot_name = 'pgcdc' and active_pid is not null",
                )
                .await;
            client
                .batch_execute("select pg_drop_replication_slot('pgcdc')")
                .await
                .ok()
        }
    })
    .await;
    let status = pgcdc.wait_exit(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("replication slot pgcdc does not exist")
            && output.contains("pgcdc slot reset"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_advanced_behind_pgcdcs_back_is_refused_or_recorded_as_a_gap() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.sales (id, note) select g, 'before' from generate_series(1, 10) g",
        )
        .await;
    setup.wait_replay_matches("the first rows land").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    // While pgcdc is down, rows are written and someone moves the slot past them.
    setup
        .cluster
        .execute("insert into public.sales (id, note) select g, 'skipped' from generate_series(11, 20) g")
        .await;
    // Advancing stops at the flushed WAL, which lags with synchronous_commit=off: advance until
    // the slot is past the inserts.
    let target = setup
        .cluster
        .query_scalar("select pg_current_wal_insert_lsn()::text")
        .await
        .expect("current WAL position");
    setup
        .cluster
        .wait_true(
            "the slot is advanced past the skipped rows",
            DEADLINE,
            &format!(
                "select (pg_replication_slot_advance('pgcdc', '{target}')).end_lsn >= '{target}'"
            ),
        )
        .await;
    let mut refused = Pgcdc::run(&setup.config);
    let status = refused.wait_exit(DEADLINE).await;
    let output = refused.output_text();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("has confirmed changes up to")
            && output.contains("made only up to")
            && output.contains("pgcdc slot reset")
            && output.contains("on_slot_ahead"),
        "{output}"
    );
    let skipped = read_change_files(&setup.sink, "public.sales")
        .iter()
        .filter(|r| r.values.get("note").cloned().flatten().as_deref() == Some("skipped"))
        .count();
    assert_eq!(skipped, 0, "nothing was written past the gap");

    // Told to record the gap, pgcdc leaves a marker naming both positions and goes on.
    setup.add_source_setting("on_slot_ahead = \"gap\"");
    let mut resumed = Pgcdc::run(&setup.config);
    resumed.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.sales (id, note) values (21, 'after')")
        .await;
    let sink = setup.sink.clone();
    wait_until("the row after the gap lands", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "public.sales").ok()?;
            rows.iter()
                .any(|r| r.values.get("note").cloned().flatten().as_deref() == Some("after"))
                .then_some(())
        }
    })
    .await;
    resumed.stop_cleanly(DEADLINE).await;
    let gaps: Vec<_> = std::fs::read_dir(setup.sink.join("_pgcdc/pgcdc/gaps"))
        .expect("gap markers")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&gaps[0]).expect("marker")).expect("json");
    assert_eq!(marker["action"], "slot-ahead");
    assert!(
        marker["from"].is_string() && marker["to"].is_string(),
        "{marker}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_each_problem_with_its_fix() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    let run_check = |envs: Vec<(&'static str, String)>| {
        let config = setup.config.clone();
        async move {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let output = pgcdc_output(
                ["check".as_ref(), "--config".as_ref(), config.as_os_str()],
                &envs,
            );
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            )
        }
    };
    let (ok, text) = run_check(vec![]).await;
    assert!(ok, "{text}");
    for line in [
        "ok    connect",
        "ok    wal_level",
        "ok    publication  \"pgcdc_pub\": public.sales",
        "ok    capacity",
        "ok    role",
        "ok    table        public.sales: replica identity DEFAULT (primary key)",
        "ok    slot",
        "ok    sink",
        "all checks passed",
    ] {
        assert!(text.contains(line), "expected {line:?} in:\n{text}");
    }

    // A published table without a key, and a role that may not stream.
    setup
        .cluster
        .execute(
            "create table public.nokey (v text);
             alter publication pgcdc_pub add table public.nokey;
             create role plain login password 'plain-pw';",
        )
        .await;
    let plain = setup.cluster.url("plain", Some("plain-pw"), SHOP_DB);
    let (ok, text) = run_check(vec![]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL  table        public.nokey: no usable replica identity")
            && text.contains("REPLICA IDENTITY FULL"),
        "{text}"
    );
    let (ok, text) = run_check(vec![("PGCDC_SOURCE_URL", plain)]).await;
    assert!(!ok, "{text}");
    assert!(!text.contains("plain-pw"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_moves_an_idle_slot_and_logs_can_be_json() {
    let setup = sales_fixture("1s", "128MiB", "csv").await;
    setup.add_source_setting("status_interval = \"1s\"\nheartbeat = \"200ms\"");
    let mut pgcdc = Pgcdc::spawn(
        [
            "--log-format".as_ref(),
            "json".as_ref(),
            "run".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
        ],
        &[],
    );
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let start = setup
        .cluster
        .query_scalar(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'pgcdc'",
        )
        .await
        .expect("slot");
    // Nothing writes to the database: only the heartbeat can move the slot.
    setup
        .cluster
        .wait_true(
            "the heartbeat advances the idle slot",
            DEADLINE,
            &format!("select confirmed_flush_lsn > '{start}'::pg_lsn from pg_replication_slots where slot_name = 'pgcdc'"),
        )
        .await;
    // And the WAL holds pgcdc's heartbeat messages (seen through a second, test_decoding slot).
    setup
        .cluster
        .execute("select pg_create_logical_replication_slot('watch', 'test_decoding')")
        .await;
    setup
        .cluster
        .wait_true(
            "a heartbeat message is in the WAL",
            DEADLINE,
            "select count(*) > 0 from pg_logical_slot_peek_changes('watch', null, null) where data like '%prefix: pgcdc.heartbeat%'",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    for line in pgcdc.stderr().lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}

/// The example of tests/README.md, kept here so it compiles and passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_row_stays_deleted() {
    let setup = Fixture::builder()
        .ddl(
            "create table public.t (id int primary key, v text);
              create publication pgcdc_pub for table public.t;",
        )
        .table("public.t", &["id"])
        .start()
        .await;
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.t values (1, 'a'), (2, 'b')")
        .await;
    setup
        .cluster
        .execute("delete from public.t where id = 1")
        .await;
    setup.wait_replay_matches("the delete replays").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert!(setup.rows().iter().any(|r| r.op == 'D'));
}

/// Each data file's name and a hash of its rows (decompressed).
fn file_contents(sink: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    use std::hash::{Hash, Hasher};
    use std::io::Read as _;
    data_files(sink)
        .into_iter()
        .filter_map(|path| {
            let raw = std::fs::read(&path).ok()?;
            let mut text = Vec::new();
            if path.extension().is_some_and(|e| e == "gz") {
                flate2::read::MultiGzDecoder::new(raw.as_slice())
                    .read_to_end(&mut text)
                    .ok()?;
            } else {
                text = raw;
            }
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            Some((path, hasher.finish()))
        })
        .collect()
}

/// A loader that skips names it has seen (Snowpipe) loses nothing only if a name, once written,
/// always holds the same rows: replays after SIGKILL in the middle of a part set must cut it the
/// same way under the same names.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_name_once_written_always_holds_the_same_rows_across_sigkills() {
    let setup = sales_fixture("1s", "256KiB", "csv.gz").await;
    let mut seen: std::collections::BTreeMap<PathBuf, u64> = Default::default();
    let mut check = |round: usize| {
        for (path, hash) in file_contents(&setup.sink) {
            if let Some(before) = seen.insert(path.clone(), hash) {
                assert_eq!(
                    before,
                    hash,
                    "round {round}: {} was rewritten with other rows",
                    path.display()
                );
            }
        }
    };
    for round in 0..5 {
        let mut pgcdc = Pgcdc::run(&setup.config);
        pgcdc.wait_output("Streaming changes", DEADLINE).await;
        let first = round * 40_000 + 1;
        setup
            .cluster
            .execute(&format!(
                "insert into public.sales (id, note, qty, price)
                 select g, md5(g::text) || md5((g * 7)::text), g % 10, 1
                 from generate_series({first}, {}) g",
                first + 39_999
            ))
            .await;
        let before = data_files(&setup.sink).len();
        let sink = setup.sink.clone();
        // Killed as soon as the first part of the big transaction is there: mostly in the
        // middle of its part set.
        wait_until(&format!("round {round}: a part lands"), DEADLINE, || {
            let sink = sink.clone();
            async move { (data_files(&sink).len() > before).then_some(()) }
        })
        .await;
        pgcdc.kill();
        check(round);
    }
    let mut pgcdc = Pgcdc::run(&setup.config);
    setup.wait_replay_matches("replay equals the table").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    check(5);
    assert_no_duplicates(&setup.rows());
    assert!(seen.len() > 10, "{} files", seen.len());
}

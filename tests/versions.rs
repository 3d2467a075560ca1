//! What changes with the server's major version, and failover. This file, with the end-to-end
//! suites, is what the version matrix runs on every PostgreSQL from 13 to 18
//! (`make test-matrix`; `make test` runs it on 15 and 17): each test asserts what its version
//! should give, so none passes by doing nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::http::get;
use common::*;

const DEADLINE: Duration = Duration::from_secs(180);

const SALES_DDL: &str = "create table public.sales (id bigint primary key, note text, qty int);
     create publication pgcdc_pub for table public.sales;";

/// The suite's fixture, before its DDL: `public.sales`, a config with a 1 s window, a 1 s metrics
/// poll and `source_lines` (`key = value`) in `[source]`.
fn sales_fixture(source_lines: &[&str]) -> FixtureBuilder {
    source_lines
        .iter()
        .fold(Fixture::builder(), |builder, line| {
            builder.setting(&format!("source.{line}"))
        })
        .setting("metrics.poll_interval = \"1s\"")
        .table("public.sales", &["id"])
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv.gz")
        .deadline(DEADLINE)
}

/// A config like the fixture's for `url`, with `source_lines` added, into its own sink
/// `<dir>/<name>` (or the fixture's own with `name` = `stage`): (sink, config).
fn config_for(setup: &Fixture, name: &str, url: &str, source_lines: &[&str]) -> (PathBuf, PathBuf) {
    let sink = setup.dir.path().join(name);
    let config = setup.config_variant(&format!("pgcdc-{name}"), |config| {
        config
            .set("source.url", url)
            .lines("source", &source_lines.join("\n"))
            .local_sink(&sink)
    });
    (sink, config)
}

async fn some_changes(cluster: &PgCluster, first: i64) {
    cluster
        .execute(&format!(
            "insert into public.sales select g, 'row ' || g, g % 7 from generate_series({first}, {}) g;
             update public.sales set qty = qty + 1 where id % 3 = 0 and id >= {first};
             delete from public.sales where id % 5 = 0 and id >= {first};",
            first + 99
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_protocol_and_metrics_follow_the_server_version() {
    let setup = sales_fixture(&["messages = \"write\""])
        .ddl(SALES_DDL)
        .start()
        .await;
    let cluster = &setup.cluster;
    let (sink, config) = (setup.sink.clone(), setup.config.clone());
    let major = cluster.major().await;
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;

    // 14 added protocol 2 (streaming) and the `messages` option; 13 gets protocol 1 and a
    // warning that messages cannot be written.
    let chosen = if major >= 14 {
        "proto_version=2 streaming=true messages=true"
    } else {
        "proto_version=1 streaming=false messages=false"
    };
    assert!(
        pgcdc.output_text().contains(chosen),
        "PostgreSQL {major} should give {chosen:?}:\n{}",
        pgcdc.output_text()
    );
    assert_eq!(
        pgcdc.output_text().contains("needs PostgreSQL 14 or later"),
        major < 14,
        "the messages warning is logged exactly when the server cannot send messages"
    );

    some_changes(cluster, 1).await;
    setup
        .wait_replay_matches_at(cluster, &sink, "inserts, updates and deletes replay")
        .await;

    // Metrics a server lacks are absent, not zero; those it has are there.
    let addr = metrics_listen(&config);
    let text = wait_until("the slot's figures are scraped", DEADLINE, || {
        let addr = addr.clone();
        async move {
            let (_, body) = get(&addr, "/metrics").await?;
            body.contains("pgcdc_slot_wal_status{").then_some(body)
        }
    })
    .await;
    let has = |name: &str| text.lines().any(|l| l.starts_with(name));
    assert!(
        has("pgcdc_slot_wal_status{"),
        "wal_status exists from 13 on"
    );
    assert_eq!(
        has("pgcdc_slot_stats{"),
        major >= 14,
        "pg_stat_replication_slots exists from 14 on:\n{text}"
    );
    assert_eq!(
        has("pgcdc_slot_failover{"),
        major >= 17,
        "the slot's failover column exists from 17 on:\n{text}"
    );
    assert!(
        !has("pgcdc_slot_safe_wal_size_bytes{"),
        "without max_slot_wal_keep_size safe_wal_size is NULL, and the metric absent:\n{text}"
    );
    if major >= 17 {
        assert!(
            text.contains("pgcdc_slot_failover{slot=\"pgcdc\"} 0"),
            "the slot was made without failover:\n{text}"
        );
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_slots_are_made_on_17_and_refused_before() {
    let setup = sales_fixture(&[]).ddl(SALES_DDL).start().await;
    let cluster = &setup.cluster;
    let major = cluster.major().await;
    let url = cluster.url(SUPERUSER, None, SHOP_DB);
    let slot_failover = "select coalesce((select failover::text from pg_replication_slots where slot_name = 'pgcdc'), 'none')";

    if major < 17 {
        let (_, config) = config_for(&setup, "stage", &url, &["failover = true"]);
        let line = check_failover_line(&config);
        assert!(
            line.starts_with("FAIL") && line.contains("needs PostgreSQL 17"),
            "{line}"
        );
        let mut pgcdc = Pgcdc::run(&config);
        let status = pgcdc.wait_exit(DEADLINE).await;
        assert_eq!(status.code(), Some(1), "{}", pgcdc.output_text());
        assert!(
            pgcdc
                .output_text()
                .contains("source.failover needs PostgreSQL 17 or later"),
            "{}",
            pgcdc.output_text()
        );
        let slots = cluster
            .query_scalar("select count(*) from pg_replication_slots")
            .await;
        assert_eq!(slots.as_deref(), Some("0"), "no slot is made");
        return;
    }

    // A slot made without failover is turned into one when the setting is switched on.
    let (sink, plain) = (setup.sink.clone(), setup.config.clone());
    let mut pgcdc = Pgcdc::run(&plain);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    some_changes(cluster, 1).await;
    setup
        .wait_replay_matches_at(cluster, &sink, "the first run's changes replay")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_eq!(
        cluster.query_scalar(slot_failover).await.as_deref(),
        Some("false")
    );

    let (_, with_failover) = config_for(&setup, "stage", &url, &["failover = true"]);
    // Without synchronized_standby_slots a failover could lose ground: check says so.
    let line = check_failover_line(&with_failover);
    assert!(
        line.starts_with("FAIL") && line.contains("synchronized_standby_slots is empty"),
        "{line}"
    );
    let mut pgcdc = Pgcdc::run(&with_failover);
    pgcdc.wait_output("making it one", DEADLINE).await;
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    assert_eq!(
        cluster.query_scalar(slot_failover).await.as_deref(),
        Some("true")
    );
    some_changes(cluster, 1001).await;
    setup
        .wait_replay_matches_at(cluster, &sink, "changes after the switch replay")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;

    // A fresh start makes the slot with FAILOVER from the beginning.
    cluster
        .execute("select pg_drop_replication_slot('pgcdc')")
        .await;
    let (sink, config) = config_for(&setup, "fresh", &url, &["failover = true"]);
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    assert_eq!(
        cluster.query_scalar(slot_failover).await.as_deref(),
        Some("true")
    );
    setup
        .wait_replay_matches_at(cluster, &sink, "the snapshot replays")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_hosts_lead_to_the_primary_past_dead_and_read_only_ones() {
    let setup = sales_fixture(&[])
        .ddl("select pg_create_physical_replication_slot('standby1')")
        .ddl(SALES_DDL)
        .start()
        .await;
    let primary = &setup.cluster;
    let standby = PgCluster::start_standby_of(primary, "standby1").await;
    let dead = free_port();
    let url = |ports: &[u16]| {
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!(
            "postgres://{SUPERUSER}@{}/{SHOP_DB}?target_session_attrs=read-write",
            hosts.join(",")
        )
    };

    // Only a dead host and a standby: nothing to stream from, and the error names both.
    let (_, config) = config_for(&setup, "standby-only", &url(&[dead, standby.port()]), &[]);
    let mut pgcdc = Pgcdc::run(&config);
    let status = pgcdc.wait_exit(DEADLINE).await;
    let text = pgcdc.output_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("no host in source.url")
            && text.contains(&format!("127.0.0.1:{dead}"))
            && text.contains(&format!(
                "127.0.0.1:{}/{SHOP_DB} is a standby",
                standby.port()
            )),
        "{text}"
    );

    // With the primary last in the list, pgcdc passes over the other two and streams.
    let all = url(&[dead, standby.port(), primary.port()]);
    let (sink, config) = config_for(&setup, "all-hosts", &all, &[]);
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    some_changes(primary, 1).await;
    setup
        .wait_replay_matches_at(primary, &sink, "changes stream from the primary")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// `pgcdc check`'s line for the failover setting.
fn check_failover_line(config: &Path) -> String {
    let output = pgcdc_output(
        ["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[],
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find(|l| l.contains(" failover "))
        .unwrap_or_else(|| panic!("no failover line in pgcdc check's report:\n{text}"))
        .to_owned()
}

/// Small transactions against whichever host is the primary, until told to stop; each is an
/// insert, every third also an update, every fifth also a delete. Ids are never reused, so a
/// transaction cut off by the failover (committed or not) cannot collide with a later one.
/// Paced at about 200 a second: the point is writes across the failover, not volume.
async fn workload(url: String, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) {
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    let mut next_id: i64 = 1_000_000;
    while !stop.load(Ordering::SeqCst) {
        let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        else {
            // Between the old primary's stop and the promotion no host takes writes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::SeqCst) {
            pace.tick().await;
            let id = next_id;
            next_id += 1;
            let mut sql = format!(
                "begin; insert into public.sales values ({id}, 'row {id}', {});",
                id % 7
            );
            if id % 3 == 0 {
                sql.push_str(&format!(
                    "update public.sales set qty = qty + 1 where id = {};",
                    id - 1
                ));
            }
            if id % 5 == 0 {
                sql.push_str(&format!("delete from public.sales where id = {};", id - 2));
            }
            sql.push_str("commit;");
            if client.batch_execute(&sql).await.is_err() {
                break;
            }
            committed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pgcdc_follows_a_failover_to_the_promoted_standby() {
    let setup = sales_fixture(&[]).start().await;
    let primary = &setup.cluster;
    let major = primary.major().await;
    if major < 17 {
        // What 13–16 do with `failover = true` is asserted above; there is no slot to follow.
        println!("PostgreSQL {major} has no failover slots: nothing to fail over to");
        return;
    }
    primary
        .execute("select pg_create_physical_replication_slot('standby1')")
        .await;
    primary.execute(SALES_DDL).await;
    let standby = PgCluster::start_standby_of(primary, "standby1").await;
    // pgcdc is sent nothing the standby has not received, so the promoted standby's copy of
    // the slot never lags behind what pgcdc has already been sent and made durable.
    primary
        .set_config("synchronized_standby_slots", "standby1")
        .await;
    primary
        .wait_true(
            "the standby streams from the primary",
            DEADLINE,
            "select exists(select 1 from pg_stat_replication where application_name = 'pgcdc_standby' and state = 'streaming')",
        )
        .await;

    let both = format!(
        "postgres://{SUPERUSER}@127.0.0.1:{},127.0.0.1:{}/{SHOP_DB}?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    // Confirming every second moves the primary's slot, which the standby's copy waits for.
    let (sink, config) = config_for(
        &setup,
        "stage",
        &both,
        &["failover = true", "status_interval = \"1s\""],
    );
    let line = check_failover_line(&config);
    assert!(
        line.starts_with("ok") && line.contains("standby1"),
        "{line}"
    );
    let mut pgcdc = Pgcdc::run(&config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    some_changes(primary, 1).await;
    setup
        .wait_replay_matches_at(primary, &sink, "the first changes replay")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(workload(both.clone(), stop.clone(), committed.clone()));
    // The standby keeps its copy temporary until the primary's slot has moved past where the
    // copy began, which takes a running-transactions record that the primary otherwise logs only
    // every 15 s: ask for one at each look.
    let (to_primary, to_standby) = (primary.client(SHOP_DB).await, standby.client(SHOP_DB).await);
    wait_until(
        "the standby holds a synchronised copy of pgcdc's slot",
        DEADLINE,
        || async {
            to_primary
                .batch_execute("select pg_log_standby_snapshot()")
                .await
                .ok()?;
            let row = to_standby
                .query_one(
                    "select exists(select 1 from pg_replication_slots where slot_name = 'pgcdc' and synced and not temporary)",
                    &[],
                )
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())
        },
    )
    .await;
    drop((to_primary, to_standby));

    let at_least = |n: u64| {
        let committed = committed.clone();
        move || {
            let committed = committed.clone();
            async move { (committed.load(Ordering::SeqCst) >= n).then_some(()) }
        }
    };
    wait_until(
        "300 transactions on the first primary",
        DEADLINE,
        at_least(300),
    )
    .await;

    // The failover, with the workload still writing.
    primary.stop(StopMode::Fast).await;
    standby.promote().await;
    let before = committed.load(Ordering::SeqCst);
    wait_until(
        "300 transactions on the promoted standby",
        DEADLINE,
        at_least(before + 300),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the workload task");

    setup
        .wait_replay_matches_at(
            &standby,
            &sink,
            "the files replay to the new primary's table",
        )
        .await;
    pgcdc
        .wait_output("The server's timeline changed", DEADLINE)
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let rows = read_change_files(&sink, "public.sales");
    assert_eq!(
        duplicate_keys(&rows),
        0,
        "the files repeat (_commit_lsn, _seq) pairs across the failover"
    );
    println!(
        "failover: {} transactions, {} change rows, pgcdc output:\n{}",
        committed.load(Ordering::SeqCst),
        rows.len(),
        pgcdc.output_text()
    );
}

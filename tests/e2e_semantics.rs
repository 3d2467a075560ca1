//! Change semantics beyond one simple table: streamed (in-progress) transactions with aborts and
//! savepoints, schema changes while writing, tables joining the publication, logical decoding
//! messages. Real cluster, real `pgcdc`, local sink; every test compares the replay of the
//! files with the tables.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(180);

/// The suite's fixture: `ddl` on a cluster with `settings`, 1 s windows of csv.gz.
async fn fixture(settings: &[(&str, &str)], ddl: &str) -> Fixture {
    Fixture::builder()
        .settings(settings)
        .ddl(ddl)
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv.gz")
        .deadline(DEADLINE)
        .start()
        .await
}

fn total_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A writer that runs `sql(i)` for i = 0, 1, 2, ... in its own session until stopped.
struct Loop {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Loop {
    async fn start(cluster: &PgCluster, sql: impl Fn(u64) -> String + Send + 'static) -> Loop {
        let client = cluster.client(SHOP_DB).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !*stop_rx.borrow() {
                client
                    .batch_execute(&sql(i))
                    .await
                    .unwrap_or_else(|e| panic!("writer statement {i}: {}", pg_error(&e)));
                i += 1;
                // Pacing, not synchronisation: a steady workload rather than one that starves
                // pgcdc of the machine's two cores.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        });
        Loop { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        self.task.await.expect("writer task")
    }
}

const SALES_DDL: &str = "
    create table public.sales (id bigint primary key, note text, qty integer);
    create publication pgcdc_pub for table public.sales;
";

#[tokio::test(flavor = "multi_thread")]
async fn huge_aborted_and_savepoint_transactions_stream_through_a_disk_spool() {
    // A tiny decoding budget makes the server stream every transaction of some size.
    let setup = fixture(&[("logical_decoding_work_mem", "64kB")], SALES_DDL).await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // PostgreSQL 13 has no streaming of in-progress transactions: it sends each at commit (and
    // spills to its own disk meanwhile). The data must come out the same.
    let streams_in_progress = setup.cluster.major().await >= 14;
    let (proto, why) = if streams_in_progress {
        ("proto_version=2", "PostgreSQL 14+ is asked for protocol 2")
    } else {
        ("proto_version=1", "PostgreSQL 13 is asked for protocol 1")
    };
    assert!(
        pgcdc.output_text().contains(proto),
        "{why}:\n{}",
        pgcdc.output_text()
    );

    // 1. One million rows in one transaction.
    setup
        .cluster
        .execute(
            "insert into public.sales select g, 'row ' || g, g % 7 from generate_series(1, 1000000) g",
        )
        .await;

    // 2. Half a million rows streamed, then rolled back.
    let aborting = setup.cluster.client(SHOP_DB).await;
    aborting
        .batch_execute(
            "begin; insert into public.sales select g, 'doomed', 0 from generate_series(2000001, 2500000) g",
        )
        .await
        .expect("open the transaction to abort");
    let streams = setup.sink.join("_pgcdc/pgcdc/spool/streams");
    if streams_in_progress {
        wait_until("pgcdc spools the open transaction", DEADLINE, || {
            let streams = streams.clone();
            async move { (total_size(&streams) > 8 << 20).then_some(()) }
        })
        .await;
    }
    aborting.batch_execute("rollback").await.expect("roll back");

    // 3. Nested savepoints, some rolled back, in a transaction large enough to stream.
    setup
        .cluster
        .execute(
            "begin;
             insert into public.sales select g, 'top', 1 from generate_series(3000001, 3050000) g;
             savepoint a;
             insert into public.sales select g, 'in a', 2 from generate_series(3100001, 3150000) g;
             savepoint b;
             insert into public.sales select g, 'in b, rolled back', 3 from generate_series(3200001, 3250000) g;
             rollback to savepoint b;
             insert into public.sales select g, 'in a after b', 4 from generate_series(3300001, 3310000) g;
             release savepoint a;
             savepoint c;
             insert into public.sales select g, 'in c, rolled back', 5 from generate_series(3400001, 3450000) g;
             update public.sales set note = 'updated in c' where id between 3000001 and 3000100;
             rollback to savepoint c;
             update public.sales set note = 'updated' where id between 3000001 and 3000100;
             commit;",
        )
        .await;

    setup
        .wait_table_matches(
            "public.sales",
            &["id"],
            "streamed, aborted and savepoint transactions replay to the table",
        )
        .await;
    if streams_in_progress {
        setup
            .cluster
            .wait_true(
                "the server streamed transactions to pgcdc",
                DEADLINE,
                "select coalesce((select stream_txns > 0 from pg_stat_replication_slots where slot_name = 'pgcdc'), false)",
            )
            .await;
    }
    let peak = peak_rss_kib(pgcdc.pid());
    println!("pgcdc peak RSS: {} KiB", peak);
    assert!(
        peak < 64 * 1024,
        "pgcdc's peak RSS was {peak} KiB; streamed transactions must not be held in memory"
    );
    pgcdc.stop_cleanly(DEADLINE).await;

    let rows = read_change_files(&setup.sink, "public.sales");
    assert_eq!(
        duplicate_keys(&rows),
        0,
        "the files repeat (_commit_lsn, _seq) pairs"
    );
    let leaked = rows
        .iter()
        .filter(|r| {
            let note = r.values.get("note").cloned().flatten().unwrap_or_default();
            note == "doomed" || note.contains("rolled back") || note == "updated in c"
        })
        .count();
    assert_eq!(
        leaked, 0,
        "rows of aborted (sub)transactions reached the files"
    );
    assert_eq!(
        total_size(&streams),
        0,
        "committed and aborted streams leave no spool files"
    );
    assert!(
        !setup.sink.join("_messages").exists(),
        "messages are not written unless asked for"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_flow_through_without_a_restart() {
    let setup = fixture(
        &[],
        "create table public.items (id bigint primary key, a text, b integer, c numeric(8,2));
         insert into public.items select g, 'seed ' || g, g, g / 4.0 from generate_series(1, 200) g;
         create publication pgcdc_pub for table public.items;",
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let writer = Loop::start(&setup.cluster, |i| {
        format!(
            "insert into public.items (id, a) values ({id}, 'w{i}');
             update public.items set a = a || '+' where id = {old};",
            id = 1000 + i,
            old = 1 + i % 200
        )
    })
    .await;

    let items_rows = |n: usize| {
        let sink = setup.sink.clone();
        move || {
            let sink = sink.clone();
            async move {
                let rows = try_read_change_files(&sink, "public.items").ok()?;
                (rows.len() >= n).then_some(rows.len())
            }
        }
    };
    let schema_dir = setup.sink.join("public.items/_schema");
    wait_until("the writer's rows land", DEADLINE, items_rows(210)).await;
    // After each change, wait for a file of the new shape (its schema file), not for any rows:
    // rows of the old shape still in flight would satisfy a row count, and the next change
    // could then come before the writer wrote a row of this shape at all.
    for (ddl, shape) in [
        (
            "alter table public.items add column d text default 'x'",
            &[
                "id bigint",
                "a text",
                "b integer",
                "c numeric(8,2)",
                "d text",
            ][..],
        ),
        (
            "alter table public.items rename column b to b2",
            &[
                "id bigint",
                "a text",
                "b2 integer",
                "c numeric(8,2)",
                "d text",
            ][..],
        ),
        (
            "alter table public.items drop column c",
            &["id bigint", "a text", "b2 integer", "d text"][..],
        ),
        (
            "alter table public.items alter column b2 type bigint using b2 * 10",
            &["id bigint", "a text", "b2 bigint", "d text"][..],
        ),
    ] {
        setup.cluster.execute(ddl).await;
        wait_until(
            &format!("a file of the shape after `{ddl}` lands"),
            DEADLINE,
            || async { schema_shapes(&schema_dir).0.iter().any(|s| s == shape) },
        )
        .await;
    }
    let statements = writer.stop().await;
    assert!(statements > 0);
    // Rows the writer never touched after a change keep their old shape in the files (a CSV row
    // holds the columns its table had when it changed); touch every row so the replay is exact.
    setup.cluster.execute("update public.items set a = a").await;
    setup
        .wait_table_matches(
            "public.items",
            &["id"],
            "the replay equals the altered table",
        )
        .await;
    assert!(
        pgcdc.try_exit().is_none(),
        "pgcdc must keep running through schema changes:\n{}",
        pgcdc.output_text()
    );
    assert!(
        !pgcdc.output_text().contains("reconnecting"),
        "no reconnect either:\n{}",
        pgcdc.output_text()
    );

    let (shapes, documents) = schema_shapes(&schema_dir);
    assert_eq!(
        shapes,
        vec![
            vec!["id bigint", "a text", "b integer", "c numeric(8,2)"],
            vec![
                "id bigint",
                "a text",
                "b integer",
                "c numeric(8,2)",
                "d text"
            ],
            vec![
                "id bigint",
                "a text",
                "b2 integer",
                "c numeric(8,2)",
                "d text"
            ],
            vec!["id bigint", "a text", "b2 integer", "d text"],
            vec!["id bigint", "a text", "b2 bigint", "d text"],
        ],
        "one schema file per shape, in order"
    );
    assert_eq!(documents[0]["key_columns"], serde_json::json!(["id"]));
    pgcdc.stop_cleanly(DEADLINE).await;
    // A restart sees the schema files and writes none again.
    let mut again = Pgcdc::run(&setup.config);
    again.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.items (id, a) values (999999, 'after restart')")
        .await;
    setup
        .wait_table_matches("public.items", &["id"], "a row after the restart lands")
        .await;
    again.stop_cleanly(DEADLINE).await;
    assert_eq!(
        std::fs::read_dir(&schema_dir)
            .expect("schema folder")
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_joining_the_publication_are_copied_consistently_with_the_stream() {
    let setup = fixture(
        &[],
        "create table public.t1 (id bigint primary key, v text);
         create table public.t2 (id bigint primary key, v text);
         create table public.t3 (id bigint primary key, v text, n integer);
         insert into public.t1 select g, 'one ' || g from generate_series(1, 300) g;
         insert into public.t2 select g, 'two ' || g from generate_series(1, 300) g;
         insert into public.t3 select g, 'three ' || g, 0 from generate_series(1, 5000) g;
         -- No key: copied whole in an exported snapshot on every version, and big enough that
         -- windows close and the checkpoint moves while it is copied.
         create table public.t4 (id bigint, v text);
         insert into public.t4 select g, repeat('four ', 20) || g from generate_series(1, 200000) g;
         create publication pgcdc_pub for table public.t1, public.t2;",
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // Writes to t3 and t4 run before, during and after they join the publication and are copied.
    let writer = Loop::start(&setup.cluster, |i| {
        format!(
            "begin;
             insert into public.t3 values ({new}, 'new', 1);
             insert into public.t4 values ({new} + 1000000, 'new');
             update public.t3 set n = n + 1, v = 'upd ' || {i} where id = {old};
             delete from public.t3 where id = {gone};
             update public.t1 set v = 'w' || {i} where id = {t1};
             commit;",
            new = 100_000 + i,
            old = 1 + (i * 7) % 5000,
            gone = 2 + (i * 13) % 5000,
            t1 = 1 + i % 300,
        )
    })
    .await;
    let sink = setup.sink.clone();
    wait_until("t1's changes stream", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "public.t1").ok()?;
            (rows.iter().filter(|r| r.op == 'U').count() >= 20).then_some(())
        }
    })
    .await;
    let below = BelowCheckpoint::start(
        &setup.sink,
        "pgcdc",
        &["public.t1", "public.t2", "public.t3", "public.t4"],
    );
    setup
        .cluster
        .execute("alter publication pgcdc_pub add table public.t3, public.t4")
        .await;
    let copied = |pgcdc: &Pgcdc, table: &str| {
        pgcdc
            .output_text()
            .lines()
            .any(|l| l.contains("Copy of the table complete") && l.contains(table))
    };
    wait_until("both copies are durable", DEADLINE, || async {
        (copied(&pgcdc, "public.t3") && copied(&pgcdc, "public.t4")).then_some(())
    })
    .await;
    // Let the stream run past the copy for a while.
    let sink = setup.sink.clone();
    wait_until("t3 changes after the copy land", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "public.t3").ok()?;
            (rows.iter().filter(|r| r.op != 'R').count() >= 50).then_some(())
        }
    })
    .await;
    writer.stop().await;
    for table in ["public.t1", "public.t2", "public.t3", "public.t4"] {
        setup
            .wait_table_matches(table, &["id"], &format!("{table} replays to the table"))
            .await;
    }
    let report = below.stop();
    assert!(
        report.violations.is_empty(),
        "files landed at or below a checkpoint already written:\n{}",
        report.violations.join("\n")
    );
    assert!(
        report.checkpoint_moves >= 2 && report.files_seen > 0,
        "the checkpoint moved during the copies: {report:?}"
    );
    let t3 = read_change_files(&setup.sink, "public.t3");
    assert_eq!(
        duplicate_keys(&t3),
        0,
        "t3's files repeat (_commit_lsn, _seq)"
    );
    let copied: Vec<_> = t3.iter().filter(|r| r.op == 'R').collect();
    assert!(
        copied.len() >= 4900,
        "the copy holds t3's existing rows ({} R rows)",
        copied.len()
    );
    for table in ["public.t3", "public.t4"] {
        let begins = read_change_files(&setup.sink, table)
            .iter()
            .filter(|r| r.op == 'B')
            .count();
        assert_eq!(begins, 1, "{table} was copied once");
    }

    // A restart neither copies t3 again nor loses track of it.
    pgcdc.stop_cleanly(DEADLINE).await;
    let mut again = Pgcdc::run(&setup.config);
    again.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("update public.t3 set v = 'after restart' where id = 5")
        .await;
    setup
        .wait_table_matches("public.t3", &["id"], "t3 after the restart")
        .await;
    again.stop_cleanly(DEADLINE).await;
    assert!(
        !again.output_text().contains("joined the publication"),
        "t3 was copied again after a restart:\n{}",
        again.output_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_table_is_captured_through_its_root() {
    let setup = fixture(
        &[],
        "create table public.events (id bigint, day date, v text, primary key (id, day))
             partition by range (day);
         create table public.events_2024 partition of public.events
             for values from ('2024-01-01') to ('2025-01-01');
         create table public.events_2025 partition of public.events
             for values from ('2025-01-01') to ('2026-01-01');
         insert into public.events select g, date '2024-06-01' + (g % 400), 'old' from generate_series(1, 1000) g;
         create publication pgcdc_pub for table public.events with (publish_via_partition_root = true);",
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.events select g, date '2024-12-01' + (g % 60), 'new' from generate_series(2001, 2500) g;
             update public.events set v = 'moved' where id % 10 = 0;
             delete from public.events where id % 7 = 0;",
        )
        .await;
    setup
        .wait_table_matches(
            "public.events",
            &["id", "day"],
            "the root's folder replays to the table",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let folders: Vec<String> = std::fs::read_dir(&setup.sink)
        .expect("sink")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| !name.starts_with('_'))
        .collect();
    assert_eq!(
        folders,
        vec!["public.events".to_owned()],
        "one folder, the root's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_decoding_messages_are_written_when_asked() {
    let setup = fixture(&[], SALES_DDL).await;
    setup.add_source_setting("messages = \"write\"");
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    if setup.cluster.major().await < 14 {
        // PostgreSQL 13's pgoutput has no `messages` option: pgcdc says so and streams rows.
        pgcdc
            .wait_output("needs PostgreSQL 14 or later", DEADLINE)
            .await;
        setup
            .cluster
            .execute("insert into public.sales values (1, 'no messages here', 1)")
            .await;
        setup
            .wait_table_matches("public.sales", &["id"], "rows flow without messages")
            .await;
        pgcdc.stop_cleanly(DEADLINE).await;
        assert!(
            !setup.sink.join("_messages").exists(),
            "no messages folder on PostgreSQL 13"
        );
        return;
    }
    setup
        .cluster
        .execute(
            "begin;
             insert into public.sales values (1, 'with a message', 1);
             select pg_logical_emit_message(true, 'app.audit', 'a, \"quoted\" line');
             commit;
             select pg_logical_emit_message(false, 'app.raw', '\\x00ff'::bytea);
             select pg_logical_emit_message(false, 'pgcdc.heartbeat', 'never written');",
        )
        .await;
    let sink = setup.sink.clone();
    let rows = wait_until("both messages land", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "_messages").ok()?;
            (rows.len() >= 2).then_some(rows)
        }
    })
    .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let value = |row: &ChangeRow, column: &str| row.values[column].clone().unwrap_or_default();
    assert_eq!(rows.len(), 2, "the heartbeat is not written");
    assert_eq!(rows[0].op, 'M');
    assert_eq!(value(&rows[0], "prefix"), "app.audit");
    assert_eq!(value(&rows[0], "transactional"), "t");
    assert_eq!(
        value(&rows[0], "content"),
        format!("\\x{}", hex(b"a, \"quoted\" line"))
    );
    assert_eq!(value(&rows[1], "prefix"), "app.raw");
    assert_eq!(value(&rows[1], "transactional"), "f");
    assert_eq!(value(&rows[1], "content"), "\\x00ff");
    // The transactional message shares its transaction's commit LSN with the insert.
    let sales = read_change_files(&setup.sink, "public.sales");
    let insert = sales.iter().find(|r| r.op == 'I').expect("the insert");
    assert_eq!(rows[0].commit_lsn, insert.commit_lsn);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The column lists (`name type`) of the schema files in `dir`, in version order, and the
/// documents themselves.
fn schema_shapes(dir: &std::path::Path) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let mut documents: Vec<serde_json::Value> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                .collect()
        })
        .unwrap_or_default();
    documents.sort_by_key(|d| d["version"].as_str().unwrap_or_default().to_owned());
    let shapes = documents
        .iter()
        .map(|d| {
            d["columns"]
                .as_array()
                .map(|columns| {
                    columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {}",
                                c["name"].as_str().unwrap_or_default(),
                                c["type"].as_str().unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    (shapes, documents)
}

/// Issue 24: a key change is written the same way under every replica identity (the old key's
/// `D`, then the new row at the next `_seq`), so a replay by key drops the old key. Under
/// `REPLICA IDENTITY FULL` pgoutput sends the whole old row with every update and flags every
/// column as key; pgcdc keys the table by its primary key and its `D` carries the old row.
#[tokio::test(flavor = "multi_thread")]
async fn key_changes_replay_under_every_replica_identity() {
    // (table, key column that changes, replay key)
    let tables: [(&str, &str, &[&str]); 3] = [
        ("public.k_default", "id", &["id"]),
        ("public.k_index", "a", &["a", "b"]),
        ("public.k_full", "id", &["id"]),
    ];
    // `big` is stored out of line (TOAST), so updates that leave it alone do not send it.
    let big = |seed: &str| {
        format!(
            "(select string_agg(md5(g::text || {seed}::text), '') from generate_series(1, 300) g)"
        )
    };
    let big_i = big("i");
    let setup = fixture(
        &[],
        &format!(
            "create table public.k_default (id int primary key, v text, big text);
             create table public.k_index (a int not null, b int not null default 7, v text,
                                          big text);
             create unique index k_index_ab on public.k_index (a, b);
             alter table public.k_index replica identity using index k_index_ab;
             create table public.k_full (id int primary key, v text, big text);
             alter table public.k_full replica identity full;
             insert into public.k_default (id, v, big) select i, 'v' || i, {big_i} from generate_series(1, 6) i;
             insert into public.k_index (a, v, big) select i, 'v' || i, {big_i} from generate_series(1, 6) i;
             insert into public.k_full (id, v, big) select i, 'v' || i, {big_i} from generate_series(1, 6) i;
             create publication pgcdc_pub for table public.k_default, public.k_index, public.k_full;"
        ),
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    for (table, k, _) in tables {
        let statements = [
            // One statement, one row.
            format!("update {table} set {k} = 10 where {k} = 3"),
            // Chained in one transaction.
            format!(
                "begin;
                 update {table} set {k} = 100 where {k} = 1;
                 update {table} set {k} = 101 where {k} = 100;
                 update {table} set {k} = 102 where {k} = 101;
                 commit;"
            ),
            // Across transactions.
            format!("update {table} set {k} = 200 where {k} = 2"),
            format!("update {table} set {k} = 201 where {k} = 200"),
            // Ordinary updates (the TOASTed value unchanged), then one statement moving two
            // rows with the TOASTed value unchanged.
            format!("update {table} set v = 'ordinary' where {k} = 4"),
            format!("update {table} set v = 'moved', {k} = {k} + 1000 where {k} in (4, 5)"),
            // A delete, a re-insert of the deleted key and of a key moved away.
            format!("delete from {table} where {k} = 1004"),
            format!("insert into {table} ({k}, v, big) values (1004, 'back', 'small')"),
            format!(
                "insert into {table} ({k}, v, big) values (3, 'again', {})",
                big("3")
            ),
            // Ordinary updates around a key change in one transaction.
            format!(
                "begin;
                 update {table} set v = 'before' where {k} = 10;
                 update {table} set {k} = 11 where {k} = 10;
                 update {table} set v = 'after' where {k} = 11;
                 update {table} set big = 'rewritten' where {k} = 6;
                 commit;"
            ),
        ];
        for sql in statements {
            setup.cluster.execute(&sql).await;
        }
    }
    for (table, _, key) in tables {
        let rows = setup
            .wait_table_matches(table, key, &format!("{table} replays to the table"))
            .await;
        let deletes: Vec<&ChangeRow> = rows.iter().filter(|r| r.op == 'D').collect();
        // 3→10, 1→100→101→102, 2→200→201, 4 and 5 moved, the delete of 1004, 10→11.
        assert_eq!(
            deletes.len(),
            10,
            "{table}: one D per key change and delete"
        );
        if table != "public.k_full" {
            for d in &deletes {
                assert_eq!(d.get("v"), None, "{table}: a D carries only the key: {d:?}");
            }
        }
        if table == "public.k_full" {
            for d in &deletes {
                assert!(
                    d.get("v").is_some() && d.get("big").is_some_and(|b| b.len() > 2000),
                    "a D of the FULL table carries the whole old row: {d:?}"
                );
            }
            // The ordinary updates stay one U row each: every D is followed by the U of the
            // new key at the next `_seq`, except the plain delete.
            let moves = deletes
                .iter()
                .filter(|d| {
                    rows.iter()
                        .any(|r| r.op == 'U' && r.commit_lsn == d.commit_lsn && r.seq == d.seq + 1)
                })
                .count();
            assert_eq!(moves, 9, "nine key changes, each a D then a U");
            let updates = rows.iter().filter(|r| r.op == 'U').count();
            assert_eq!(updates, 9 + 4, "nine moved rows and four ordinary updates");
        }
    }
    pgcdc.stop_cleanly(DEADLINE).await;
    // One schema file per table: the copy's and the stream's name the same key, the one the D
    // and U rows use (the primary key of the FULL table, not every column).
    for (table, _, key) in tables {
        let schema_dir = setup.sink.join(format!("{table}/_schema"));
        let documents: Vec<serde_json::Value> = std::fs::read_dir(&schema_dir)
            .expect("schema folder")
            .map(|entry| {
                let path = entry.expect("entry").path();
                serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("json")
            })
            .collect();
        assert_eq!(documents.len(), 1, "{table}: {documents:?}");
        assert_eq!(
            documents[0]["key_columns"],
            serde_json::json!(key),
            "{table}"
        );
    }
}

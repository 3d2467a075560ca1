//! What the stream never says about the publication's tables: partitions attached, detached,
//! dropped or truncated under `publish_via_partition_root`, and tables leaving and joining the
//! publication. pgcdc reads them from the catalog; these tests change them while it runs, while
//! a copy waits, across a kill and a reconnect, and compare the replay with the tables.

mod common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(180);

async fn fixture(ddl: &str) -> Fixture {
    Fixture::builder()
        .ddl(ddl)
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv.gz")
        .deadline(DEADLINE)
        .start()
        .await
}

/// A root `public.events` published through it, with two partitions of rows, and tables that
/// are not partitions yet (`events_2023`, `events_2021`) or not published (`side`).
const EVENTS_DDL: &str = "
    create table public.events (id bigint, day date, v text, primary key (id, day))
        partition by range (day);
    create table public.events_2024 partition of public.events
        for values from ('2024-01-01') to ('2025-01-01');
    create table public.events_2025 partition of public.events
        for values from ('2025-01-01') to ('2026-01-01');
    insert into public.events select g, date '2024-06-01' + (g % 400), 'old' from generate_series(1, 1000) g;
    create table public.events_2023 (id bigint, day date, v text, primary key (id, day));
    insert into public.events_2023 select g, date '2023-01-01' + (g % 300), 'attached' from generate_series(5001, 5101) g;
    create table public.events_2021 (id bigint, day date, v text, primary key (id, day));
    insert into public.events_2021 select g, date '2021-01-01' + (g % 300), 'second' from generate_series(20001, 20050) g;
    create table public.side (id bigint primary key, v text);
    create publication pgcdc_pub for table public.events with (publish_via_partition_root = true);
";

const ATTACH_2023: &str = "alter table public.events attach partition public.events_2023
    for values from ('2023-01-01') to ('2024-01-01')";

async fn events_match(setup: &Fixture, what: &str) {
    setup
        .wait_table_matches("public.events", &["id", "day"], what)
        .await;
}

/// The checkpoint pgcdc wrote, as JSON (`Null` until there is one).
fn checkpoint(setup: &Fixture) -> serde_json::Value {
    std::fs::read_to_string(setup.sink.join("_pgcdc/pgcdc/checkpoint.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Waits until the checkpoint satisfies `test`.
async fn wait_checkpoint(setup: &Fixture, what: &str, test: impl Fn(&serde_json::Value) -> bool) {
    wait_until(what, DEADLINE, || {
        let ok = test(&checkpoint(setup));
        async move { ok.then_some(()) }
    })
    .await;
}

/// How many leaves of `root` the checkpoint's catalog record holds.
fn leaves(ck: &serde_json::Value, root: &str) -> usize {
    ck["partitions"][root].as_array().map_or(0, Vec::len)
}

/// Whether the checkpoint records that `root` must be copied again.
fn recopy_pending(ck: &serde_json::Value, root: &str) -> bool {
    ck["recopy"]
        .as_array()
        .is_some_and(|r| r.iter().any(|v| v == root))
}

/// A session holding a transaction with an xid open: a temporary slot (a whole-table copy)
/// cannot become consistent until it ends, so the copy waits.
async fn hold_copies(setup: &Fixture) -> tokio_postgres::Client {
    let holder = setup.cluster.client(SHOP_DB).await;
    holder
        .batch_execute("begin; insert into public.side values (1, 'open');")
        .await
        .expect("open transaction");
    holder
}

/// Partitions changed while running, published through their root: none of `ATTACH` (of a
/// table holding rows), `DETACH` or a partition's `TRUNCATE` sends a row, yet each changes the
/// root's rows. pgcdc reads the partition set from the catalog and copies the root again when
/// it changed; a partition created empty costs no copy. A table that joins the publication
/// without any change afterwards is copied too (pgoutput names a table only with a change).
#[tokio::test(flavor = "multi_thread")]
async fn partitions_attached_detached_or_truncated_while_running_replay_exactly() {
    let setup = fixture(
        "create table public.events (id bigint, day date, v text, primary key (id, day))
             partition by range (day);
         create table public.events_2024 partition of public.events
             for values from ('2024-01-01') to ('2025-01-01');
         create table public.events_2025 partition of public.events
             for values from ('2025-01-01') to ('2026-01-01');
         insert into public.events select g, date '2024-06-01' + (g % 400), 'old' from generate_series(1, 1000) g;
         create table public.events_2023 (id bigint, day date, v text, primary key (id, day));
         insert into public.events_2023 select g, date '2023-01-01' + (g % 300), 'attached' from generate_series(5001, 5101) g;
         create table public.quiet (id bigint primary key, v text);
         insert into public.quiet select g, 'quiet ' || g from generate_series(1, 50) g;
         create publication pgcdc_pub for table public.events with (publish_via_partition_root = true);",
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let matches =
        |what: &'static str| setup.wait_table_matches("public.events", &["id", "day"], what);
    matches("the first copy").await;
    // The first reading of the partitions is what a change is compared with.
    wait_checkpoint(&setup, "the partitions recorded", |ck| {
        leaves(ck, "public.events") == 2
    })
    .await;

    setup
        .cluster
        .execute(
            "alter table public.events attach partition public.events_2023
                 for values from ('2023-01-01') to ('2024-01-01')",
        )
        .await;
    matches("an attached partition's rows are in the root's folder").await;

    setup
        .cluster
        .execute("alter table public.events detach partition public.events_2024")
        .await;
    matches("a detached partition's rows leave the root's folder").await;

    setup
        .cluster
        .execute(
            "insert into public.events select g, date '2025-02-01' + (g % 100), 'late' from generate_series(7001, 7100) g;
             truncate public.events_2025;",
        )
        .await;
    matches("a truncated partition's rows leave the root's folder").await;
    let copies_so_far = read_change_files(&setup.sink, "public.events")
        .iter()
        .filter(|r| r.op == 'E')
        .count();

    // Made empty, then written through the root: the stream carries every row, no copy needed.
    setup
        .cluster
        .execute(
            "create table public.events_2026 partition of public.events
                 for values from ('2026-01-01') to ('2027-01-01');",
        )
        .await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub add table public.quiet")
        .await;
    setup
        .wait_table_matches(
            "public.quiet",
            &["id"],
            "a table that joined without a change is copied",
        )
        .await;
    setup
        .cluster
        .execute("insert into public.events values (9001, '2026-03-01', 'new partition')")
        .await;
    matches("rows of a partition made empty arrive by the stream").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let copies = read_change_files(&setup.sink, "public.events")
        .iter()
        .filter(|r| r.op == 'E')
        .count();
    assert_eq!(
        copies_so_far, 4,
        "the first copy, then one per partition change"
    );
    assert_eq!(
        copies, copies_so_far,
        "an empty new partition is not copied"
    );
    assert_eq!(
        duplicate_keys(&read_change_files(&setup.sink, "public.events")),
        0
    );
}

/// pgcdc streaming `EVENTS_DDL` with its partitions recorded, then run again with windows that
/// stay open 20 s, and `events_2023` attached: the root's copy is recorded in the checkpoint
/// and cannot be durable before the returned process has run 20 s more. On PostgreSQL 13 the
/// root is copied whole, and that copy waits for the returned session's open transaction too.
async fn root_copy_waiting() -> (Fixture, Pgcdc, tokio_postgres::Client) {
    let setup = fixture(EVENTS_DDL).await;
    let mut first = Pgcdc::run(&setup.config);
    events_match(&setup, "the first copy").await;
    wait_checkpoint(&setup, "the partitions recorded", |ck| {
        leaves(ck, "public.events") == 2
    })
    .await;
    first.stop_cleanly(DEADLINE).await;
    let slow = setup.config_variant("slow-windows", |c| c.set("batch.window", "20s"));
    let mut pgcdc = Pgcdc::run(&slow);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let holder = hold_copies(&setup).await;
    setup.cluster.execute(ATTACH_2023).await;
    wait_checkpoint(&setup, "the root's copy recorded", |ck| {
        recopy_pending(ck, "public.events")
    })
    .await;
    (setup, pgcdc, holder)
}

/// A root's copy is asked for (a partition attached) and is not durable yet; pgcdc is killed.
/// The request is in the checkpoint before the copy begins, so the next start copies the root.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_copy_pending_at_a_kill_is_made_after_the_restart() {
    let (setup, mut pgcdc, holder) = root_copy_waiting().await;
    pgcdc.kill();
    assert!(
        recopy_pending(&checkpoint(&setup), "public.events"),
        "the killed process's copy was not durable"
    );
    holder.batch_execute("commit").await.expect("commit");
    let mut pgcdc = Pgcdc::run(&setup.config);
    events_match(&setup, "the attached rows arrive after the restart").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert!(!recopy_pending(&checkpoint(&setup), "public.events"));
}

/// The same without a kill: the replication connection is cut while the root's copy is not
/// durable, and pgcdc reconnects by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_copy_pending_at_a_reconnect_is_made() {
    let (setup, mut pgcdc, holder) = root_copy_waiting().await;
    let streams = pgcdc.output_text().matches("Streaming changes").count();
    setup
        .cluster
        .execute(
            "select pg_terminate_backend(active_pid) from pg_replication_slots
             where slot_name = 'pgcdc' and active_pid is not null",
        )
        .await;
    wait_until("pgcdc streams again", DEADLINE, || {
        let again = pgcdc.output_text().matches("Streaming changes").count() > streams;
        async move { again.then_some(()) }
    })
    .await;
    holder.batch_execute("commit").await.expect("commit");
    events_match(&setup, "the attached rows arrive after the reconnect").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert!(!recopy_pending(&checkpoint(&setup), "public.events"));
}

/// A root's copy is pending at a kill, and another partition is attached while pgcdc is down:
/// the next start copies the root for both changes (the second is seen against the partitions
/// the checkpoint recorded). On PostgreSQL 13, where the root is copied whole, the copy the
/// restart begins waits until the second change is seen, and the root is copied once more after
/// it (that copy's snapshot may predate the change); chunked copies plan after the change.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_change_during_the_roots_copy_copies_it_again() {
    let (setup, mut pgcdc, holder) = root_copy_waiting().await;
    pgcdc.kill();
    setup
        .cluster
        .execute(
            "alter table public.events attach partition public.events_2021
                 for values from ('2021-01-01') to ('2022-01-01')",
        )
        .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    wait_checkpoint(&setup, "the second attach seen", |ck| {
        leaves(ck, "public.events") == 4
    })
    .await;
    holder.batch_execute("commit").await.expect("commit");
    events_match(&setup, "both attached partitions' rows arrive").await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let output = pgcdc.output_text();
    if setup.cluster.major().await < 14 {
        assert!(output.contains("it was asked for while its copy ran"));
    }
    assert!(!recopy_pending(&checkpoint(&setup), "public.events"));
    assert_eq!(
        duplicate_keys(&read_change_files(&setup.sink, "public.events")),
        0
    );
}

/// `DETACH`, changes to the detached table, `ATTACH` again, all between two catalog reads: the
/// leaf keeps its oid and heap file, but not the transaction that attached it.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_detached_changed_and_attached_again_is_copied() {
    let setup = fixture(EVENTS_DDL).await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    events_match(&setup, "the first copy").await;
    wait_checkpoint(&setup, "the partitions recorded", |ck| {
        leaves(ck, "public.events") == 2
    })
    .await;
    setup
        .cluster
        .execute(
            "alter table public.events detach partition public.events_2024;
             delete from public.events_2024 where id <= 100;
             update public.events_2024 set v = 'changed while detached' where id between 101 and 150;
             insert into public.events_2024 values (8001, '2024-02-02', 'inserted while detached');
             alter table public.events attach partition public.events_2024
                 for values from ('2024-01-01') to ('2025-01-01');",
        )
        .await;
    events_match(&setup, "the changes made while detached arrive").await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A table taken out of the publication, changed, and put back: the changes made while it was
/// out were never sent, so joining again copies it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_that_leaves_and_joins_the_publication_is_copied_again() {
    let setup = fixture(
        "create table public.sales (id bigint primary key, v text);
         insert into public.sales select g, 'v' || g from generate_series(1, 200) g;
         create publication pgcdc_pub for table public.sales;",
    )
    .await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    setup
        .wait_table_matches("public.sales", &["id"], "the first copy")
        .await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub drop table public.sales")
        .await;
    pgcdc
        .wait_output("The table left the publication", DEADLINE)
        .await;
    setup
        .cluster
        .execute(
            "delete from public.sales where id <= 10;
             update public.sales set v = 'changed while out' where id between 11 and 20;
             insert into public.sales select g, 'new' from generate_series(1001, 1010) g;
             alter publication pgcdc_pub add table public.sales;",
        )
        .await;
    setup
        .wait_table_matches("public.sales", &["id"], "the changes made while out arrive")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// Under `publish_via_partition_root`, pgoutput sends a partition's own Relation message beside
/// its root's; that must not count the partition as copied. When the publication later
/// publishes partitions themselves, each is copied.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_published_later_by_themselves_are_copied() {
    let setup = fixture(EVENTS_DDL).await;
    let mut pgcdc = Pgcdc::run(&setup.config);
    events_match(&setup, "the first copy").await;
    setup
        .cluster
        .execute("insert into public.events values (9001, '2025-03-01', 'touch 2025')")
        .await;
    events_match(&setup, "the insert streams through the root").await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub set (publish_via_partition_root = false)")
        .await;
    setup
        .cluster
        .execute(
            "insert into public.events values (9002, '2025-03-02', 'after switch');
             insert into public.events values (9003, '2024-03-02', 'after switch');",
        )
        .await;
    for leaf in ["public.events_2024", "public.events_2025"] {
        setup
            .wait_table_matches(leaf, &["id", "day"], "a partition published by itself")
            .await;
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

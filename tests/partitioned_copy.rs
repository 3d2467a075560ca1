//! A partitioned table published through its root, copied in chunks beside the stream: the
//! chunks read each leaf partition's heap, by column name, into the root's folder. Provoked
//! here (HAZARDS.md, "Maintenance and DDL" and "Keys and values"): a leaf whose columns are in
//! another order, a leaf two levels down, rows moved between partitions by key updates, unchanged
//! out-of-line values, and a `VACUUM FULL` of one leaf during the copy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(240);

/// `public.pr`, partitioned by `region` into three leaves: `pr_a`, `pr_b` (made apart with its
/// columns in another order, then attached) and `pr_c` (a partition of the partitioned `pr_cd`).
/// 120,000 rows, one in forty with an out-of-line `body`.
const ROOT_DDL: &str = "
    create table public.pr (id int not null, region int not null, n int, body text,
                            primary key (id, region)) partition by range (region);
    create table public.pr_a partition of public.pr for values from (0) to (10);
    create table public.pr_b (body text, n int, region int not null, id int not null,
                              primary key (id, region));
    alter table public.pr attach partition public.pr_b for values from (10) to (20);
    create table public.pr_cd partition of public.pr for values from (20) to (40)
        partition by range (region);
    create table public.pr_c partition of public.pr_cd for values from (20) to (40);
    alter table public.pr_a alter column body set storage external;
    alter table public.pr_b alter column body set storage external;
    alter table public.pr_c alter column body set storage external;
    insert into public.pr
    select g, (g % 3) * 10 + g % 7, g % 1000,
           case when g % 40 = 0 then repeat(md5(g::text), 90) end
    from generate_series(1, 120000) g;
    analyze public.pr;
    create publication pgcdc_pub for table public.pr with (publish_via_partition_root = true);
";

/// Small transactions until stopped: updates (some leaving an out-of-line value unchanged),
/// rows moved to another partition (a key change: `D` then `I` through the root), deletes, and
/// inserts.
async fn writer(url: String, stop: Arc<AtomicBool>) -> u64 {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("writer connection");
    tokio::spawn(connection);
    let mut k: i64 = 11;
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k = (k * 7919 + 17) % 120_000 + 1;
        let toasted = k - k % 40 + 40;
        let sql = format!(
            "begin;
             update public.pr set n = n + 1 where id in ({k}, {toasted});
             update public.pr set region = (region + 10) % 40 where id = {moved};
             delete from public.pr where id = {gone};
             insert into public.pr values ({fresh}, {region}, 1, repeat(md5('{fresh}'), 90));
             commit;",
            moved = (k * 17) % 120_000 + 1,
            gone = (k * 31) % 120_000 + 1,
            fresh = 1_000_000 + done as i64,
            region = done % 40,
        );
        if let Err(e) = client.batch_execute(&sql).await {
            panic!("writer transaction {done}: {}\n{sql}", pg_error(&e));
        }
        done += 1;
    }
    done
}

/// The root is copied in chunks (64 KiB, 2 workers) under the writer; at 40% of the chunks one
/// leaf is rewritten. The copy starts over, and the files replay to exactly the root's rows,
/// out-of-line values and moved rows included.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_root_is_copied_in_chunks_under_a_writer_and_a_leaf_rewrite() {
    let Some(setup) = Fixture::builder()
        .ddl(ROOT_DDL)
        .chunked_copy(2, "64KiB")
        .table("public.pr", &["id", "region"])
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let addr = metrics_listen(&setup.config);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        setup.cluster.url(SUPERUSER, None, SHOP_DB),
        stop.clone(),
    ));
    let mut pgcdc = setup.run(&setup.config);
    let (placed, chunks) = common::http::copy_chunks_placed(&addr, 0.4, DEADLINE).await;
    eprintln!("{placed} of {chunks} chunks placed: vacuum full public.pr_b");
    setup.cluster.execute("vacuum full public.pr_b").await;
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    stop.store(true, Ordering::Relaxed);
    assert!(writing.await.expect("writer") > 0);
    let rows = setup
        .wait_replay_matches("the replay equals the root's rows")
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    pgcdc.stop_cleanly(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(
        output.contains("Copying the table in chunks beside the stream"),
        "{output}"
    );
    assert!(!output.contains("Copying the table whole"), "{output}");
    assert!(output.contains("rewritten during its copy"), "{output}");
    // The first copy, and at least one more for the rewrite (the catalog watch may see the new
    // heap file too, and copy the root once more).
    assert!(rows.iter().filter(|r| r.op == 'B').count() >= 2);
    // Every leaf's rows came through the root's folder, none through a leaf's.
    for leaf in ["public.pr_a", "public.pr_b", "public.pr_c", "public.pr_cd"] {
        assert!(read_change_files(&setup.sink, leaf).is_empty(), "{leaf}");
    }
}

/// The replication role may read the root (the setup grants SELECT on each published table)
/// but not every partition by itself: `ev_1` has row-level security enabled (its policies do not
/// apply through the root, and allow nothing directly), `ev_2` grants the role nothing. Chunks
/// that read `only <leaf>` stopped pgcdc ("permission denied for table ev_2") or silently lost
/// `ev_1`'s rows (the break review); such a root is read through the root, whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_whose_partitions_the_role_cannot_read_directly_is_copied_through_the_root() {
    let Some(setup) = Fixture::builder()
        .ddl(
            "create table public.ev (id int not null, region int not null, v text,
                                     primary key (id, region)) partition by list (region);
             create table public.ev_1 partition of public.ev for values in (1);
             create table public.ev_2 partition of public.ev for values in (2);
             insert into public.ev select g, 1 + g % 2, 'v' || g from generate_series(1, 2000) g;
             alter table public.ev_1 enable row level security;
             revoke all on public.ev_1, public.ev_2 from pgcdc_scram;
             grant select on public.ev to pgcdc_scram;
             create publication pgcdc_pub for table public.ev with (publish_via_partition_root = true);",
        )
        .role(SCRAM_USER)
        .table("public.ev", &["id", "region"])
        .min_major(14)
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let mut pgcdc = setup.run(&setup.config);
    setup
        .wait_replay_matches("every row of the root is copied with the root's privilege")
        .await;
    setup
        .cluster
        .execute("insert into public.ev values (5001, 1, 'streamed'), (5002, 2, 'streamed')")
        .await;
    setup
        .wait_replay_matches("rows streamed through the root follow")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    let output = pgcdc.output_text();
    assert!(
        output.contains("a partition cannot be read by itself"),
        "{output}"
    );
    assert!(!output.contains("permission denied"), "{output}");
}

//! Copies that start over, resume or lose their table, against a real cluster: a chunked copy
//! started over (`pgcdc snapshot`, a column added) while chunks of the earlier attempt are
//! still on their way, a copy resumed after SIGKILL while updates moved rows into chunks already
//! durable, and a table dropped during its copy. Written from a break review of the copy
//! engine; each failed before its fix (rows lost, rows of the old shape, pgcdc stopped).

mod common;

use std::time::Duration;

use common::http::copy_chunks_placed;
use common::*;

const DEADLINE: Duration = Duration::from_secs(240);

/// `ddl` on PostgreSQL 14+ with `table` (key `id`) copied in chunks of `chunk_size` by
/// `workers` workers; `None` where chunked copies do not exist.
async fn chunked(ddl: &str, table: &str, workers: u32, chunk_size: &str) -> Option<Fixture> {
    Fixture::builder()
        .ddl(ddl)
        .chunked_copy(workers, chunk_size)
        .table(table, &["id"])
        .deadline(DEADLINE)
        .start_if_supported()
        .await
}

/// Every change file of `table` parses: no row has another number of fields than its header.
fn every_file_parses(setup: &Fixture, table: &str) {
    for file in change_files(&setup.sink, table).expect("change files") {
        let text = read_text(&file).expect("read");
        if let Err(e) = parse_change_file(&file, &text) {
            panic!("a file holds rows of another shape: {e}");
        }
    }
}

const SR_DDL: &str = "
    create table public.sr (id int primary key, n int not null, note text);
    insert into public.sr select g, 0, 'row ' || g from generate_series(1, 400000) g;
    create publication pgcdc_pub for table public.sr;
";

/// `pgcdc snapshot` for a table whose copy is under way starts the copy over with the same
/// plan (nothing changed in the heap). Chunks of the abandoned attempt still on their way
/// must not count for the new one: placed before its `B`, their rows are gone after its `E`
/// (80,384 of 400,000 rows were).
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_request_during_a_copy_loses_no_row() {
    let Some(setup) = chunked(SR_DDL, "public.sr", 2, "2MiB").await else {
        return;
    };
    setup.cluster.execute("vacuum analyze public.sr").await;
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    copy_chunks_placed(&addr, 0.3, DEADLINE).await;
    let mut request = Pgcdc::spawn(
        [
            "snapshot".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
            "public.sr".as_ref(),
        ],
        &[],
    );
    let status = request.wait_exit(DEADLINE).await;
    assert!(status.success(), "pgcdc snapshot: {}", request.stderr());
    pgcdc
        .wait_output("Copying the table again from the start", DEADLINE)
        .await;
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    setup
        .wait_replay_matches("the table copied again replays")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A column added (no rewrite) during a chunked copy starts it over with the same plan: rows
/// of the earlier attempt's chunks, read with the old columns, must not be written under the
/// new header (two files held 36,096 rows of 9 fields under a 10-column header).
#[tokio::test(flavor = "multi_thread")]
async fn a_column_added_during_a_copy_leaves_no_row_of_the_old_shape() {
    let ddl = "
        create table public.ac (id int primary key, n int not null, note text)
            with (fillfactor = 90);
        insert into public.ac select g, 0, 'row ' || g from generate_series(1, 400000) g;
        create publication pgcdc_pub for table public.ac;
    ";
    let Some(setup) = chunked(ddl, "public.ac", 2, "2MiB").await else {
        return;
    };
    setup.cluster.execute("vacuum analyze public.ac").await;
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    copy_chunks_placed(&addr, 0.3, DEADLINE).await;
    setup
        .cluster
        .execute("alter table public.ac add column extra int not null default 7")
        .await;
    // A HOT update: the heap keeps its size, so the plan after the restart is the same.
    setup
        .cluster
        .execute("update public.ac set n = 1 where id = 1")
        .await;
    pgcdc
        .wait_output("Copying the table again from the start", DEADLINE)
        .await;
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    every_file_parses(&setup, "public.ac");
    setup.wait_replay_matches("the added column replays").await;
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A table dropped during its chunked copy: the next chunk's read finds no relation. The copy
/// is given up and pgcdc goes on streaming the other tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_during_its_copy_does_not_stop_pgcdc() {
    let ddl = "
        create table public.dr (id int primary key, n int not null, note text);
        insert into public.dr select g, 0, 'row ' || g from generate_series(1, 400000) g;
        create table public.keep (id int primary key, v text);
        create publication pgcdc_pub for table public.dr, public.keep;
    ";
    let Some(setup) = chunked(ddl, "public.keep", 2, "256KiB").await else {
        return;
    };
    setup.cluster.execute("vacuum analyze public.dr").await;
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    copy_chunks_placed(&addr, 0.2, DEADLINE).await;
    setup.cluster.execute("drop table public.dr").await;
    pgcdc.wait_output("its copy is given up", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.keep values (1, 'after the drop')")
        .await;
    setup
        .wait_table_matches("public.keep", &["id"], "the other table streams on")
        .await;
    assert!(
        pgcdc.try_exit().is_none(),
        "pgcdc stopped: {}",
        pgcdc.stderr()
    );
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// `public.mv`: 100,000 rows with an out-of-line body on full pages, the first fifth emptied
/// and vacuumed, so a non-HOT update moves its row there; copied by one worker in block order,
/// 64 KiB chunks (8 blocks each).
async fn moved_rows_fixture() -> Option<Fixture> {
    let ddl = "
        create table public.mv (id int primary key, status int not null, body text);
        alter table public.mv alter column body set storage external;
        insert into public.mv select g, 0, repeat(md5(g::text), 90) from generate_series(1, 100000) g;
        delete from public.mv where id <= 20000;
        create publication pgcdc_pub for table public.mv;
    ";
    let setup = chunked(ddl, "public.mv", 1, "64KiB").await?;
    // Outside the set-up's transaction: the free space of the emptied pages is recorded.
    setup.cluster.execute("vacuum analyze public.mv").await;
    Some(setup)
}

/// How many rows with `status = 1` lie in the first `chunks` chunks' blocks.
async fn updated_rows_in_chunks(setup: &Fixture, chunks: u64) -> u64 {
    setup
        .cluster
        .query_scalar(&format!(
            "select count(*) from public.mv where status = 1 and (ctid::text::point)[0] < {}",
            chunks * 8
        ))
        .await
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Non-HOT updates during a copy that move rows into blocks a chunk already read, leaving their
/// out-of-line value unchanged (HAZARDS.md, "Table maintenance"): the chunk of their old blocks
/// no longer finds them, and the stream's update lacks the value. Each such key is read again
/// between watermarks, so the replay has every value.
#[tokio::test(flavor = "multi_thread")]
async fn rows_moved_into_copied_blocks_with_toast_unchanged_keep_their_values() {
    let Some(setup) = moved_rows_fixture().await else {
        return;
    };
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    let (placed, _) = copy_chunks_placed(&addr, 0.3, DEADLINE).await;
    setup
        .cluster
        .execute("update public.mv set status = 1 where id > 90000")
        .await;
    // At least `placed` chunks were read, in block order.
    let moved = updated_rows_in_chunks(&setup, placed as u64).await;
    assert!(
        moved >= 1000,
        "the update moved rows into chunks already read ({moved})"
    );
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    let rows = setup
        .wait_replay_matches("moved rows keep their out-of-line values")
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// SIGKILL during a copy; while pgcdc is down, single-row non-HOT updates that leave the
/// TOASTed body unchanged move rows of chunks not read yet into chunks already durable. The
/// resumed process replays those updates before its copy is planned again: their keys must be
/// read again all the same (12 keys had no body).
#[tokio::test(flavor = "multi_thread")]
async fn rows_moved_while_down_are_read_again_after_a_kill() {
    let Some(setup) = moved_rows_fixture().await else {
        return;
    };
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    copy_chunks_placed(&addr, 0.4, DEADLINE).await;
    let done_below = || {
        std::fs::read_to_string(setup.sink.join("_pgcdc/pgcdc/checkpoint.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.pointer("/copies/public.mv/done_below")?.as_u64())
            .unwrap_or(0)
    };
    wait_until("chunks durable in the checkpoint", DEADLINE, || {
        let d = done_below();
        async move { (d >= 40).then_some(()) }
    })
    .await;
    pgcdc.kill();
    let durable = done_below();
    setup
        .cluster
        .execute(
            "do $$ begin for i in 90001..100000 loop \
               update public.mv set status = 1 where id = i; commit; end loop; end $$",
        )
        .await;
    let moved = updated_rows_in_chunks(&setup, durable).await;
    assert!(
        moved >= 100,
        "updates moved rows into durable chunks ({moved})"
    );
    let mut pgcdc = setup.run(&setup.config);
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    let rows = setup
        .wait_replay_matches("moved rows keep their out-of-line values after a kill")
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    pgcdc.stop_cleanly(DEADLINE).await;
}

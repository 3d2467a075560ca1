//! Chunked copies beside the stream (PostgreSQL 14+: the watermarks are logical decoding
//! messages): exact while a writer changes the rows being copied, resumable after SIGKILL with
//! at most one chunk read again per kill, no long transaction, and `pgcdc snapshot` re-copying a
//! table while streaming so rows the files kept by mistake disappear.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(300);
const ROWS: i64 = 2_000_000;

/// A `big` table of 2M rows under `pgcdc_pub`, copied in 1 MiB chunks (about 17k rows each) by
/// two workers.
async fn big_table() -> Option<Fixture> {
    big_table_in_chunks_of("1MiB").await
}

async fn big_table_in_chunks_of(chunk_size: &str) -> Option<Fixture> {
    Fixture::builder()
        .min_major(14)
        .ddl(&format!(
            "create table public.big (id bigint primary key, v int not null, note text);
             insert into public.big select g, g % 1000, 'row ' || g from generate_series(1, {ROWS}) g;
             analyze public.big;
             create publication pgcdc_pub for table public.big;"
        ))
        .publication("pgcdc_pub")
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv.gz")
        .setting("snapshot.workers = 2")
        .setting(&format!("snapshot.chunk_size = \"{chunk_size}\""))
        .table("public.big", &["id"])
        .deadline(DEADLINE)
        .start_if_supported()
        .await
}

/// The copy's rows: per `_commit_lsn` (one high watermark each), how many `R` rows.
fn chunks(rows: &[ChangeRow]) -> BTreeMap<u64, usize> {
    let mut chunks = BTreeMap::new();
    for row in rows.iter().filter(|r| r.op == 'R') {
        *chunks.entry(row.commit_lsn).or_default() += 1;
    }
    chunks
}

fn copy_ended(rows: &[ChangeRow]) -> bool {
    rows.iter().any(|r| r.op == 'E')
}

/// Random updates, deletes and re-inserts over the whole key range, in small transactions, until
/// stopped. Returns how many transactions it committed.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    async fn start(cluster: &PgCluster) -> Writer {
        let client = cluster.client(SHOP_DB).await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut done = 0;
            while !flag.load(Ordering::Relaxed) {
                let mut sql = String::from("begin;");
                for _ in 0..20 {
                    let id = (next() % ROWS as u64) as i64 + 1;
                    sql.push_str(&match next() % 3 {
                        0 => format!("update public.big set v = v + 1, note = 'moved ' || id where id = {id};"),
                        1 => format!("delete from public.big where id = {id};"),
                        _ => format!(
                            "insert into public.big values ({id}, 7, 'back') on conflict (id) do update set v = -1;"
                        ),
                    });
                }
                sql.push_str("commit;");
                client
                    .batch_execute(&sql)
                    .await
                    .expect("writer transaction");
                done += 1;
            }
            done
        });
        Writer { stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task")
    }
}

/// The longest transaction a copy chunk held, sampled every 50 ms until stopped (ms).
fn watch_longest_copy_transaction(cluster: &PgCluster) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let longest = Arc::new(AtomicU64::new(0));
    let (flag, max) = (stop.clone(), longest.clone());
    let url = cluster.url(SUPERUSER, None, SHOP_DB);
    tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("watcher connection");
        tokio::spawn(connection);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !flag.load(Ordering::Relaxed) {
            tick.tick().await;
            let row = client
                .query_one(
                    "select coalesce(max(extract(epoch from clock_timestamp() - xact_start) * 1000), 0)::int8 \
                     from pg_stat_activity \
                     where xact_start is not null and pid <> pg_backend_pid() \
                       and (query like '%ctid >=%' or query like '%pg_current_snapshot%')",
                    &[],
                )
                .await;
            if let Ok(row) = row {
                max.fetch_max(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
            }
        }
    });
    (stop, longest)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_table_is_copied_in_chunks_exactly_while_a_writer_changes_it() {
    let Some(setup) = big_table().await else {
        return;
    };
    let (stop_watch, longest) = watch_longest_copy_transaction(&setup.cluster);
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let writer = Writer::start(&setup.cluster).await;
    let sink = setup.sink.clone();
    wait_until("the chunked copy ends", DEADLINE, || {
        let sink = sink.clone();
        async move { copy_ended(&read_change_files(&sink, "public.big")).then_some(()) }
    })
    .await;
    let transactions = writer.stop().await;
    stop_watch.store(true, Ordering::Relaxed);
    let rows = setup.wait_replay_matches("replay equals the table").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    assert_eq!(duplicate_keys(&rows), 0, "no (_commit_lsn, _seq) twice");
    let chunks = chunks(&rows);
    let copied: usize = chunks.values().sum();
    let longest_ms = longest.load(Ordering::Relaxed);
    eprintln!(
        "copied {copied} rows in {} chunks while the writer committed {transactions} transactions; longest copy transaction {longest_ms} ms",
        chunks.len()
    );
    assert!(chunks.len() > 50, "copied in chunks: {}", chunks.len());
    assert!(transactions > 20, "the writer ran during the copy");
    assert!(
        longest_ms < 5_000,
        "no copy transaction lasts long: {longest_ms} ms"
    );
    assert!(copied as i64 <= ROWS + 10_000, "{copied} rows copied");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_chunked_copy_redoes_at_most_one_chunk_per_kill() {
    // Small chunks, so five kills land before the copy ends (about 400 chunks).
    let Some(setup) = big_table_in_chunks_of("256KiB").await else {
        return;
    };
    let checkpoint = setup.sink.join("_pgcdc/pgcdc/checkpoint.json");
    let chunks_done = move || -> Option<u64> {
        let text = std::fs::read_to_string(&checkpoint).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let copy = json.get("copies")?.get("public.big")?;
        let below = copy.get("done_below")?.as_u64()?;
        let extra = copy
            .get("done")
            .and_then(|d| d.as_array())
            .map_or(0, |d| d.len() as u64);
        Some(below + extra)
    };
    let mut logs = String::new();
    for round in 0..5 {
        let mut pgcdc = setup.run(&setup.config);
        let before = chunks_done().unwrap_or(0);
        let started = std::time::Instant::now();
        while chunks_done().unwrap_or(0) < before + 2 {
            if started.elapsed() > DEADLINE {
                pgcdc.kill();
                panic!(
                    "round {round}: no two more durable chunks in {DEADLINE:?} ({before} before); checkpoint:\n{}\nearlier rounds:\n{logs}\nthis round:\n{}",
                    std::fs::read_to_string(setup.sink.join("_pgcdc/pgcdc/checkpoint.json"))
                        .unwrap_or_default(),
                    pgcdc.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !copy_ended(&setup.rows()),
            "round {round}: the copy must still be running when pgcdc is killed"
        );
        pgcdc.kill();
        logs.push_str(&pgcdc.stderr());
        if round == 0 {
            let mut status = Pgcdc::spawn(
                [
                    "slot".as_ref(),
                    "status".as_ref(),
                    "--config".as_ref(),
                    setup.config.as_os_str(),
                ],
                &[],
            );
            status.wait_exit(DEADLINE).await;
            let out = status.stdout();
            assert!(
                out.contains("copy in progress     public.big: begun at"),
                "slot status shows the copy: {out}"
            );
        }
    }
    let mut pgcdc = setup.run(&setup.config);
    let sink = setup.sink.clone();
    wait_until("the chunked copy ends", DEADLINE, || {
        let sink = sink.clone();
        async move { copy_ended(&read_change_files(&sink, "public.big")).then_some(()) }
    })
    .await;
    let rows = setup.wait_replay_matches("replay equals the table").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    assert_eq!(duplicate_keys(&rows), 0, "no (_commit_lsn, _seq) twice");
    let chunks = chunks(&rows);
    let copied: usize = chunks.values().sum();
    let chunk_size = chunks.values().copied().max().unwrap_or(0);
    eprintln!(
        "after 5 kills: {copied} rows copied for {ROWS} rows in the table ({} extra; chunk size {chunk_size} rows, bound {})",
        copied as i64 - ROWS,
        ROWS + 5 * chunk_size as i64
    );
    assert!(
        copied as i64 <= ROWS + 5 * chunk_size as i64,
        "at most one chunk read again per kill: {copied} rows for {ROWS}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pgcdc_snapshot_recopies_a_table_while_streaming_and_ghost_rows_disappear() {
    let Some(setup) = Fixture::builder()
        .min_major(14)
        .ddl(
            "create table public.t (id int primary key, name text);
             insert into public.t select g, 'n' || g from generate_series(1, 1000) g;
             create publication pgcdc_pub for table public.t;",
        )
        .publication("pgcdc_pub")
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv")
        .setting("snapshot.chunk_size = \"64KiB\"")
        .setting("source.on_slot_ahead = \"gap\"")
        .table("public.t", &["id"])
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let mut pgcdc = setup.run(&setup.config);
    setup.wait_replay_matches("first copy").await;
    pgcdc.stop_cleanly(DEADLINE).await;

    // A gap: rows deleted while the slot is moved past the deletes, as someone resetting the
    // slot by hand would. The files still hold those rows.
    setup
        .cluster
        .execute("delete from public.t where id <= 10")
        .await;
    let current = setup.cluster.insert_lsn().await;
    setup
        .cluster
        .wait_true(
            "the deletes are flushed",
            DEADLINE,
            &format!("select pg_current_wal_flush_lsn() >= '{current}'::pg_lsn"),
        )
        .await;
    let mut advance = Pgcdc::spawn(
        [
            "slot".as_ref(),
            "advance".as_ref(),
            "--to".as_ref(),
            current.as_ref(),
            "--yes".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
        ],
        &[],
    );
    let status = advance.wait_exit(DEADLINE).await;
    assert!(status.success(), "slot advance: {}", advance.stderr());
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.t values (5000, 'streamed')")
        .await;
    let client = setup.cluster.client(SHOP_DB).await;
    let sink = setup.sink.clone();
    wait_until("the insert after the gap is written", DEADLINE, || {
        let sink = sink.clone();
        async move {
            read_change_files(&sink, "public.t")
                .iter()
                .any(|r| r.values.get("id") == Some(&Some("5000".to_owned())))
                .then_some(())
        }
    })
    .await;
    let expected = table_state(&client, "public.t", &["id"]).await;
    let ghosts = replay(&setup.rows(), &["id"]);
    assert_eq!(ghosts.len(), expected.len() + 10, "ten ghost rows");

    let mut request = Pgcdc::spawn(
        [
            "snapshot".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
            "public.t".as_ref(),
        ],
        &[],
    );
    let status = request.wait_exit(DEADLINE).await;
    assert!(status.success(), "pgcdc snapshot: {}", request.stderr());
    assert!(request.stdout().contains("requested a copy of public.t"));
    setup
        .cluster
        .execute("update public.t set name = 'during' where id between 100 and 200")
        .await;
    let rows = setup
        .wait_replay_matches("the re-copy removes the ghost rows")
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_eq!(duplicate_keys(&rows), 0);
    assert_eq!(rows.iter().filter(|r| r.op == 'B').count(), 2, "two copies");
    assert_eq!(rows.iter().filter(|r| r.op == 'E').count(), 2);

    let mut unknown = Pgcdc::spawn(
        [
            "snapshot".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
            "public.nope".as_ref(),
        ],
        &[],
    );
    let status = unknown.wait_exit(DEADLINE).await;
    assert!(!status.success());
    assert!(
        unknown
            .stderr()
            .contains("public.nope is not published by pgcdc_pub"),
        "{}",
        unknown.stderr()
    );
}

//! What production databases do that the other suites' fresh clusters do not (HAZARDS.md,
//! "Session and server settings"): each test provokes one hazard against a real cluster while
//! pgcdc copies and streams, and asserts the files replay to exactly the table.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(240);

/// A database whose every default differs from pgcdc's session settings, and a table keyed by a
/// `timestamptz` (the DBLog rule matches copied and streamed rows by the key's bytes).
const FOREIGN_SETTINGS_DDL: &str = "
    create table public.events (
        at timestamptz not null,
        id int not null,
        span interval,
        payload bytea,
        ratio float8,
        day date,
        local timestamp,
        note text,
        primary key (at, id)
    );
    insert into public.events
    select timestamptz '2026-01-01 00:00:00.5+00' + g * interval '1 minute', g,
           g * interval '1 hour 2 minutes 3.25 seconds', decode(md5(g::text), 'hex'), g / 3.0,
           date '2026-01-01' + g % 400, timestamp '2026-01-01 12:00' + g * interval '1 second',
           'row ' || g
    from generate_series(1, 20000) g;
    analyze public.events;
    create publication pgcdc_pub for table public.events;
    alter database shop set timezone = 'Asia/Kolkata';
    alter database shop set datestyle = 'SQL, DMY';
    alter database shop set intervalstyle = 'sql_standard';
    alter database shop set bytea_output = 'escape';
    alter database shop set extra_float_digits = 0;
";

/// Updates, deletes and re-inserts of random keys, in small transactions, until stopped; on
/// a connection with the database's own (foreign) settings, as an application would have.
async fn writer(url: String, stop: Arc<AtomicBool>) -> u64 {
    let mut n: i64 = 7;
    transactions(
        &url,
        |_| stop.load(Ordering::Relaxed),
        |done| {
            n = (n * 7919 + 13) % 20000 + 1;
            format!(
                "begin;
                 update public.events set note = 'changed ' || now(), ratio = ratio * 2,
                        span = span + interval '1 day' where id = {n};
                 delete from public.events where id = {m};
                 insert into public.events (at, id, span, payload, ratio, day, local, note)
                 values (now(), {fresh}, interval '-3 days 4 hours', '\\x00ff'::bytea, 0.1,
                         current_date, localtimestamp, 'inserted at ' || now());
                 commit;",
                m = (n * 31) % 20000 + 1,
                fresh = 100_000 + done as i64,
            )
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_whose_settings_differ_replays_exactly_through_copy_and_stream() {
    let setup = Fixture::builder()
        .ddl(FOREIGN_SETTINGS_DDL)
        .setting("snapshot.workers = 2")
        .setting("snapshot.chunk_size = \"64KiB\"")
        .table("public.events", &["at", "id"])
        .deadline(DEADLINE)
        .start()
        .await;
    // The fixture's own connection reads in the canonical form; an application's does not.
    assert_eq!(
        setup.cluster.query_scalar("show timezone").await.as_deref(),
        Some("UTC")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        setup.cluster.url(SUPERUSER, None, SHOP_DB),
        stop.clone(),
    ));
    let mut pgcdc = setup.run(&setup.config);
    let rows = copy_ends_and_replays(
        &setup,
        &mut pgcdc,
        &stop,
        writing,
        "every copied and streamed row as the table holds it",
    )
    .await;
    // Both paths wrote rows, and both in the file format's form.
    assert!(rows.iter().any(|r| r.op == 'R') && rows.iter().any(|r| r.op == 'U'));
    for row in rows.iter().filter(|r| r.op == 'R' || r.op == 'I') {
        let at = row.get("at").expect("at");
        assert!(at.ends_with("+00:00") && at.contains('T'), "{at}");
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A key column whose value is stored out of line and an update that leaves it alone: the
/// server sends the old key with the update, changed or not (HAZARDS.md, "Keys and values").
/// The row must stay, with its key, under the default identity and under FULL.
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_out_of_line_key_keeps_its_row() {
    let setup = Fixture::builder()
        .ddl(
            "create table public.tk (id text primary key, v int, body text);
             alter table public.tk alter column id set storage external;
             create table public.tkf (id text primary key, v int, body text);
             alter table public.tkf alter column id set storage external;
             alter table public.tkf replica identity full;
             create publication pgcdc_pub for table public.tk, public.tkf;",
        )
        .table("public.tk", &["id"])
        .deadline(DEADLINE)
        .start()
        .await;
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    for table in ["public.tk", "public.tkf"] {
        setup
            .cluster
            .execute(&format!(
                "insert into {table} select repeat(md5(g::text), 80) || g, g, 'b' from generate_series(1, 5) g;
                 update {table} set v = v + 10;
                 update {table} set v = v + 1, body = repeat('x', 3000) where v % 2 = 0;
                 update {table} set id = 'short ' || v where v = 11;
                 delete from {table} where v = 15;"
            ))
            .await;
    }
    for table in ["public.tk", "public.tkf"] {
        let rows = setup
            .wait_table_matches(table, &["id"], "the rows keep their out-of-line keys")
            .await;
        assert_eq!(duplicate_keys(&rows), 0);
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// Waits for the copy to end, stops the writer (which must have written), and returns the
/// change rows once they replay to the table, with no change row twice.
async fn copy_ends_and_replays(
    setup: &Fixture,
    pgcdc: &mut Pgcdc,
    stop: &AtomicBool,
    writing: tokio::task::JoinHandle<u64>,
    what: &str,
) -> Vec<ChangeRow> {
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    stop.store(true, Ordering::Relaxed);
    let transactions = writing.await.expect("writer");
    assert!(transactions > 0);
    let rows = setup.wait_replay_matches(what).await;
    assert_eq!(duplicate_keys(&rows), 0);
    rows
}

/// Runs `sql(n)` for n = 0, 1, … on a connection of its own (the database's own settings, as an
/// application has) until `stop(n)`; returns how many ran.
async fn transactions(
    url: &str,
    stop: impl Fn(u64) -> bool,
    mut sql: impl FnMut(u64) -> String,
) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("writer connection");
    tokio::spawn(connection);
    let mut done = 0u64;
    while !stop(done) {
        let statements = sql(done);
        if let Err(e) = client.batch_execute(&statements).await {
            panic!("writer transaction {done}: {}\n{statements}", pg_error(&e));
        }
        done += 1;
    }
    done
}

/// Starts [`transactions`] on a task of its own: `sql(n, done)` with `n` stepping through a
/// pseudo-random walk of 1..=`rows` from `seed`. Returns the stop flag and the task (how many
/// transactions ran).
fn spawn_writer(
    setup: &Fixture,
    seed: i64,
    rows: i64,
    mut sql: impl FnMut(i64, u64) -> String + Send + 'static,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = setup.cluster.url(SUPERUSER, None, SHOP_DB);
    let writing = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = seed;
            transactions(
                &url,
                |_| stop.load(Ordering::Relaxed),
                |done| {
                    n = (n * 7919 + 13) % rows + 1;
                    sql(n, done)
                },
            )
            .await
        }
    });
    (stop, writing)
}

/// `ddl` on a cluster where `table` is copied in chunks beside the stream (64 KiB, 2 workers):
/// PostgreSQL 14 and later (13's pgoutput sends no logical messages, so it copies tables whole
/// in one exported snapshot, which a rewrite waits for).
async fn chunked_copy_of(ddl: &str, table: &str) -> Option<Fixture> {
    chunked_copy_keyed(ddl, table, &["id"]).await
}

/// [`chunked_copy_of`] with the replay keyed by `key`.
async fn chunked_copy_keyed(ddl: &str, table: &str, key: &[&str]) -> Option<Fixture> {
    Fixture::builder()
        .ddl(ddl)
        .chunked_copy(2, "64KiB")
        .table(table, key)
        .deadline(DEADLINE)
        .start_if_supported()
        .await
}

/// A table of 200,000 rows (one in fifty with a value stored out of line), big enough that a
/// copy in 64 KiB chunks takes hundreds of chunks. Half of each page is left free (also after a
/// rewrite), so most updates keep their row in its block; rows moved into chunks already read
/// have tests of their own (tests/copy_attempts.rs).
const REWRITE_DDL: &str = "
    create table public.rw (id int primary key, n int not null, note text, body text)
        with (fillfactor = 50);
    alter table public.rw alter column body set storage external;
    insert into public.rw
    select g, g % 1000, 'row ' || g,
           case when g % 50 = 0 then repeat(md5(g::text), 90) end
    from generate_series(1, 200000) g;
    analyze public.rw;
    create publication pgcdc_pub for table public.rw;
";

/// Small transactions on `public.rw` until stopped: updates and key changes (some leaving an
/// out-of-line value unchanged), deletes, and inserts of rows with an out-of-line value.
async fn rewrite_writer(url: String, stop: Arc<AtomicBool>) -> u64 {
    let mut k: i64 = 11;
    transactions(
        &url,
        |_| stop.load(Ordering::Relaxed),
        |done| {
            k = (k * 7919 + 17) % 200_000 + 1;
            // A row with an out-of-line value: the update leaves it unchanged.
            let toasted = k - k % 50 + 50;
            format!(
                "begin;
                 update public.rw set n = n + 1 where id in ({k}, {toasted});
                 update public.rw set id = -id where id = {moved};
                 delete from public.rw where id = {gone};
                 insert into public.rw (id, n, body) values ({fresh}, 1, repeat(md5('{fresh}'), 90));
                 commit;",
                gone = (k * 31) % 200_000 + 1,
                // A key change of a row with an out-of-line value, left unchanged.
                moved = (k * 17) % 200_000 / 50 * 50 + 50,
                fresh = 1_000_000 + done as i64,
            )
        },
    )
    .await
}

/// Starts the writer on `public.rw` and pgcdc, and waits until the share `at` of the copy's
/// chunks is placed; returns the writer's stop flag and task, pgcdc, and (placed, planned).
async fn copying_under_the_writer(
    setup: &Fixture,
    at: f64,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<u64>,
    Pgcdc,
    (f64, f64),
) {
    let addr = metrics_listen(&setup.config);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(rewrite_writer(
        setup.cluster.url(SUPERUSER, None, SHOP_DB),
        stop.clone(),
    ));
    let pgcdc = setup.run(&setup.config);
    let placed = chunks_placed(&addr, at).await;
    (stop, writing, pgcdc, placed)
}

/// Waits until the share `at` of the copy's chunks is placed; returns (placed, planned).
async fn chunks_placed(addr: &str, at: f64) -> (f64, f64) {
    common::http::copy_chunks_placed(addr, at, DEADLINE).await
}

/// Copies `public.rw` in chunks under a writer; once the share `at` of the chunks is placed,
/// runs `statements` (HAZARDS.md, "Maintenance and DDL"): a rewrite moves every row to other
/// blocks, a column change gives the stream's rows another shape, and logical decoding says
/// nothing of either. The copy must start over (the log `says` why, a second `B` row begins it)
/// and the files replay to exactly the table, out-of-line values and new columns included.
async fn ddl_during_a_copy_loses_nothing(at: f64, statements: &[&str], says: &str) {
    let Some(setup) = chunked_copy_of(REWRITE_DDL, "public.rw").await else {
        return;
    };
    let (stop, writing, mut pgcdc, (done, chunks)) = copying_under_the_writer(&setup, at).await;
    eprintln!("{done} of {chunks} chunks placed: {statements:?}");
    for sql in statements {
        setup.cluster.execute(sql).await;
    }
    let rows = copy_ends_and_replays(
        &setup,
        &mut pgcdc,
        &stop,
        writing,
        "the replay equals the table after the DDL",
    )
    .await;
    let output = pgcdc.output_text();
    assert!(output.contains(says), "the copy started over: {output}");
    assert_eq!(
        rows.iter().filter(|r| r.op == 'B').count(),
        2,
        "a new B row begins the copy again"
    );
    // Copied rows and markers belong to no transaction of the source.
    for row in rows.iter().filter(|r| matches!(r.op, 'R' | 'B' | 'E')) {
        assert_eq!(row.xid, None, "{row:?}");
    }
    assert!(rows.iter().filter(|r| r.op == 'U').all(|r| r.xid.is_some()));
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A third of the rows deleted, then `rewrite`, at 40% of the copy.
async fn a_rewrite_at_40_percent_of_a_copy_loses_nothing(rewrite: &str) {
    ddl_during_a_copy_loses_nothing(
        0.4,
        &["delete from public.rw where id % 3 = 0", rewrite],
        "rewritten during its copy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_full_during_a_copy_loses_nothing() {
    a_rewrite_at_40_percent_of_a_copy_loses_nothing("vacuum full public.rw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_during_a_copy_loses_nothing() {
    a_rewrite_at_40_percent_of_a_copy_loses_nothing("cluster public.rw using rw_pkey").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewriting_alter_type_during_a_copy_loses_nothing() {
    a_rewrite_at_40_percent_of_a_copy_loses_nothing(
        "alter table public.rw alter column n type bigint",
    )
    .await;
}

/// A table whose every row holds an out-of-line value, with room on each page (fillfactor 50) so
/// an update keeps the new tuple in the same block (the same chunk).
const KEY_CHANGE_DDL: &str = "
    create table public.kt (id int primary key, n int not null, body text) with (fillfactor = 50);
    alter table public.kt alter column body set storage external;
    insert into public.kt select g, 0, repeat(md5(g::text), 70) from generate_series(1, 40000) g;
    analyze public.kt;
    create publication pgcdc_pub for table public.kt;
";

/// Key changes (`id = -id`) on rows whose out-of-line value stays: pgoutput writes `D` of the
/// old key and `U` of the new with `_unchanged = [\"body\"]`.
/// Stops after `rounds` transactions: a chunk hit by such a change is read again (see the test),
/// so a copy under key changes that never pause would not end (README, "Limits").
async fn key_change_writer(url: String, rounds: u64) -> u64 {
    transactions(
        &url,
        |done| done >= rounds,
        |done| {
            let r = (done * 7919 + 13) % 1000;
            format!("update public.kt set id = -id, n = n + 1 where abs(id) % 1000 = {r}")
        },
    )
    .await
}

/// Key changes in chunks' windows after their snapshots: a chunk holds the old key `a` (dropped:
/// its `D` settles it) but not the new key `b`, whose only row is the stream's `U` that left
/// `body` out. Laying that update over a chunk row is impossible (no row of `b`), so the chunk
/// must be read again; otherwise the replay has `b` without its value (107 keys did).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_change_leaving_toast_unchanged_in_a_window_keeps_its_value() {
    let Some(setup) = chunked_copy_of(KEY_CHANGE_DDL, "public.kt").await else {
        return;
    };
    let mut pgcdc = setup.run(&setup.config);
    pgcdc
        .wait_output("Copying the table in chunks beside the stream", DEADLINE)
        .await;
    let transactions = key_change_writer(setup.cluster.url(SUPERUSER, None, SHOP_DB), 500).await;
    assert_eq!(transactions, 500);
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    let rows = setup
        .wait_replay_matches("key changes keep their out-of-line values")
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// `ALTER TABLE … ADD COLUMN` (no rewrite) at 30% of a copy under a steady writer: from then on
/// every stream row has a column the copy's planned columns lack. Reading chunks again with the
/// old columns never matched (the copy never ended); the copy starts over with the new columns,
/// ends, and replays to the table, new column included.
#[tokio::test(flavor = "multi_thread")]
async fn an_added_column_during_a_copy_is_in_its_rows_and_the_copy_ends() {
    ddl_during_a_copy_loses_nothing(
        0.3,
        &["alter table public.rw add column extra int"],
        "the table's columns or key changed during its copy",
    )
    .await;
}

/// `ALTER TABLE … RENAME COLUMN` (no rewrite) at 30% of a copy under a steady writer: the
/// stream's rows get another shape, and a chunk read of the planned columns fails on the old
/// name (pgcdc stopped on it); either way the copy starts over with the new names.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_column_during_a_copy_starts_it_over_and_the_copy_ends() {
    ddl_during_a_copy_loses_nothing(
        0.3,
        &["alter table public.rw rename column note to remark"],
        "the table's columns or key changed during its copy",
    )
    .await;
}

/// `ALTER TABLE … DROP COLUMN` at 30% of a copy under a steady writer: as a rename.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_column_during_a_copy_starts_it_over_and_the_copy_ends() {
    ddl_during_a_copy_loses_nothing(
        0.3,
        &["alter table public.rw drop column note"],
        "the table's columns or key changed during its copy",
    )
    .await;
}

/// `pgcdc snapshot` during a copy, after the publication's row filter was widened (the README's
/// advice for that case): the copy under way was planned with the narrow filter, so the request
/// starts it over with the publication as it is now, and every row the wide filter admits ends
/// up in the files.
#[tokio::test(flavor = "multi_thread")]
async fn pgcdc_snapshot_during_a_copy_after_a_widened_filter_copies_the_new_rows() {
    let ddl = REWRITE_DDL.replace(
        "for table public.rw;",
        "for table public.rw where (id % 2 = 0);",
    );
    let Some(setup) = Fixture::builder()
        .ddl(&ddl)
        .chunked_copy(2, "64KiB")
        .table("public.rw", &["id"])
        .min_major(15)
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let (stop, writing, mut pgcdc, _) = copying_under_the_writer(&setup, 1.0 / 3.0).await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub set table public.rw")
        .await;
    let mut request = Pgcdc::spawn(
        [
            "snapshot".as_ref(),
            "--config".as_ref(),
            setup.config.as_os_str(),
            "public.rw".as_ref(),
        ],
        &[],
    );
    let status = request.wait_exit(DEADLINE).await;
    assert!(status.success(), "pgcdc snapshot: {}", request.stderr());
    pgcdc
        .wait_output("pgcdc snapshot asked for the table again", DEADLINE)
        .await;
    let rows = copy_ends_and_replays(
        &setup,
        &mut pgcdc,
        &stop,
        writing,
        "every row of the widened filter",
    )
    .await;
    assert!(
        rows.iter()
            .any(|r| r.op == 'R' && r.get("id").is_some_and(|id| id.ends_with(['1', '3']))),
        "rows the narrow filter left out are copied"
    );
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// Column names that break unquoted SQL (HAZARDS.md, "Table maintenance and DDL"): keywords, a
/// mixed case, a space, a double quote, a comma, non-ASCII. The chunk reads, the window rule and
/// the files must carry them all, with a writer changing rows during the copy.
const NAMES_DDL: &str = r#"
    create table public.names (
        "order" int primary key,
        "at" timestamptz,
        "from" text,
        "user" text,
        "group" int,
        "Mixed Case" text,
        "with space" text,
        "quote""d" text,
        "a,b" text,
        "naïve" text
    );
    insert into public.names
    select g, timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', 'from ' || g,
           'user ' || g, g % 7, 'M' || g, 's ' || g, 'q"' || g, 'a,b ' || g, 'ï' || g
    from generate_series(1, 20000) g;
    create publication pgcdc_pub for table public.names;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn keyword_and_quoted_column_names_replay_exactly_through_copy_and_stream() {
    let Some(setup) = Fixture::builder()
        .ddl(NAMES_DDL)
        .chunked_copy(2, "64KiB")
        .table("public.names", &["order"])
        .deadline(DEADLINE)
        .start_if_supported()
        .await
    else {
        return;
    };
    let (stop, writing) = spawn_writer(&setup, 11, 20000, |n, done| {
        format!(
            r#"begin;
                update public.names set "Mixed Case" = 'changed', "quote""d" = 'q""' || {n},
                       "group" = "group" + 1 where "order" = {n};
                update public.names set "order" = {moved} where "order" = {m};
                delete from public.names where "order" = {gone};
                insert into public.names ("order", "at", "from", "naïve")
                values ({fresh}, now(), 'new', 'ü');
                commit;"#,
            m = (n * 31) % 20000 + 1,
            moved = 2_000_000 + done as i64,
            gone = (n * 17) % 20000 + 1,
            fresh = 1_000_000 + done as i64,
        )
    });
    let mut pgcdc = setup.run(&setup.config);
    let rows = copy_ends_and_replays(
        &setup,
        &mut pgcdc,
        &stop,
        writing,
        "every column of every row, whatever its name",
    )
    .await;
    assert!(rows.iter().any(|r| r.op == 'R') && rows.iter().any(|r| r.op == 'U'));
    let header = &rows[0].columns;
    for name in [
        "order",
        "at",
        "Mixed Case",
        "with space",
        "quote\"d",
        "a,b",
        "naïve",
    ] {
        assert!(header.iter().any(|c| c == name), "{name} in {header:?}");
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// Keys that compare in surprising ways (HAZARDS.md, "Keys and values"): numeric `NaN` (equal to
/// itself in PostgreSQL, sorted above every number), text under a case-insensitive collation
/// (`'Ab' = 'ab'`, so a key change between them is a change of bytes only), text in `"C"`, and a
/// composite of uuid and bytea. A writer changes keys, values and rows while each table is
/// copied in chunks; every table must replay exactly.
const KEYS_DDL: &str = r#"
    create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
    create table public.knan (id numeric primary key, v int, pad text);
    insert into public.knan select g / 7.0, g, repeat('p', 60) from generate_series(1, 20000) g;
    insert into public.knan values ('NaN', -1, 'nan'), ('Infinity', -2, 'inf'), ('-Infinity', -3, '-inf');
    create table public.kci (name text collate ci primary key, v int, pad text);
    insert into public.kci select 'Name ' || g, g, repeat('p', 60) from generate_series(1, 20000) g;
    create table public.kc (name text collate "C" primary key, v int, pad text);
    insert into public.kc select chr(65 + g % 58) || g, g, repeat('p', 60) from generate_series(1, 20000) g;
    create table public.kub (u uuid, b bytea, v int, pad text, primary key (u, b));
    insert into public.kub
    select md5(g::text)::uuid, decode(lpad(to_hex(g % 256), 2, '0'), 'hex'), g, repeat('p', 60)
    from generate_series(1, 20000) g;
    create publication pgcdc_pub for table public.knan, public.kci, public.kc, public.kub;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_compare_surprisingly_replay_exactly_through_copy_and_stream() {
    let Some(setup) = chunked_copy_of(KEYS_DDL, "public.knan").await else {
        return;
    };
    let (stop, writing) = spawn_writer(&setup, 5, 20000, |n, done| {
        let nan = if done % 2 == 0 { "'NaN'" } else { "-7.5" };
        format!(
                "begin;
                 update public.knan set id = case when id = 'NaN' then -7.5 else 'NaN' end, v = v + 1
                 where id = {nan};
                 update public.knan set v = v + 1 where id = {n} / 7.0;
                 delete from public.knan where id = {gone} / 7.0;
                 update public.kci set name = lower(name), v = v + 1 where name = 'Name {n}';
                 update public.kci set name = upper(name) where name = 'name {m}';
                 delete from public.kci where name = 'NAME {gone}';
                 insert into public.kci values ('Fresh {done}', {done}, 'new');
                 update public.kc set name = name || 'x', v = v + 1 where v = {n};
                 update public.kub set b = b || '\\x00'::bytea, v = v + 1 where v = {n};
                 delete from public.kub where v = {gone};
                 commit;",
                m = (n * 31) % 20000 + 1,
                gone = (n * 17) % 20000 + 1,
            )
    });
    let mut pgcdc = setup.run(&setup.config);
    wait_until("the copies of all four tables complete", DEADLINE, || {
        let pgcdc = &pgcdc;
        async move {
            let done = pgcdc
                .output_text()
                .matches("Copy of the table complete")
                .count();
            (done >= 4).then_some(())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(writing.await.expect("writer") > 0);
    for (table, key) in [
        ("public.knan", &["id"][..]),
        ("public.kci", &["name"][..]),
        ("public.kc", &["name"][..]),
        ("public.kub", &["u", "b"][..]),
    ] {
        let rows = setup
            .wait_table_matches(table, key, "every key, however it compares")
            .await;
        assert_eq!(duplicate_keys(&rows), 0, "{table}");
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A table that joins the publication while pgcdc streams and a writer changes it (HAZARDS.md,
/// "ALTER PUBLICATION … ADD TABLE"): its existing rows are copied, its changes streamed, and the
/// two must meet exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_added_while_streaming_under_a_writer_replays_exactly() {
    let setup = Fixture::builder()
        .ddl(
            "create table public.first (id int primary key, v text);
             insert into public.first values (1, 'one');
             create publication pgcdc_pub for table public.first;
             create table public.late (id int primary key, v int, note text);
             insert into public.late select g, g, 'row ' || g from generate_series(1, 20000) g;",
        )
        .setting("snapshot.workers = 2")
        .setting("snapshot.chunk_size = \"64KiB\"")
        .table("public.late", &["id"])
        .deadline(DEADLINE)
        .start()
        .await;
    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let (stop, writing) = spawn_writer(&setup, 3, 20000, |n, done| {
        format!(
                "begin;
                 update public.late set v = v + 1, note = 'changed' where id = {n} and note <> 'new';
                 update public.late set id = {moved} where id = {m};
                 delete from public.late where id = {gone};
                 insert into public.late values ({fresh}, 0, 'new');
                 commit;",
                m = (n * 31) % 20000 + 1,
                moved = 2_000_000 + done as i64,
                gone = (n * 17) % 20000 + 1,
                fresh = 1_000_000 + done as i64,
            )
    });
    // Let the writer run before the table joins, so changes surround the copy's start.
    wait_until("the writer under way", DEADLINE, || {
        let cluster = &setup.cluster;
        async move {
            let changed = cluster
                .query_scalar("select count(*) from public.late where note = 'new'")
                .await?;
            (changed.parse::<u64>().ok()? >= 20).then_some(())
        }
    })
    .await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub add table public.late")
        .await;
    // A table with a key joins through the chunked copy, beside the writer.
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    let changed = || async {
        setup
            .cluster
            .query_scalar("select count(*) from public.late where note = 'new'")
            .await?
            .parse::<u64>()
            .ok()
    };
    let at_copy = changed().await.expect("count");
    wait_until(
        "the writer changes the table after its copy",
        DEADLINE,
        || async { (changed().await? >= at_copy + 100).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(writing.await.expect("writer") > 0);
    let rows = setup
        .wait_replay_matches("the table that joined, copied and streamed")
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    assert!(rows.iter().any(|r| r.op == 'U' || r.op == 'D'));
    if setup.cluster.major().await >= 14 {
        // One copy engine: the joining table's rows are read in chunks at current positions.
        assert!(
            pgcdc
                .output_text()
                .contains("Copying the table in chunks beside the stream"),
            "the joining table was copied in chunks"
        );
    }
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// `REPLICA IDENTITY FULL` on a table with a primary key, as many teams set on every table: the
/// stream names the primary key as the key, so the table is copied in chunks like any keyed
/// table, and must replay exactly under the writer (updates leaving an out-of-line value
/// unchanged, key changes of such rows, deletes, inserts).
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_identity_full_table_with_a_key_is_copied_in_chunks_exactly() {
    let ddl = format!("{REWRITE_DDL}\n    alter table public.rw replica identity full;");
    let Some(setup) = chunked_copy_of(&ddl, "public.rw").await else {
        return;
    };
    // Waits for chunks placed: a table copied whole would have none.
    let (stop, writing, mut pgcdc, _) = copying_under_the_writer(&setup, 0.2).await;
    let rows = copy_ends_and_replays(
        &setup,
        &mut pgcdc,
        &stop,
        writing,
        "the FULL table, copied in chunks and streamed",
    )
    .await;
    assert!(
        rows.iter().any(|r| r.op == 'D'),
        "key changes and deletes streamed"
    );
    assert_eq!(rows.iter().filter(|r| r.op == 'B').count(), 1);
    pgcdc.stop_cleanly(DEADLINE).await;
}

/// A `REPLICA IDENTITY FULL` table keeps taking updates, deletes and inserts when its primary
/// key is dropped (FULL needs no key), so rows that share the old key's values may then appear.
/// A copy that kept matching rows by the key it planned with would let an insert of another row
/// with the same `id` in a chunk's window "settle" that id and drop the chunk's different row
/// (13 rows lost, from the break review). The stream's key is no longer the copy's, so the copy
/// starts over with the table as it now is.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_primary_key_of_a_full_table_during_its_copy_loses_no_row() {
    let ddl = "
        create table public.fk (id int primary key, v text not null);
        insert into public.fk select g, 'orig ' || g from generate_series(1, 200000) g;
        alter table public.fk replica identity full;
        analyze public.fk;
        create publication pgcdc_pub for table public.fk;
    ";
    // Every row is unique by (id, v) throughout: the writer's rows carry distinct v.
    let Some(setup) = chunked_copy_keyed(ddl, "public.fk", &["id", "v"]).await else {
        return;
    };
    let addr = metrics_listen(&setup.config);
    let mut pgcdc = setup.run(&setup.config);
    let placed = chunks_placed(&addr, 0.2).await;
    eprintln!("{placed:?} chunks placed: dropping the primary key");
    setup
        .cluster
        .execute("alter table public.fk drop constraint fk_pkey")
        .await;
    let (stop, writing) = spawn_writer(&setup, 0, 1, |_, done| {
        // Another row for ids spread over every chunk (no key forbids it now).
        format!(
            "insert into public.fk (id, v)
             select g, 'dup ' || {done} || ' ' || g
             from generate_series({start}, 200000, 4999) g;
             select pg_sleep(0.01);",
            start = done % 4999 + 1,
        )
    });
    // Without a key the table is copied again whole, through a temporary slot.
    pgcdc
        .wait_output("Copied the existing rows of new tables", DEADLINE)
        .await;
    stop.store(true, Ordering::Relaxed);
    assert!(writing.await.expect("writer") > 0);
    let rows = setup
        .wait_replay_matches(
            "every original row and every duplicate replays after the key was dropped mid-copy",
        )
        .await;
    assert_eq!(duplicate_keys(&rows), 0);
    let output = pgcdc.output_text();
    assert!(
        output.contains("the table's columns or key changed during its copy"),
        "the copy started over: {output}"
    );
    assert!(rows.iter().filter(|r| r.op == 'B').count() >= 2);
    pgcdc.stop_cleanly(DEADLINE).await;
}

//! Nothing leaves the database that the publication does not publish: column lists, row
//! filters, several publications and (PostgreSQL 18) generated columns, in the initial copy, in
//! copies of tables added later and in the stream, also when the publication changes while pgcdc
//! runs. Every test scans the bytes of every file pgcdc wrote for values it must never hold, and
//! compares the replay of the files with the published projection computed in SQL.
//!
//! Column lists and row filters exist from PostgreSQL 15 on; on 13 and 14 these tests return at
//! once (the rest of the suite covers those versions).

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(180);

/// The suite's fixture: `ddl` run and a config for `publications`; `None` when the server is
/// older than `min_major`.
async fn fixture(min_major: u32, ddl: &str, publications: &str) -> Option<Fixture> {
    Fixture::builder()
        .min_major(min_major)
        .ddl(ddl)
        .publication(publications)
        .window("1s")
        .max_file_bytes("64MiB")
        .format("csv.gz")
        .deadline(DEADLINE)
        .start_if_supported()
        .await
}

/// Every file under `dir` (data, schema files, bookkeeping), gzip ones decompressed.
fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("reading the sink") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let raw = std::fs::read(&path).expect("reading a sink file");
            let bytes = if path.extension().is_some_and(|e| e == "gz") {
                let mut text = Vec::new();
                flate2::read::MultiGzDecoder::new(raw.as_slice())
                    .read_to_end(&mut text)
                    .expect("gunzip");
                text
            } else {
                raw
            };
            out.push((path, bytes));
        }
    }
    out
}

/// Fails naming the file when any file in the sink contains one of `needles`.
fn assert_sink_never_holds(sink: &Path, needles: &[&str]) {
    let files = all_file_bytes(sink);
    assert!(!files.is_empty(), "the sink is empty");
    for (path, bytes) in &files {
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}, which the publication does not publish",
                path.display()
            );
        }
    }
}

/// The header of every data file of `table`, in file order.
fn headers(sink: &Path, table: &str) -> Vec<String> {
    change_files(sink, table)
        .expect("listing the table's files")
        .iter()
        .map(|f| {
            let text = read_text(f).expect("reading a data file");
            text.lines().next().unwrap_or_default().to_owned()
        })
        .collect()
}

const CUSTOMERS_AND_ORDERS: &str = "
    create table public.customers (id bigint primary key, name text, email text, ssn text, country text);
    create table public.orders (id bigint primary key, region text not null, amount numeric(10,2), note text);
    alter table public.orders replica identity full;
    insert into public.customers
        select g, 'name ' || g, 'secret-mail-' || g || '@example.com', 'SSN-' || g, 'C' || g % 7
        from generate_series(1, 2000) g;
    insert into public.orders
        select g, (array['EU', 'US', 'APAC'])[1 + g % 3], g / 100.0, 'order ' || g
        from generate_series(1, 6000) g;
    create publication pgcdc_pub for table public.customers (id, name, country),
        public.orders where (region = 'EU');
";

const CUSTOMER_COLUMNS: &[&str] = &["id", "name", "country"];
const EU: &str = "region = 'EU'";

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_stream_carry_only_the_published_columns_and_rows() {
    let Some(setup) = fixture(15, CUSTOMERS_AND_ORDERS, "pgcdc_pub").await else {
        return;
    };
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .wait_projection(
            "public.orders",
            None,
            Some(EU),
            "the snapshot of orders is the EU rows",
        )
        .await;
    let copied = read_change_files(&setup.sink, "public.orders")
        .iter()
        .filter(|r| r.op == 'R')
        .count();
    assert_eq!(copied, 2000, "the copy holds exactly the 2000 EU orders");

    setup
        .cluster
        .execute(
            "insert into public.customers
                 select g, 'late ' || g, 'secret-mail-' || g || '@example.com', 'SSN-' || g, 'X'
                 from generate_series(2001, 2100) g;
             update public.customers set email = 'secret-mail-changed@example.com', ssn = 'SSN-changed'
                 where id <= 50;
             update public.customers set name = 'renamed ' || id where id between 51 and 100;
             delete from public.customers where id between 101 and 150;
             insert into public.orders
                 select g, (array['EU', 'US', 'APAC'])[1 + g % 3], 1.5, 'new ' || g
                 from generate_series(6001, 6300) g;
             -- into the filter (an insert), out of it (a delete), within and outside it
             update public.orders set region = 'EU', note = 'moved in' where id between 1 and 300 and region <> 'EU';
             update public.orders set region = 'US', note = 'moved out' where id between 301 and 600 and region = 'EU';
             update public.orders set amount = amount + 1 where id between 601 and 900;
             delete from public.orders where id between 901 and 1200;",
        )
        .await;
    setup
        .wait_projection(
            "public.customers",
            Some(CUSTOMER_COLUMNS),
            None,
            "customers replay to their published columns",
        )
        .await;
    setup
        .wait_projection(
            "public.orders",
            None,
            Some(EU),
            "orders replay to the rows the filter admits",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;

    assert_sink_never_holds(&setup.sink, &["secret-mail", "SSN-", "email", "ssn"]);
    let orders = read_change_files(&setup.sink, "public.orders");
    assert!(
        orders
            .iter()
            .filter(|r| !matches!(r.op, 'B' | 'E'))
            .all(|r| r.get("region") == Some("EU")),
        "every order row pgcdc wrote is an EU row"
    );
    let customer_headers = headers(&setup.sink, "public.customers");
    assert!(
        customer_headers.len() >= 2,
        "a snapshot file and a stream file"
    );
    assert!(
        customer_headers
            .iter()
            .all(|h| h.ends_with(",_unchanged,id,name,country")),
        "one header from snapshot to stream: {customer_headers:?}"
    );

    // `pgcdc check` shows what is published and passes: orders' filter reads a column outside
    // its identity, but the identity is FULL.
    let check = pgcdc_output(["check", "--config", setup.config.to_str().unwrap()], &[]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "pgcdc check failed:\n{report}");
    assert!(
        report.contains("public.customers: publishes (id, name, country); every row"),
        "{report}"
    );
    assert!(
        report.contains(
            "public.orders: publishes (id, region, amount, note); rows where (region = 'EU'::text)"
        ),
        "{report}"
    );
    assert!(!report.contains("WARN"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_warns_about_a_row_filter_outside_the_replica_identity() {
    let Some(setup) = fixture(
        15,
        "create table public.accounts (id bigint primary key, tier text);
         create publication pgcdc_pub for table public.accounts where (tier = 'gold');",
        "pgcdc_pub",
    )
    .await
    else {
        return;
    };
    let check = pgcdc_output(["check", "--config", setup.config.to_str().unwrap()], &[]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "a warning does not fail the check:\n{report}"
    );
    assert!(
        report.contains("WARN  row filter")
            && report.contains("public.accounts: the row filter of publication pgcdc_pub reads tier, outside the replica identity"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_publications_combine_as_postgresql_combines_them() {
    let Some(setup) = fixture(
        15,
        "create schema s;
         create table public.orders (id bigint primary key, region text not null, secret text);
         create table s.events (id bigint primary key, kind text);
         insert into public.orders
             select g, (array['EU', 'US', 'APAC'])[1 + g % 3], 'hidden-' || g from generate_series(1, 900) g;
         insert into s.events select g, 'k' || g % 4 from generate_series(1, 400) g;
         -- Inserts only: a filter on region, outside the key, would make PostgreSQL reject
         -- UPDATE and DELETE on orders.
         create publication pub_eu for table public.orders (id, region) where (region = 'EU'),
             s.events where (kind = 'k1') with (publish = 'insert');
         create publication pub_us for table public.orders (id, region) where (region = 'US')
             with (publish = 'insert');
         create publication pub_schema for tables in schema s;",
        "pub_eu, pub_us, pub_schema",
    )
    .await
    else {
        return;
    };
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.orders values (1001, 'EU', 'hidden-new'), (1002, 'APAC', 'hidden-new'),
                 (1003, 'US', 'hidden-new');
             insert into s.events values (1001, 'k2');",
        )
        .await;
    let orders_filter = "region in ('EU', 'US')";
    setup
        .wait_projection(
            "public.orders",
            Some(&["id", "region"]),
            Some(orders_filter),
            "orders: the union of both filters",
        )
        .await;
    setup
        .wait_projection(
            "s.events",
            None,
            None,
            "events: a schema publication without a filter admits every row",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_sink_never_holds(&setup.sink, &["hidden-", "secret"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_added_later_is_copied_under_its_column_list_and_filter() {
    let Some(setup) = fixture(
        15,
        "create table public.first (id bigint primary key, v text);
         create table public.late (id bigint primary key, visible text, hidden text);
         insert into public.first select g, 'v' || g from generate_series(1, 100) g;
         insert into public.late select g, 'shown ' || g, 'private-' || g from generate_series(1, 3000) g;
         create publication pgcdc_pub for table public.first;",
        "pgcdc_pub",
    )
    .await
    else {
        return;
    };
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "alter publication pgcdc_pub add table public.late (id, visible) where (id % 2 = 0)",
        )
        .await;
    // The copy starts when the table's first change arrives.
    setup
        .cluster
        .execute("insert into public.late values (3002, 'shown new', 'private-new')")
        .await;
    pgcdc
        .wait_output("Copy of the table complete", DEADLINE)
        .await;
    setup
        .cluster
        .execute(
            "update public.late set visible = 'changed', hidden = 'private-changed' where id <= 20;
             delete from public.late where id between 21 and 40;",
        )
        .await;
    setup
        .wait_projection(
            "public.late",
            Some(&["id", "visible"]),
            Some("id % 2 = 0"),
            "the late table replays to its published projection",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_sink_never_holds(&setup.sink, &["private-", "hidden"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publication_narrowed_while_running_takes_effect_in_the_next_file() {
    let Some(setup) = fixture(
        15,
        "create table public.people (id bigint primary key, name text, email text);
         insert into public.people select g, 'p' || g, 'old-mail-' || g from generate_series(1, 200) g;
         create publication pgcdc_pub for table public.people (id, name, email);",
        "pgcdc_pub",
    )
    .await
    else {
        return;
    };
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute("insert into public.people values (201, 'before', 'old-mail-201')")
        .await;
    setup
        .wait_projection(
            "public.people",
            None,
            None,
            "every column while email is published",
        )
        .await;
    setup
        .cluster
        .execute("alter publication pgcdc_pub set table public.people (id, name) where (id > 100)")
        .await;
    setup
        .cluster
        .execute(
            "insert into public.people values (202, 'after', 'new-mail-202'), (-50, 'low', 'new-mail-low');
             update public.people set email = 'new-mail-' || id, name = name || '+' where id between 150 and 160;",
        )
        .await;
    let sink = setup.sink.clone();
    wait_until("rows after the change land", DEADLINE, || {
        let sink = sink.clone();
        async move {
            let rows = try_read_change_files(&sink, "public.people").ok()?;
            rows.iter()
                .any(|r| r.get("id") == Some("160") && r.op == 'U')
                .then_some(())
        }
    })
    .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert_sink_never_holds(&setup.sink, &["new-mail-"]);
    let rows = read_change_files(&setup.sink, "public.people");
    assert!(
        !rows.iter().any(|r| r.get("id") == Some("-50")),
        "row -50 is outside the new filter"
    );
    let last = headers(&setup.sink, "public.people");
    assert!(
        last.last()
            .is_some_and(|h| h.ends_with(",_unchanged,id,name")),
        "the files after the change have the new header: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_columns_are_copied_exactly_when_published() {
    let Some(setup) = fixture(
        18,
        "create table public.with_gen (id bigint primary key, a integer,
             doubled integer generated always as (a * 2) stored);
         create table public.without_gen (id bigint primary key, a integer,
             tag text generated always as ('gen-secret-' || a) stored);
         insert into public.with_gen (id, a) select g, g + 1000000 from generate_series(1, 300) g;
         insert into public.without_gen (id, a) select g, g from generate_series(1, 300) g;
         create publication pgcdc_pub for table public.with_gen
             with (publish_generated_columns = stored);
         create publication pgcdc_plain for table public.without_gen;",
        "pgcdc_pub, pgcdc_plain",
    )
    .await
    else {
        return;
    };
    let mut pgcdc = Pgcdc::run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup
        .cluster
        .execute(
            "insert into public.with_gen (id, a) values (301, 5);
             insert into public.without_gen (id, a) values (301, 5);",
        )
        .await;
    setup
        .wait_projection(
            "public.with_gen",
            None,
            None,
            "with_gen replays with its generated column",
        )
        .await;
    setup
        .wait_projection(
            "public.without_gen",
            Some(&["id", "a"]),
            None,
            "without_gen replays without its generated column",
        )
        .await;
    pgcdc.stop_cleanly(DEADLINE).await;
    assert!(
        headers(&setup.sink, "public.with_gen")
            .iter()
            .all(|h| h.ends_with(",id,a,doubled")),
        "one header with the generated column from snapshot to stream"
    );
    assert_sink_never_holds(&setup.sink, &["gen-secret-", ",a,tag"]);
}

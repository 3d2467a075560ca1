//! Breadth: a window that touches more tables than pgcdc keeps files open (issue 27). With
//! `batch.open_files = 8`, 2,000 tables are copied (most whole in the slot's exported snapshot,
//! a few in chunks beside the stream) and then changed by one transaction over all of them:
//! pgcdc parks and reopens their spool files throughout (gzip files of several members), and
//! every table must still replay to exactly what it holds. Real cluster, real `pgcdc`, local
//! sink. The memory figure is the benchmark's (`make bench`, breadth phase), not this test's.

mod common;

use std::cell::RefCell;
use std::io::Read;
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(120);
const TABLES: usize = 2_000;
/// Every hundredth table has a primary key and is copied in chunks; the others have none
/// (replica identity full) and are copied whole, all in the snapshot's one transaction.
const KEYED_EVERY: usize = 100;

fn table(i: usize) -> String {
    format!("public.w{i:04}")
}

/// How many gzip members `bytes` holds.
fn gzip_members(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut members = 0;
    while !rest.is_empty() {
        let mut decoder = flate2::bufread::GzDecoder::new(rest);
        let mut text = Vec::new();
        decoder.read_to_end(&mut text).expect("a gzip member");
        rest = decoder.into_inner();
        members += 1;
    }
    members
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_tables_through_eight_open_files_replay_exactly() {
    let started = std::time::Instant::now();
    let setup = Fixture::builder()
        // One transaction over every table, and the tables' creation, hold a lock per relation.
        .settings(&[("max_locks_per_transaction", "1024")])
        .ddl(&format!(
            "do $$ begin
                 for i in 0..{last} loop
                     if i % {KEYED_EVERY} = 0 then
                         execute format('create table public.w%s (id bigint primary key, v bigint)',
                                        lpad(i::text, 4, '0'));
                     else
                         execute format('create table public.w%s (id bigint not null, v bigint);
                                         alter table public.w%s replica identity full',
                                        lpad(i::text, 4, '0'), lpad(i::text, 4, '0'));
                     end if;
                     execute format('insert into public.w%s select g, g * 10
                                     from generate_series(1, 4) g', lpad(i::text, 4, '0'));
                 end loop;
             end $$;
             create publication pgcdc_pub for all tables;",
            last = TABLES - 1
        ))
        .setting("batch.open_files = 8")
        .deadline(DEADLINE)
        .start()
        .await;
    let created = started.elapsed();

    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    // Every table's copy durable (whole or chunked) before the one transaction over all.
    wait_until("every table's copy is durable", DEADLINE, || {
        let copied = pgcdc
            .output_text()
            .matches("Copy of the table complete")
            .count();
        async move {
            if copied >= TABLES {
                Ok(())
            } else {
                Err(format!("{copied} of {TABLES} tables copied"))
            }
        }
    })
    .await;
    let copied = started.elapsed();

    let mut update = String::from("do $$ begin\n");
    for i in 0..TABLES {
        update.push_str(&format!(
            "update {t} set v = -v where id in (1, 2);\n",
            t = table(i)
        ));
    }
    update.push_str("end $$;");
    setup.cluster.execute(&update).await;
    // Each table compared with its files until all match, on one connection (a wait per table
    // would open 2,000 connections).
    let client = setup.cluster.client(SHOP_DB).await;
    let waiting = RefCell::new((0..TABLES).map(table).collect::<Vec<String>>());
    wait_until("every table replays to itself", DEADLINE, || {
        let client = &client;
        let sink = &setup.sink;
        let waiting = &waiting;
        async move {
            let pending = waiting.take();
            let mut first = None;
            for t in pending {
                let expected = table_state(client, &t, &["id"]).await;
                let diff = match try_read_change_files(sink, &t) {
                    Ok(rows) => describe_diff(&expected, &replay(&rows, &["id"])),
                    Err(e) => Some(e),
                };
                if let Some(diff) = diff {
                    first.get_or_insert_with(|| format!("{t}: {diff}"));
                    waiting.borrow_mut().push(t);
                }
            }
            match first {
                None => Ok(()),
                Some(diff) => Err(format!(
                    "{} tables differ; first: {diff}",
                    waiting.borrow().len()
                )),
            }
        }
    })
    .await;
    let replayed = started.elapsed();
    pgcdc.stop_cleanly(DEADLINE).await;
    let stopped = started.elapsed();

    // The snapshot wrote each whole-copied table's `B` row, then its rows, then its `E` row,
    // with the other tables' in between: eight open files cannot hold 2,000, so those files
    // were parked and reopened, one gzip member per stretch.
    let files = change_files(&setup.sink, &table(1)).expect("the files of a table");
    let first = std::fs::read(files.first().expect("a file")).expect("readable");
    assert!(
        gzip_members(&first) > 1,
        "the snapshot file of {} holds one gzip member only",
        table(1)
    );
    let checked = started.elapsed();
    drop(pgcdc);
    drop(setup);
    eprintln!(
        "{TABLES} tables: created in {:.1}s, copied by {:.1}s, every table replayed by {:.1}s, \
         stopped by {:.1}s, checked by {:.1}s, cleaned up by {:.1}s",
        created.as_secs_f64(),
        copied.as_secs_f64(),
        replayed.as_secs_f64(),
        stopped.as_secs_f64(),
        checked.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

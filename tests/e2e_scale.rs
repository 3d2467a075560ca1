//! Many tables: a publication of 500 small tables is snapshotted, streamed and restarted with
//! bounded memory, and a restart reads no listing of the sink. Real cluster, real `pgcdc`,
//! local sink.

mod common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(300);
const TABLES: usize = 500;

fn table(i: usize) -> String {
    format!("public.t{i:03}")
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_tables_snapshot_stream_and_restart() {
    let setup = Fixture::builder()
        .ddl(&format!(
            "do $$ begin
                 for i in 0..{last} loop
                     execute format('create table public.t%s (id bigint primary key, v text)',
                                    lpad(i::text, 3, '0'));
                     execute format('insert into public.t%s select g, ''seed '' || g
                                     from generate_series(1, 4) g', lpad(i::text, 3, '0'));
                 end loop;
             end $$;
             create publication pgcdc_pub for all tables;",
            last = TABLES - 1
        ))
        .deadline(DEADLINE)
        .start()
        .await;
    let touched = [7, 123, 250, 377, 499];
    let workload = |round: usize| {
        touched
            .iter()
            .map(|&i| {
                format!(
                    "insert into {t} values ({id}, 'new');
                     update {t} set v = 'round {round}' where id = 1;
                     delete from {t} where id = {gone};",
                    t = table(i),
                    id = 100 + round,
                    gone = 2 + round,
                )
            })
            .collect::<String>()
    };

    let mut pgcdc = setup.run(&setup.config);
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    setup.cluster.execute(&workload(0)).await;
    for &i in &touched {
        setup
            .wait_table_matches(&table(i), &["id"], "the workload lands")
            .await;
    }
    let first_rss = peak_rss_kib(pgcdc.pid());
    pgcdc.stop_cleanly(DEADLINE).await;

    let mut again = setup.run(&setup.config);
    again.wait_output("Streaming changes", DEADLINE).await;
    let restart_rss = peak_rss_kib(again.pid());
    setup.cluster.execute(&workload(1)).await;
    for &i in &touched {
        setup
            .wait_table_matches(&table(i), &["id"], "after the restart")
            .await;
    }
    again.stop_cleanly(DEADLINE).await;
    let output = again.output_text();
    assert!(
        !output.contains("listing the sink"),
        "a restart lists nothing:\n{output}"
    );
    for i in 0..TABLES {
        setup
            .wait_table_matches(&table(i), &["id"], "every table replays to itself")
            .await;
    }
    eprintln!(
        "500 tables: peak RSS {:.1} MiB on the first run (snapshot and stream), {:.1} MiB at the restart's start",
        first_rss as f64 / 1024.0,
        restart_rss as f64 / 1024.0
    );
    // A generous bound that still catches memory growing with tables times history.
    assert!(
        first_rss < 256 * 1024,
        "peak RSS {first_rss} KiB for 500 small tables"
    );
}

//! Restart cost against history: the time from exec to streaming, and peak memory, of a pgcdc
//! restart whose sink already holds 0, 100k and 1M old data files (local directory) and 0 and
//! 100k (a local S3 server, moto), with the ratio to the run without history. A start-up reads
//! the checkpoint and the upload journal, never a listing, so both must stay flat.
//!
//!   cargo bench --bench restart                  (what `make bench` runs)
//!   RESTART_BENCH_CASES=local:0,local:100000 cargo bench --bench restart
//!
//! Uses the test harness (a throwaway cluster, moto) from tests/common.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::s3::{MotoServer, aws_env};
use common::*;

const DEADLINE: Duration = Duration::from_secs(600);
const BUCKET: &str = "restart-bench";
const RUNS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum SinkKind {
    Local,
    Moto,
}

struct Case {
    sink: SinkKind,
    history: usize,
}

struct Figures {
    seconds: f64,
    rss_mib: f64,
}

fn cases() -> Vec<Case> {
    let spec = std::env::var("RESTART_BENCH_CASES")
        .unwrap_or_else(|_| "local:0,local:100000,local:1000000,moto:0,moto:100000".to_owned());
    spec.split(',')
        .filter_map(|c| {
            let (sink, n) = c.split_once(':')?;
            Some(Case {
                sink: if sink == "moto" {
                    SinkKind::Moto
                } else {
                    SinkKind::Local
                },
                history: n.parse().ok()?,
            })
        })
        .collect()
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: nothing to measure
    // then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("restart: a benchmark; run it with `cargo bench --bench restart`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let cluster = PgCluster::start().await;
    cluster
        .execute(
            "create table public.t (id bigint primary key, v text);
             create publication pgcdc_pub for table public.t;",
        )
        .await;
    let moto = if cases().iter().any(|c| c.sink == SinkKind::Moto) {
        Some(MotoServer::start().await)
    } else {
        None
    };
    let mut results: Vec<(String, usize, Figures)> = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let slot = format!("bench_{n}");
        let prefix = format!("run{n}");
        let base =
            PgcdcConfig::new(&cluster.url(SUPERUSER, None, SHOP_DB)).set("source.slot", &slot);
        let (config, envs) = match case.sink {
            SinkKind::Local => (
                base.local_sink(&dir.path().join("stage"))
                    .write(&dir.path().join("pgcdc.toml")),
                Vec::new(),
            ),
            SinkKind::Moto => {
                let moto = moto.as_ref().expect("moto started");
                moto.create_bucket(BUCKET).await;
                let config = base
                    .s3_sink(BUCKET, &prefix, &moto.endpoint(), &dir.path().join("spool"))
                    .write(&dir.path().join("pgcdc.toml"));
                (config, aws_env())
            }
        };
        // A first run creates the slot, the checkpoint and the journal, as in production.
        let mut first = Pgcdc::spawn(
            ["run".as_ref(), "--config".as_ref(), config.as_os_str()],
            &envs,
        );
        first.wait_output("Streaming changes", DEADLINE).await;
        cluster
            .execute(&format!("insert into public.t values ({n}, 'x')"))
            .await;
        first.wait_output("File written", DEADLINE).await;
        first.stop_cleanly(DEADLINE).await;

        let seeded = std::time::Instant::now();
        match case.sink {
            SinkKind::Local => seed_local(&dir.path().join("stage"), case.history),
            SinkKind::Moto => {
                seed_moto(moto.as_ref().expect("moto"), &prefix, case.history).await;
            }
        }
        eprintln!(
            "restart: {} history {}: seeded in {:.1} s",
            label(case.sink),
            case.history,
            seeded.elapsed().as_secs_f64()
        );
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(restart(&config, &envs).await);
        }
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let median = runs.swap_remove(RUNS / 2);
        results.push((label(case.sink).to_owned(), case.history, median));
    }

    println!();
    println!(
        "| sink  | old files | restart to streaming (s) | ratio | peak RSS (MiB) | RSS growth (MiB) |"
    );
    println!(
        "|-------|-----------|--------------------------|-------|----------------|------------------|"
    );
    for (sink, history, figures) in &results {
        let base = results
            .iter()
            .find(|(s, h, _)| s == sink && *h == 0)
            .map(|(_, _, f)| f);
        let (ratio, growth) = base.map_or((f64::NAN, f64::NAN), |b| {
            (figures.seconds / b.seconds, figures.rss_mib - b.rss_mib)
        });
        println!(
            "| {sink:<5} | {history:>9} | {:>24.3} | {ratio:>5.2} | {:>14.1} | {growth:>16.1} |",
            figures.seconds, figures.rss_mib
        );
    }
}

fn label(sink: SinkKind) -> &'static str {
    match sink {
        SinkKind::Local => "local",
        SinkKind::Moto => "moto",
    }
}

/// One restart: exec to the "Streaming changes" log line (its own timestamp, not a poll), and
/// the process's peak RSS by then.
async fn restart(config: &Path, envs: &[(&str, &str)]) -> Figures {
    let mut envs = envs.to_vec();
    envs.push(("PGCDC_LOG", "info"));
    let started = SystemTime::now();
    let mut pgcdc = Pgcdc::spawn(
        [
            "--log-format".as_ref(),
            "json".as_ref(),
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &envs,
    );
    pgcdc.wait_output("Streaming changes", DEADLINE).await;
    let rss_kib = peak_rss_kib(pgcdc.pid());
    let output = pgcdc.output_text();
    pgcdc.stop_cleanly(DEADLINE).await;
    let line = output
        .lines()
        .find(|l| l.contains("Streaming changes"))
        .expect("the streaming line");
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let at = json["timestamp"].as_str().expect("a timestamp");
    let at: SystemTime = chrono::DateTime::parse_from_rfc3339(at)
        .expect("an RFC 3339 timestamp")
        .into();
    Figures {
        seconds: at.duration_since(started).unwrap_or_default().as_secs_f64(),
        rss_mib: rss_kib as f64 / 1024.0,
    }
}

/// A data file's key from long ago: one an hour, LSNs far below anything the slot has.
fn old_key(i: usize) -> String {
    let hour = i / 1000;
    let (day, hour) = (hour / 24, hour % 24);
    let date =
        chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("date") + chrono::Days::new(day as u64);
    let first = 16 + 2 * i as u64;
    format!(
        "public.t/dt={date}/hour={hour:02}/{first:016X}-{:016X}.csv.gz",
        first + 1
    )
}

/// Hard links to one empty file: creating a million files one by one takes minutes on this
/// machine's disk, and a start-up that read them would see the same directory entries.
fn seed_local(stage: &Path, n: usize) {
    // ext4 allows 65,000 links to one inode.
    const LINKS_PER_ORIGINAL: usize = 60_000;
    let mut original = PathBuf::new();
    let mut last_dir = PathBuf::new();
    for i in 0..n {
        if i % LINKS_PER_ORIGINAL == 0 {
            original = stage.join("_pgcdc").join(format!("seed-original-{i}"));
            std::fs::write(&original, b"").expect("seeding an original");
        }
        let path = stage.join(old_key(i));
        let dir = path.parent().expect("parent").to_owned();
        if dir != last_dir {
            std::fs::create_dir_all(&dir).expect("creating a partition");
            last_dir = dir;
        }
        std::fs::hard_link(&original, &path).expect("seeding a file");
    }
}

async fn seed_moto(moto: &MotoServer, prefix: &str, n: usize) {
    let client = moto.client();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        if pending.len() >= 32 {
            pending.join_next().await;
        }
        let client = client.clone();
        let key = format!("{prefix}/{}", old_key(i));
        pending.spawn(async move {
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(Vec::new().into())
                .send()
                .await
                .expect("seeding an object");
        });
    }
    while pending.join_next().await.is_some() {}
}

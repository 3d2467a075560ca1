//! The torture suite: a randomised workload while faults hit pgcdc, S3, PostgreSQL and the disks,
//! then the files replayed and compared with the table. Nothing may be missing, extra, wrong or
//! doubled; pgcdc may exit (the supervisor restarts it) but never panic or print a secret.
//!
//! - `torture_fast` runs in `make test`: a few kills, one short S3 outage, a cut connection.
//! - `make torture` runs the ignored legs: `torture_s3` (20 kills, S3 down for 60 s, fast and
//!   immediate PostgreSQL restarts, cut connections, a full spool disk) and `torture_local`
//!   (kills, a read-only sink, a full sink disk, a restart), then dbt on their files.
//!
//! Every leg prints its seed; `PGCDC_TORTURE_SEED=<seed>` replays the same workload and fault
//! schedule (timings still depend on the machine). `PGCDC_TORTURE_OUT=<dir>` keeps each leg's
//! files and the final table as `<dir>/<leg>/stage` and `<dir>/<leg>/ecommerce_sales.csv`, the
//! input of `scripts/warehouse-demo.sh`.

#[path = "../common/mod.rs"]
mod common;
mod faults;
mod report;
mod supervisor;
mod workload;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::s3::{Outage, SECRET_KEY, aws_env};
use common::{
    Fixture, Pgcdc, SCRAM_USER, SHOP_DB, StopMode, password_for, replay, table_state,
    try_read_change_files,
};
use faults::{Fault, Mix, Tmpfs};
use report::Report;
use supervisor::Supervisor;
use workload::{TABLE, Workload};

const BUCKET: &str = "pgcdc-torture";
const PREFIX: &str = "torture";
/// How long pgcdc may take to catch up once the faults and the workload have stopped.
const CATCH_UP: Duration = Duration::from_secs(240);

#[derive(Clone, Copy, PartialEq, Eq)]
enum SinkKind {
    S3,
    Local,
}

struct Leg {
    name: &'static str,
    sink: SinkKind,
    mix: Mix,
}

#[tokio::test(flavor = "multi_thread")]
async fn torture_fast() {
    run_leg(Leg {
        name: "fast",
        sink: SinkKind::S3,
        mix: Mix {
            kills: 3,
            s3_outage: Some(Duration::from_secs(5)),
            terminates: 1,
            ..Mix::default()
        },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "part of the full torture suite: make torture"]
async fn torture_s3() {
    run_leg(Leg {
        name: "s3",
        sink: SinkKind::S3,
        mix: Mix {
            kills: 20,
            s3_outage: Some(Duration::from_secs(60)),
            pg_restarts: vec![StopMode::Fast, StopMode::Immediate],
            terminates: 2,
            disk_full: Some(Duration::from_secs(8)),
            read_only_sink: None,
        },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "part of the full torture suite: make torture"]
async fn torture_local() {
    run_leg(Leg {
        name: "local",
        sink: SinkKind::Local,
        mix: Mix {
            kills: 8,
            s3_outage: None,
            pg_restarts: vec![StopMode::Immediate],
            terminates: 1,
            disk_full: Some(Duration::from_secs(8)),
            read_only_sink: Some(Duration::from_secs(8)),
        },
    })
    .await;
}

/// The leg's seed: `PGCDC_TORTURE_SEED`, else a fresh one (printed either way).
fn seed() -> u64 {
    match std::env::var("PGCDC_TORTURE_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PGCDC_TORTURE_SEED={text:?} is not a number")),
        Err(_) => fastrand::u64(..),
    }
}

async fn run_leg(leg: Leg) {
    let seed = seed();
    println!(
        "torture leg {:?}: seed {seed} (replay with PGCDC_TORTURE_SEED={seed})",
        leg.name
    );
    if leg.mix.needs_tmpfs() {
        assert!(
            faults::is_root(),
            "the {:?} leg mounts a tmpfs to fill it up: run it as root (CI does)",
            leg.name
        );
    }
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let schedule = faults::schedule(&leg.mix, &mut rng);

    let mut builder = Fixture::builder()
        .settings(&[("logical_decoding_work_mem", "64kB")])
        .ddl(workload::SETUP_SQL)
        // Rows for the snapshot to copy.
        .ddl(
            "insert into ecommerce_sales \
             (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country) \
             select lpad(g::text, 6, '0'), 'SNAP' || g, case when g % 3 = 0 then null else 'first, \"' || g || '\"' end, \
                    g % 40, timestamp '2023-06-01' + g * interval '1 minute', g / 100.0, nullif(g % 5, 0), 'United Kingdom' \
             from generate_series(1, 3000) g",
        )
        .role(SCRAM_USER)
        .setting("source.status_interval = \"1s\"")
        .window("1s")
        .format("csv.gz")
        // The local leg's pgcdc runs as `postgres` when we are root.
        .dir_for_postgres();
    if leg.sink == SinkKind::S3 {
        builder = builder.moto(BUCKET, PREFIX);
    }
    let setup = builder.start().await;
    let (cluster, dir) = (&setup.cluster, &setup.dir);
    let password = password_for(SCRAM_USER);

    let mut moto = None;
    let mut outage = None;
    let mut _mounts = Vec::new();
    let (files_dir, spool_fs, spawn): (PathBuf, PathBuf, SpawnFn) = match leg.sink {
        SinkKind::S3 => {
            let server = setup.moto();
            let proxy = Outage::start(server.port()).await;
            // The filler goes next to the spool, not in it: pgcdc empties its spool at start.
            let spool_fs = dir.path().join("spool-fs");
            if leg.mix.needs_tmpfs() {
                _mounts.push(Tmpfs::mount(&spool_fs, "128m"));
            }
            let spool = spool_fs.join("spool");
            let config = setup.config_variant("pgcdc", |c| {
                c.s3_sink(BUCKET, PREFIX, &proxy.endpoint(), &spool)
            });
            let spawn = spawner(&config, None);
            moto = Some(server);
            outage = Some(proxy);
            (dir.path().join("download"), spool_fs, spawn)
        }
        SinkKind::Local => {
            // The spool lives inside the sink (`_pgcdc/<slot>/spool`); the filler goes beside.
            let sink_fs = dir.path().join("sink-fs");
            if leg.mix.needs_tmpfs() {
                _mounts.push(Tmpfs::mount(&sink_fs, "512m"));
            }
            let sink_dir = sink_fs.join("stage");
            std::fs::create_dir_all(&sink_dir).expect("sink dir");
            let config = setup.config_variant("pgcdc", |c| c.local_sink(&sink_dir));
            // Root writes through any permission bits: the read-only fault needs another user.
            let user = faults::is_root().then(common::cluster::postgres_user);
            if let Some((uid, gid)) = user {
                chown_tree(dir.path(), uid, gid);
            }
            let spawn = spawner(&config, user);
            (sink_dir, sink_fs, spawn)
        }
    };

    let mut supervisor = Supervisor::start(spawn, vec![password.clone(), SECRET_KEY.to_owned()]);
    let load = Workload::start(cluster.port(), seed ^ 0x5eed, 3);
    let mut report = Report::new(leg.name, seed);

    for (quiet, fault) in schedule {
        supervisor.tend(quiet).await;
        report.fault(fault);
        match fault {
            Fault::Kill => supervisor.kill(),
            Fault::S3Outage(span) => {
                let proxy = outage.as_ref().expect("an S3 leg has the outage proxy");
                proxy.take_down().await;
                supervisor.tend(span).await;
                proxy.bring_back().await;
            }
            Fault::PgRestart(mode) => cluster.restart(mode).await,
            Fault::TerminateBackend => {
                cluster
                    .execute(&format!(
                        "select pg_terminate_backend(pid) from pg_stat_activity \
                         where usename = '{SCRAM_USER}'"
                    ))
                    .await;
            }
            Fault::DiskFull(span) => {
                let filler = faults::fill_disk(&spool_fs);
                supervisor.tend(span).await;
                std::fs::remove_file(&filler).expect("removing the filler file");
            }
            Fault::ReadOnlySink(span) => {
                let dirs = faults::make_read_only(&files_dir);
                supervisor.tend(span).await;
                faults::make_writable(&dirs);
            }
        }
    }
    supervisor.tend(Duration::from_secs(2)).await;
    report.workload = load.stop().await;

    // Catch up: poll the files until they replay to the table, restarting pgcdc if it exits.
    let client = cluster.client(SHOP_DB).await;
    let expected = table_state(&client, TABLE, &["id"]).await;
    let caught_up = Instant::now();
    let rows = loop {
        if let Some(server) = &moto {
            server.download(BUCKET, PREFIX, &files_dir).await;
        }
        let rows = try_read_change_files(&files_dir, TABLE).unwrap_or_default();
        if replay(&rows, &["id"]) == expected || caught_up.elapsed() > CATCH_UP {
            break rows;
        }
        supervisor.tend(Duration::from_secs(1)).await;
    };
    supervisor.finish().await;
    report.compare(&expected, &rows);
    report.exits = supervisor.exits.clone();
    report.offences = supervisor.offences.clone();
    report.elapsed = started.elapsed();
    println!("{report}");
    for words in &supervisor.last_words {
        println!("pgcdc exited on its own, {words}");
    }

    if let Some(out) = std::env::var_os("PGCDC_TORTURE_OUT") {
        export(&PathBuf::from(out).join(leg.name), &files_dir, &client).await;
    }
    assert!(
        report.clean(),
        "the {:?} torture leg lost, added, changed or doubled rows, or pgcdc misbehaved (seed {seed}):\n{report}",
        leg.name,
    );
}

type SpawnFn = Box<dyn Fn() -> Pgcdc + Send>;

/// Starts `pgcdc run` on `config`, as `user` (uid, gid) when given.
fn spawner(config: &Path, user: Option<(u32, u32)>) -> SpawnFn {
    let mut envs = aws_env();
    envs.push(("PGCDC_LOG", "info"));
    let envs: Vec<(String, String)> = envs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let config = config.to_owned();
    let binary = match user {
        // The build's binary sits under root's home, which other users cannot enter.
        Some(_) => {
            let copy = config.with_file_name("pgcdc");
            std::fs::copy(common::PGCDC_BIN, &copy).expect("copying the pgcdc binary");
            copy
        }
        None => PathBuf::from(common::PGCDC_BIN),
    };
    Box::new(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args: Vec<OsString> = Vec::new();
        let program = match user {
            Some((uid, gid)) => {
                args.extend(
                    [
                        format!("--reuid={uid}"),
                        format!("--regid={gid}"),
                        "--clear-groups".to_owned(),
                        "--".to_owned(),
                    ]
                    .map(OsString::from),
                );
                args.push(binary.clone().into_os_string());
                PathBuf::from("setpriv")
            }
            None => binary.clone(),
        };
        args.extend(["run", "--config"].map(OsString::from));
        args.push(config.clone().into_os_string());
        Pgcdc::spawn_program(&program, args, &envs)
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Writes the leg's files and the final table where `scripts/warehouse-demo.sh` reads them.
async fn export(out: &Path, files: &Path, client: &tokio_postgres::Client) {
    use futures_util::TryStreamExt;
    let stage = out.join("stage");
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(&stage).expect("creating the export dir");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(files.join(TABLE))
        .arg(&stage)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying the files to {}", stage.display());
    let stream = client
        .copy_out("copy public.ecommerce_sales to stdout with (format csv, header)")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    std::fs::write(out.join("ecommerce_sales.csv"), chunks.concat()).expect("writing the table");
    println!("kept the {} leg's files in {}", TABLE, out.display());
}

//! The `pgcdc` binary: parses the command line, sets up logging, runs, and maps errors to exit
//! codes. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info};

use pgcdc::cli::{Cli, Command, LogFormat, SlotAction};
use pgcdc::config::Config;

fn main() -> ExitCode {
    bound_malloc_arenas();
    let cli = Cli::parse();
    // PGCDC_LOG, else RUST_LOG, else info; e.g. PGCDC_LOG=pgcdc=debug,info.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGCDC_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = render(&e);
            error!("{message}");
            eprintln!("pgcdc: error: {message}");
            exit_code(&e)
        }
    }
}

/// glibc gives each thread that allocates under contention an arena of its own, up to eight per
/// core, and memory freed in one arena is not reused by another. pgcdc's threads (runtime
/// workers, the pipeline, compressors, blocking S3 and file work) each touched their own, which
/// measured 5 MiB more peak RSS than two arenas at 2,000 tables in a window (38.5 against
/// 33.5 MiB), at no cost in drain speed: the threads hand work to each other rather than allocate
/// in parallel.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; it runs first thing in `main`, before any
    // other thread exists, and M_ARENA_MAX with a positive value is a documented setting.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The error and its causes, each cause once: most of pgcdc's errors already name their cause
/// in their own message, and anyhow's `{:#}` would print it a second time.
fn render(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// sysexits' EX_CONFIG: the configuration is wrong, and restarting will not fix it.
const EX_CONFIG: u8 = 78;

/// 78 for a configuration error, so a supervisor can stop retrying (systemd:
/// `RestartPreventExitStatus=78`); 1 for everything else.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<pgcdc::config::ConfigError>().is_some() {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(common) => {
            let config = load(&common)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let result = runtime.block_on(serve(config));
            // A pipeline thread still waiting on the sink (a slot lost during an S3 outage)
            // must not hold the exit, nor outlive the runtime's timers it waits on.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result
        }
        Command::Slot { action } => slot(action),
        Command::Snapshot { common, tables } => {
            let config = load(&common)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let handle = runtime.handle().clone();
            let task = runtime.spawn_blocking(move || -> anyhow::Result<()> {
                let admin = pgcdc::slot_admin::SlotAdmin::connect(&config, handle)?;
                let lsn = admin.request_snapshot(&tables)?;
                println!(
                    "requested a copy of {} at {lsn}; the running pgcdc picks it up when its stream reaches that point (`pgcdc slot status` shows the progress)",
                    tables.join(", ")
                );
                Ok(())
            });
            runtime
                .block_on(task)
                .context("the snapshot request stopped")?
        }
        Command::Check(common) => {
            let config = load(&common)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let findings = runtime.block_on(pgcdc::check::run(&config));
            print!("{}", pgcdc::check::render(&findings));
            if findings.iter().all(|f| f.ok()) {
                Ok(())
            } else {
                anyhow::bail!("some checks failed; see above for what to fix")
            }
        }
    }
}

fn load(common: &pgcdc::cli::Common) -> anyhow::Result<Config> {
    Ok(Config::load(
        common.config.as_deref(),
        std::env::vars(),
        &common.overrides(),
    )?)
}

fn slot(action: SlotAction) -> anyhow::Result<()> {
    use pgcdc::lsn::Lsn;
    use pgcdc::slot_admin::{Confirm, SlotAdmin, render_status};
    let confirm = |yes: bool| if yes { Confirm::Yes } else { Confirm::Ask };
    let common = match &action {
        SlotAction::Status { common, .. }
        | SlotAction::Create { common }
        | SlotAction::Drop { common, .. }
        | SlotAction::Advance { common, .. }
        | SlotAction::Reset { common, .. } => common,
    };
    let config = load(common)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handle = runtime.handle().clone();
    // The sink API blocks on the runtime, so the command runs on a blocking thread.
    let task = runtime.spawn_blocking(move || -> anyhow::Result<()> {
        let admin = SlotAdmin::connect(&config, handle)?;
        let slot = config.source.slot.as_str();
        match action {
            SlotAction::Status { json, .. } => {
                let status = admin.status_with_forecast()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", render_status(&status));
                }
            }
            SlotAction::Create { .. } => {
                let lsn = admin.create()?;
                println!("created slot {slot} at {lsn}");
            }
            SlotAction::Drop { yes, .. } => {
                admin.drop_slot(&confirm(yes))?;
                println!("dropped slot {slot}; the next `pgcdc run` creates it again and takes a snapshot");
            }
            SlotAction::Advance { to, yes, .. } => {
                let target: Lsn = to.parse()?;
                let reached = admin.advance(target, &confirm(yes))?;
                println!("advanced slot {slot} to {reached}");
                if reached < target {
                    println!(
                        "note: the server had flushed WAL only up to {reached}; run the command again to go further"
                    );
                }
            }
            SlotAction::Reset {
                no_snapshot, yes, ..
            } => match admin.reset(!no_snapshot, &confirm(yes))? {
                Some(lsn) => println!("reset slot {slot}: recreated at {lsn}, no snapshot"),
                None => println!(
                    "reset slot {slot}: dropped; the next `pgcdc run` recreates it and takes a fresh snapshot"
                ),
            },
        }
        Ok(())
    });
    runtime.block_on(task).context("the slot command failed")?
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = pgcdc::metrics::bind(config.metrics.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics (metrics.listen): is another process using it?",
                config.metrics.listen
            )
        })?;
    pgcdc::metrics::init(config.source.slot.as_str());
    tokio::spawn(pgcdc::metrics::serve(
        listener,
        config.metrics.ready_max_lag_bytes,
    ));
    let mut monitor = tokio::spawn(pgcdc::monitor::run(config.clone()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = std::sync::Arc::new(shutdown_tx);
    let on_signal = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Signal received");
        let _ = on_signal.send(true);
    });

    let handle = tokio::runtime::Handle::current();
    let slot = config.source.slot.as_str().to_owned();
    let mut pipeline =
        tokio::task::spawn_blocking(move || pgcdc::run::run(&config, &handle, shutdown_rx));
    tokio::select! {
        result = &mut pipeline => {
            result.context("the pipeline thread failed")??;
            Ok(())
        }
        Ok(lost) = &mut monitor => {
            // No reconnect can cure it: stop now, whatever the pipeline waits on (an S3 outage
            // must not hide a lost slot). What it holds is made durable if the sink answers.
            let _ = shutdown_tx.send(true);
            let _ = tokio::time::timeout(LOST_SLOT_SHUTDOWN, &mut pipeline).await;
            let acknowledged = pgcdc::metrics::get().acknowledged_lsn.get();
            let durable = u64::try_from(acknowledged)
                .ok()
                .filter(|&lsn| lsn > 0)
                .map(pgcdc::lsn::Lsn::from);
            Err(pgcdc::run::RunError::SlotInvalidated {
                slot,
                reason: lost.reason,
                durable: pgcdc::run::Durable(durable),
            }
            .into())
        }
    }
}

/// How long a pgcdc whose slot was invalidated waits for the pipeline to close its window.
const LOST_SLOT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(20);

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

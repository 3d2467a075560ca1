//! The `pgcdc` binary: parses the command line, sets up logging, runs, and maps errors to exit
//! codes. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info};

use pgcdc::cli::{Cli, Command};
use pgcdc::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGCDC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("pgcdc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(common) => {
            let config = Config::load(
                common.config.as_deref(),
                std::env::vars(),
                &common.overrides(),
            )?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::Check(common) => {
            let config = Config::load(
                common.config.as_deref(),
                std::env::vars(),
                &common.overrides(),
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let findings = runtime.block_on(pgcdc::check::run(&config));
            print!("{}", pgcdc::check::render(&findings));
            if findings.iter().all(|f| f.ok) {
                Ok(())
            } else {
                anyhow::bail!("some checks failed; see above for what to fix")
            }
        }
    }
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
    tokio::spawn(pgcdc::metrics::serve(listener));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Signal received");
        let _ = shutdown_tx.send(true);
    });

    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || pgcdc::run::run(&config, &handle, shutdown_rx))
        .await
        .context("the pipeline thread failed")??;
    Ok(())
}

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

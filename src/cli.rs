//! Command-line flags, parsed but not yet validated; [`crate::config`] validates them together
//! with the file and the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "pgcdc",
    version,
    about = "Streams PostgreSQL row changes into time-windowed CSV files"
)]
pub struct Cli {
    /// Log lines as human-readable text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PGCDC_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream changes into the sink until SIGTERM or SIGINT.
    Run(Common),
    /// Check the configuration, the server prerequisites and the sink; exit 0 only if all pass.
    Check(Common),
    /// Copy tables again while `pgcdc run` streams (PostgreSQL 14+): the running pgcdc (or the
    /// next to start) reads them in chunks beside the stream, between a B and an E row that tell
    /// the warehouse the copy replaces the table's earlier rows.
    Snapshot {
        #[command(flatten)]
        common: Common,
        /// Tables as schema.table (public. when no schema is given).
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Inspect or repair the replication slot.
    Slot {
        #[command(subcommand)]
        action: SlotAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SlotAction {
    /// Show the slot, its positions and retained WAL, and pgcdc's checkpoint.
    Status {
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the slot without a snapshot (`pgcdc run` creates it with one).
    Create {
        #[command(flatten)]
        common: Common,
    },
    /// Drop the slot and pgcdc's checkpoint; the next run starts over with a snapshot.
    Drop {
        #[command(flatten)]
        common: Common,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Move the slot forward to an LSN, skipping everything before it.
    Advance {
        #[command(flatten)]
        common: Common,
        /// Target position, e.g. 16/B374D848.
        #[arg(long)]
        to: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Drop and recreate the slot; the next run takes a fresh snapshot unless --no-snapshot.
    Reset {
        #[command(flatten)]
        common: Common,
        /// Recreate the slot now and resume from the current position without copying tables.
        #[arg(long)]
        no_snapshot: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Flags shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct Common {
    /// The TOML configuration file.
    #[arg(long, short, env = "PGCDC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides source.url (libpq-style URL).
    #[arg(long)]
    pub source_url: Option<String>,
    /// Overrides source.slot.
    #[arg(long)]
    pub slot: Option<String>,
    /// Overrides source.publication.
    #[arg(long)]
    pub publication: Option<String>,
    /// Overrides sink.url.
    #[arg(long)]
    pub sink_url: Option<String>,
    /// Overrides batch.window (e.g. 30s, 5m).
    #[arg(long)]
    pub window: Option<String>,
    /// Overrides metrics.listen.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl Common {
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        o.set("source.url", self.source_url.as_deref());
        o.set("source.slot", self.slot.as_deref());
        o.set("source.publication", self.publication.as_deref());
        o.set("sink.url", self.sink_url.as_deref());
        o.set("batch.window", self.window.as_deref());
        o.set("metrics.listen", self.metrics_listen.as_deref());
        o
    }
}

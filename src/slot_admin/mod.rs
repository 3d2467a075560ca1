//! `pgcdc slot ...`: inspect and repair the replication slot by hand.
//!
//! Destructive actions (drop, advance, reset) refuse while a process holds the slot, ask for
//! confirmation unless `--yes` is given, and leave a gap marker in the sink
//! (`_pgcdc/<slot>/gaps/<time>.json`) so whoever reads the files can see that changes may be
//! missing between two positions.
//!
//! Runs on a blocking thread (the sink API is blocking) and talks SQL over tokio-postgres.

use std::io::{BufRead, IsTerminal, Write};

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, CheckpointError, SnapshotState};
use crate::config::{Config, SinkTarget};
use crate::layout;
use crate::lsn::Lsn;
use crate::sink::{LocalSink, S3Sink, Sink, SinkError};

mod forecast;
mod status;
pub use forecast::Invalidation;
pub use status::{SlotStatus, render_status};

#[derive(Debug, thiserror::Error)]
pub enum SlotAdminError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(tokio_postgres::Error),
    #[error("{what}: {source}")]
    Sql {
        what: String,
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("replication slot {0} does not exist")]
    Missing(String),
    #[error("replication slot {0} already exists")]
    Exists(String),
    #[error(
        "replication slot {slot} is in use by pid {pid}: stop the pgcdc (or other consumer) holding it first"
    )]
    InUse { slot: String, pid: i32 },
    #[error(
        "refusing to move slot {slot} backwards from {confirmed} to {target}: a slot only moves forward"
    )]
    Backwards {
        slot: String,
        confirmed: Lsn,
        target: Lsn,
    },
    #[error(
        "pgcdc snapshot needs PostgreSQL 14 or later (the request travels as a logical decoding message); on {server_version} use `pgcdc slot reset` to copy every table again"
    )]
    SnapshotUnsupported { server_version: i32 },
    #[error(
        "{table} is not published by {publications}: only published tables can be copied (names are schema.table, e.g. public.orders)"
    )]
    NotPublished { table: String, publications: String },
    #[error("refusing to {action} slot {slot} without confirmation: pass --yes")]
    NotConfirmed { action: &'static str, slot: String },
}

/// A record that changes may be missing between two positions of the stream.
#[derive(Debug, Serialize)]
struct GapMarker<'a> {
    slot: &'a str,
    action: &'a str,
    at: String,
    /// Where the slot stood before (its confirmed flush), if it existed.
    from: Option<Lsn>,
    /// Where streaming resumes; none when the next `pgcdc run` decides (fresh snapshot).
    to: Option<Lsn>,
    fresh_snapshot: bool,
}

pub struct SlotAdmin<'a> {
    config: &'a Config,
    handle: Handle,
    client: tokio_postgres::Client,
    sink: Box<dyn Sink>,
}

impl<'a> SlotAdmin<'a> {
    pub fn connect(config: &'a Config, handle: Handle) -> Result<SlotAdmin<'a>, SlotAdminError> {
        let (client, connection) = handle
            .block_on(crate::source::sql_connect(&config.source))
            .map_err(SlotAdminError::Connect)?;
        handle.spawn(connection);
        let sink: Box<dyn Sink> = match &config.sink.target {
            SinkTarget::Local(root) => {
                Box::new(LocalSink::open(root, config.source.slot.as_str())?)
            }
            SinkTarget::S3(target) => {
                // Never signalled: an admin command does not outlive its request.
                let (_tx, shutdown) = watch::channel(false);
                let (sink, _) = handle.block_on(S3Sink::connect(target, shutdown))?;
                Box::new(sink)
            }
        };
        Ok(SlotAdmin {
            config,
            handle,
            client,
            sink,
        })
    }

    fn slot(&self) -> &str {
        self.config.source.slot.as_str()
    }

    fn query_one(&self, what: &str, sql: &str) -> Result<tokio_postgres::Row, SlotAdminError> {
        let name = self.slot();
        self.handle
            .block_on(self.client.query_one(sql, &[&name]))
            .map_err(|source| SlotAdminError::Sql {
                what: what.to_owned(),
                source,
            })
    }

    /// Asks the running pgcdc (or the next one to start) to copy `tables` again, beside the
    /// stream: a control message in the WAL, which reaches it in commit order. Returns where it
    /// was written. Every table must be published.
    pub fn request_snapshot(&self, tables: &[String]) -> Result<Lsn, SlotAdminError> {
        let sql = |what: &str| {
            let what = what.to_owned();
            move |source| SlotAdminError::Sql { what, source }
        };
        let version: i32 = self
            .handle
            .block_on(
                self.client
                    .query_one("select current_setting('server_version_num')::int", &[]),
            )
            .map_err(sql("reading the server version"))?
            .get(0);
        if version < 140_000 {
            return Err(SlotAdminError::SnapshotUnsupported {
                server_version: version,
            });
        }
        let publications = &self.config.source.publications;
        let published: Vec<String> = self
            .handle
            .block_on(self.client.query(
                "select distinct schemaname || '.' || tablename from pg_catalog.pg_publication_tables \
                 where pubname = any($1::text[])",
                &[&publications.names()],
            ))
            .map_err(sql("reading the publications"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut wanted = Vec::new();
        for table in tables {
            let table = if table.contains('.') {
                table.clone()
            } else {
                format!("public.{table}")
            };
            if !published.contains(&table) {
                return Err(SlotAdminError::NotPublished {
                    table,
                    publications: publications.to_string(),
                });
            }
            wanted.push(table);
        }
        let message = crate::control::Control::Snapshot {
            slot: self.slot().to_owned(),
            tables: wanted,
        };
        let lsn: String = self
            .handle
            .block_on(self.client.query_one(
                "select pg_logical_emit_message(true, $1, $2)::text",
                &[&crate::control::PREFIX, &message.to_text()],
            ))
            .map_err(sql("writing the snapshot request"))?
            .get(0);
        Ok(lsn.parse().unwrap_or(Lsn::ZERO))
    }

    fn require_idle(&self, status: &SlotStatus) -> Result<(), SlotAdminError> {
        if !status.exists {
            return Err(SlotAdminError::Missing(self.slot().to_owned()));
        }
        if let Some(pid) = status.active_pid {
            return Err(SlotAdminError::InUse {
                slot: self.slot().to_owned(),
                pid,
            });
        }
        Ok(())
    }

    /// Creates the slot without a snapshot: `pgcdc run` then streams from here on.
    pub fn create(&self) -> Result<Lsn, SlotAdminError> {
        if self.status()?.exists {
            return Err(SlotAdminError::Exists(self.slot().to_owned()));
        }
        let row = self.query_one(
            "creating the slot",
            "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')",
        )?;
        let lsn: String = row.get(0);
        Ok(lsn.parse().unwrap_or_default())
    }

    pub fn drop_slot(&self, confirm: &Confirm) -> Result<(), SlotAdminError> {
        let status = self.status()?;
        self.require_idle(&status)?;
        confirm.ask("drop", self.slot(), &format!(
            "This drops replication slot {} (confirmed flush {}). Changes made until the next `pgcdc run` are not captured; that run takes a fresh snapshot.",
            self.slot(),
            display(status.confirmed_flush_lsn)
        ))?;
        self.query_one(
            "dropping the slot",
            "select pg_drop_replication_slot($1)::text",
        )?;
        self.forget_progress()?;
        self.write_gap("drop", status.confirmed_flush_lsn, None, true)?;
        Ok(())
    }

    pub fn advance(&self, target: Lsn, confirm: &Confirm) -> Result<Lsn, SlotAdminError> {
        let status = self.status()?;
        self.require_idle(&status)?;
        let confirmed = status.confirmed_flush_lsn.unwrap_or_default();
        if target < confirmed {
            return Err(SlotAdminError::Backwards {
                slot: self.slot().to_owned(),
                confirmed,
                target,
            });
        }
        confirm.ask("advance", self.slot(), &format!(
            "This moves slot {} from {confirmed} to {target}: {} bytes of WAL, and every change committed in between, will be skipped and never written.",
            self.slot(),
            target.saturating_sub(confirmed)
        ))?;
        let row = self.query_one(
            "advancing the slot",
            &format!(
                "select end_lsn::text from pg_replication_slot_advance($1, '{target}'::pg_lsn)"
            ),
        )?;
        let reached: String = row.get(0);
        let reached: Lsn = reached.parse().unwrap_or(target);
        // The checkpoint follows, so `pgcdc run` does not mistake the skip for lost data.
        if let Some(mut ck) = Checkpoint::load(self.sink.as_ref(), self.slot())? {
            ck.advance(reached, reached);
            ck.save(self.sink.as_ref())?;
        }
        self.write_gap("advance", Some(confirmed), Some(reached), false)?;
        Ok(reached)
    }

    /// Drops the slot; with `snapshot`, the next `pgcdc run` recreates it and copies the tables
    /// again, otherwise it is recreated now and streaming resumes from the current position.
    pub fn reset(&self, snapshot: bool, confirm: &Confirm) -> Result<Option<Lsn>, SlotAdminError> {
        let status = self.status()?;
        if let Some(pid) = status.active_pid {
            return Err(SlotAdminError::InUse {
                slot: self.slot().to_owned(),
                pid,
            });
        }
        let consequence = if snapshot {
            "the next `pgcdc run` recreates it and copies every table again (_op = R)"
        } else {
            "it is recreated at the current position without a snapshot: changes since its confirmed flush are skipped"
        };
        confirm.ask(
            "reset",
            self.slot(),
            &format!(
                "This drops replication slot {} (confirmed flush {}); {consequence}.",
                self.slot(),
                display(status.confirmed_flush_lsn)
            ),
        )?;
        if status.exists {
            self.query_one(
                "dropping the slot",
                "select pg_drop_replication_slot($1)::text",
            )?;
        }
        self.forget_progress()?;
        let position = if snapshot {
            None
        } else {
            let lsn = self.create()?;
            let mut ck = Checkpoint::new(self.slot(), SnapshotState::Skipped);
            ck.advance(lsn, lsn);
            ck.save(self.sink.as_ref())?;
            Some(lsn)
        };
        self.write_gap("reset", status.confirmed_flush_lsn, position, snapshot)?;
        Ok(position)
    }

    /// Removes the checkpoint and the upload journal: the next run starts over, and nothing the
    /// old slot's files said may count against the new slot's transactions.
    fn forget_progress(&self) -> Result<(), SinkError> {
        self.sink.delete(&layout::checkpoint_key(self.slot()))?;
        self.sink.delete(&layout::journal_key(self.slot()))
    }

    fn write_gap(
        &self,
        action: &str,
        from: Option<Lsn>,
        to: Option<Lsn>,
        fresh_snapshot: bool,
    ) -> Result<(), SlotAdminError> {
        write_gap_marker(
            self.sink.as_ref(),
            self.slot(),
            action,
            from,
            to,
            fresh_snapshot,
        )?;
        Ok(())
    }
}

/// Leaves `_pgcdc/<slot>/gaps/<time>-<action>.json` in the sink: changes between `from` and `to`
/// may be missing from the files, and whoever reads them should know.
pub fn write_gap_marker(
    sink: &dyn Sink,
    slot: &str,
    action: &str,
    from: Option<Lsn>,
    to: Option<Lsn>,
    fresh_snapshot: bool,
) -> Result<String, SinkError> {
    let now = chrono::Utc::now();
    let marker = GapMarker {
        slot,
        action,
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        from,
        to,
        fresh_snapshot,
    };
    let bytes = serde_json::to_vec_pretty(&marker).unwrap_or_default();
    let time = now.format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let name = layout::gap_marker_key(slot, &time, action);
    sink.write(&name, &bytes)?;
    Ok(name)
}

fn display(lsn: Option<Lsn>) -> String {
    lsn.map(|l| l.to_string())
        .unwrap_or_else(|| "none".to_owned())
}

/// How a destructive action gets its go-ahead.
pub enum Confirm {
    /// `--yes` was given.
    Yes,
    /// Ask on the terminal; refuse when there is none.
    Ask,
}

impl Confirm {
    fn ask(
        &self,
        action: &'static str,
        slot: &str,
        consequence: &str,
    ) -> Result<(), SlotAdminError> {
        let refused = || SlotAdminError::NotConfirmed {
            action,
            slot: slot.to_owned(),
        };
        match self {
            Confirm::Yes => Ok(()),
            Confirm::Ask => {
                if !std::io::stdin().is_terminal() {
                    return Err(refused());
                }
                let mut out = std::io::stderr();
                let _ = write!(
                    out,
                    "{consequence}\nType the slot name ({slot}) to confirm: "
                );
                let _ = out.flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if answer.trim() == slot {
                    Ok(())
                } else {
                    Err(refused())
                }
            }
        }
    }
}

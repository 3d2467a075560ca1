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

/// What `slot status` shows.
#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub exists: bool,
    pub plugin: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
    pub current_wal_lsn: Lsn,
    pub retained_wal_bytes: Option<u64>,
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    pub checkpoint: Option<Checkpoint>,
    /// Why the retained WAL is what it is, biggest cause first (`crate::wal_hold`).
    pub what_holds_the_wal: Vec<crate::wal_hold::Explained>,
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

    pub fn status(&self) -> Result<SlotStatus, SlotAdminError> {
        let current: String = self
            .handle
            .block_on(
                self.client
                    .query_one("select pg_current_wal_lsn()::text", &[]),
            )
            .map_err(|source| SlotAdminError::Sql {
                what: "reading the current WAL position".to_owned(),
                source,
            })?
            .get(0);
        let current = current.parse().unwrap_or_default();
        // to_jsonb(s) keeps this working whatever columns the server version has.
        let row = self.handle.block_on(self.client.query_opt(
            "select to_jsonb(s)::text from pg_catalog.pg_replication_slots s where slot_name = $1",
            &[&self.slot()],
        ));
        let row = row.map_err(|source| SlotAdminError::Sql {
            what: "reading pg_replication_slots".to_owned(),
            source,
        })?;
        let checkpoint = Checkpoint::load(self.sink.as_ref(), self.slot())?;
        let holds = self
            .handle
            .block_on(crate::wal_hold::gather(&self.client, self.slot()))
            .map_err(|source| SlotAdminError::Sql {
                what: "reading what holds the WAL".to_owned(),
                source,
            })?;
        let mut status = SlotStatus {
            slot: self.slot().to_owned(),
            exists: row.is_some(),
            plugin: None,
            active_pid: None,
            confirmed_flush_lsn: None,
            restart_lsn: None,
            current_wal_lsn: current,
            retained_wal_bytes: None,
            wal_status: None,
            safe_wal_size: None,
            checkpoint,
            what_holds_the_wal: crate::wal_hold::explain(crate::wal_hold::causes(&holds)),
        };
        if let Some(row) = row {
            let text: String = row.get(0);
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let lsn = |key: &str| json[key].as_str().and_then(|s| s.parse::<Lsn>().ok());
            status.plugin = json["plugin"].as_str().map(str::to_owned);
            status.active_pid = json["active_pid"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok());
            status.confirmed_flush_lsn = lsn("confirmed_flush_lsn");
            status.restart_lsn = lsn("restart_lsn");
            status.retained_wal_bytes = status.restart_lsn.map(|r| current.saturating_sub(r));
            status.wal_status = json["wal_status"].as_str().map(str::to_owned);
            status.safe_wal_size = json["safe_wal_size"].as_i64();
        }
        Ok(status)
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

/// The human form of `slot status`.
pub fn render_status(status: &SlotStatus) -> String {
    let mut lines = vec![format!("slot                 {}", status.slot)];
    if !status.exists {
        lines
            .push("exists               no (pgcdc run creates it and takes a snapshot)".to_owned());
    } else {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        lines.push(format!(
            "plugin               {}",
            opt(status.plugin.clone())
        ));
        lines.push(format!(
            "active pid           {}",
            opt(status.active_pid.map(|p| p.to_string()))
        ));
        lines.push(format!(
            "confirmed flush      {}",
            display(status.confirmed_flush_lsn)
        ));
        lines.push(format!(
            "restart lsn          {}",
            display(status.restart_lsn)
        ));
        lines.push(format!("current wal lsn      {}", status.current_wal_lsn));
        lines.push(format!(
            "retained wal         {}",
            opt(status
                .retained_wal_bytes
                .map(|b| bytesize::ByteSize(b).to_string()))
        ));
        lines.push(format!(
            "wal status           {}",
            opt(status.wal_status.clone())
        ));
        lines.push(format!(
            "safe wal size        {}",
            opt(status.safe_wal_size.map(|b| b.to_string()))
        ));
        let holds = crate::wal_hold::render(&status.what_holds_the_wal);
        lines.push(holds.trim_end().to_owned());
    }
    match &status.checkpoint {
        Some(ck) => lines.push(format!(
            "checkpoint           commit {} flush {} (snapshot {:?}, {})",
            ck.commit_lsn, ck.flush_lsn, ck.snapshot, ck.updated_at
        )),
        None => lines.push("checkpoint           none".to_owned()),
    }
    for (table, copy) in status.checkpoint.iter().flat_map(|ck| &ck.copies) {
        let state = match (copy.begun_at, copy.plan) {
            (None, _) => "requested, not begun".to_owned(),
            (Some(at), None) => format!("begun at {at}, not planned yet"),
            (Some(at), Some(plan)) => format!(
                "begun at {at}: {}/{} chunks, {} rows durable (about {} expected)",
                copy.chunks_done(),
                plan.chunks(),
                copy.rows,
                plan.rows_estimated
            ),
        };
        lines.push(format!("copy in progress     {table}: {state}"));
    }
    lines.join("\n") + "\n"
}

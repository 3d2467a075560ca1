//! `pgcdc slot status`: what the server and the checkpoint say about the slot, read in one go
//! and rendered for a person (or as JSON). Read-only; the repairs are in the parent module.

use serde::Serialize;

use super::forecast::Invalidation;
use super::{SlotAdmin, SlotAdminError, display};
use crate::checkpoint::Checkpoint;
use crate::lsn::Lsn;

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
    /// Only from `status_with_forecast` (`pgcdc slot status`), which measures the WAL rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<Invalidation>,
}

impl SlotAdmin<'_> {
    pub fn status(&self) -> Result<SlotStatus, SlotAdminError> {
        let current = self.current_wal_lsn()?;
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
            invalidation: None,
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
        if let Some(invalidation) = &status.invalidation {
            lines.push(format!("invalidation         {}", invalidation.summary));
        }
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
        let state = match (copy.begun_at, &copy.plan) {
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

//! Replication commands and catalog checks run on the replication connection before streaming.

use super::SourceError;
use super::conn::{Connection, QueryResult, quote_ident, quote_literal};
use crate::lsn::Lsn;
use crate::publication::Publications;

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Debug, Clone)]
pub struct SystemInfo {
    pub system_id: String,
    pub timeline: u32,
    pub wal_position: Lsn,
}

/// A slot pgcdc just created, with the snapshot that shows the data as of its consistent point.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    /// Usable with SET TRANSACTION SNAPSHOT only while this connection stays open and idle.
    pub snapshot_name: String,
}

/// A slot that already exists.
#[derive(Debug, Clone)]
pub struct ExistingSlot {
    pub plugin: String,
    pub database: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    pub active_pid: Option<i32>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+; absent before).
    pub wal_status: Option<String>,
    /// Whether standbys copy the slot (PostgreSQL 17+; absent before).
    pub failover: Option<bool>,
    /// Why the server invalidated the slot (PostgreSQL 17+; absent before, NULL while valid).
    pub invalidation_reason: Option<String>,
    /// Whether the slot on a standby was invalidated by a recovery conflict (PostgreSQL 16+).
    pub conflicting: Option<bool>,
}

impl ExistingSlot {
    /// Why the slot can no longer be streamed from, in words; `None` while it is usable.
    pub fn invalidation(&self) -> Option<String> {
        invalidation(
            self.wal_status.as_deref(),
            self.invalidation_reason.as_deref(),
            self.conflicting,
        )
    }
}

/// Why a slot is invalidated, from the columns of `pg_replication_slots` a server has: the
/// reason (17+), the standby's recovery conflict (16+), or only `wal_status = lost` (13+).
/// `None` while the slot is usable.
pub fn invalidation(
    wal_status: Option<&str>,
    reason: Option<&str>,
    conflicting: Option<bool>,
) -> Option<String> {
    let explained = |reason: &str| {
        match reason {
        "wal_removed" => "wal_removed: the WAL it still needed was removed, because the slot held more than max_slot_wal_keep_size".to_owned(),
        "idle_timeout" => "idle_timeout: no process streamed from it for longer than idle_replication_slot_timeout".to_owned(),
        "rows_removed" => "rows_removed: catalog rows it needed were vacuumed away (on a standby: hot_standby_feedback is off or the physical slot is missing)".to_owned(),
        "wal_level_insufficient" => "wal_level_insufficient: the primary's wal_level dropped below logical".to_owned(),
        other => other.to_owned(),
    }
    };
    // On 16, `conflicting` is true for an invalidation of any kind; only 17 narrowed it to
    // recovery conflicts and added the reason. So `lost` WAL is asked before the flag.
    match (reason.filter(|r| !r.is_empty()), wal_status, conflicting) {
        (Some(reason), _, _) => Some(explained(reason)),
        (None, Some("lost"), _) => Some(
            "wal_status is lost: the WAL it still needed was removed (max_slot_wal_keep_size)"
                .to_owned(),
        ),
        (None, _, Some(true)) => {
            Some("conflicting: a recovery conflict on this standby invalidated it".to_owned())
        }
        _ => None,
    }
}

fn parse_lsn(value: Option<&str>, what: &str) -> Result<Lsn, SourceError> {
    value
        .ok_or_else(|| SourceError::Protocol(format!("{what} missing from the server's reply")))?
        .parse()
        .map_err(|e| SourceError::Protocol(format!("{what}: {e}")))
}

pub async fn identify_system(conn: &mut Connection) -> Result<SystemInfo, SourceError> {
    let result = conn.simple_query("IDENTIFY_SYSTEM").await?;
    Ok(SystemInfo {
        system_id: result.first("systemid").unwrap_or_default().to_owned(),
        timeline: result
            .first("timeline")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        wal_position: parse_lsn(result.first("xlogpos"), "IDENTIFY_SYSTEM xlogpos")?,
    })
}

/// Fails with an actionable message unless the server can decode logically and the
/// publication exists.
pub async fn check_prerequisites(
    conn: &mut Connection,
    publications: &Publications,
) -> Result<(), SourceError> {
    check_wal_level(conn).await?;
    publication_tables(conn, publications).await?;
    Ok(())
}

/// What the server's WAL level allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalLevel {
    /// `wal_level = logical`.
    Logical,
    /// PostgreSQL 19+: `wal_level = replica`, and `effective_wal_level` (here its current value)
    /// turns logical by itself while a logical slot exists. Creating the first slot waits for the
    /// switch, which may take a checkpoint.
    LogicalOnDemand { effective: String },
    /// No logical decoding: the level as set.
    Insufficient(String),
}

/// Decides on `wal_level` and `effective_wal_level` (`None` where the server lacks it, before 19).
/// From the PostgreSQL 19 release notes, untested here (no 19 server to run): see the README.
pub fn wal_level(wal_level: &str, effective_wal_level: Option<&str>) -> WalLevel {
    match (wal_level, effective_wal_level) {
        ("logical", _) => WalLevel::Logical,
        ("replica", Some(effective)) if !effective.is_empty() => WalLevel::LogicalOnDemand {
            effective: effective.to_owned(),
        },
        (level, _) => WalLevel::Insufficient(level.to_owned()),
    }
}

pub async fn check_wal_level(conn: &mut Connection) -> Result<WalLevel, SourceError> {
    // `current_setting(.., true)` is NULL where the setting does not exist, so one query serves
    // every version.
    let levels = conn
        .simple_query(
            "SELECT current_setting('wal_level') AS wal_level, \
             current_setting('effective_wal_level', true) AS effective_wal_level",
        )
        .await?;
    let level = wal_level(
        levels.first("wal_level").unwrap_or_default(),
        levels.first("effective_wal_level"),
    );
    if let WalLevel::Insufficient(level) = &level {
        return Err(SourceError::Prerequisite(format!(
            "wal_level must be logical (it is {level}): run `ALTER SYSTEM SET wal_level = logical;` and restart PostgreSQL"
        )));
    }
    Ok(level)
}

/// The publication names as the inside of an SQL `IN (...)` list of literals: the replication
/// connection's simple queries take no parameters.
pub fn in_list(publications: &Publications) -> String {
    publications
        .names()
        .iter()
        .map(|p| quote_literal(p))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables of the publications (`schema.table`, each once); an error when one does not exist.
pub async fn publication_tables(
    conn: &mut Connection,
    publications: &Publications,
) -> Result<Vec<String>, SourceError> {
    let names = in_list(publications);
    let found = conn
        .simple_query(&format!(
            "SELECT pubname AS found FROM pg_catalog.pg_publication WHERE pubname IN ({names})"
        ))
        .await?;
    let existing: Vec<&str> = found
        .rows
        .iter()
        .filter_map(|row| row.first().and_then(|v| v.as_deref()))
        .collect();
    if let Some(missing) = publications
        .names()
        .iter()
        .find(|p| !existing.contains(&p.as_str()))
    {
        return Err(SourceError::Prerequisite(format!(
            "publication {} does not exist in this database: create it with `CREATE PUBLICATION {} FOR TABLE ...;` (see replication_setup/)",
            quote_ident(missing),
            quote_ident(missing)
        )));
    }
    let tables = conn
        .simple_query(&format!(
            "SELECT DISTINCT schemaname || '.' || tablename AS name FROM pg_catalog.pg_publication_tables WHERE pubname IN ({names}) ORDER BY 1"
        ))
        .await?;
    Ok(tables
        .rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// The server's version string (`15.18 (Debian 15.18-0+deb12u1)`).
pub async fn server_version(conn: &mut Connection) -> Result<String, SourceError> {
    let result = conn.simple_query("SHOW server_version").await?;
    Ok(result
        .first("server_version")
        .unwrap_or_default()
        .to_owned())
}

pub async fn find_slot(
    conn: &mut Connection,
    slot: &str,
) -> Result<Option<ExistingSlot>, SourceError> {
    let result = conn
        .simple_query(&format!(
            // `*` rather than a column list: wal_status exists only from PostgreSQL 13 on.
            "SELECT * FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    if result.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(ExistingSlot {
        plugin: result.first("plugin").unwrap_or_default().to_owned(),
        database: result.first("database").map(str::to_owned),
        confirmed_flush: result
            .first("confirmed_flush_lsn")
            .and_then(|l| l.parse().ok()),
        active_pid: result.first("active_pid").and_then(|p| p.parse().ok()),
        wal_status: result.first("wal_status").map(str::to_owned),
        // The column exists from PostgreSQL 17 on; `None` before.
        failover: result.first("failover").map(|f| f == "t"),
        invalidation_reason: result.first("invalidation_reason").map(str::to_owned),
        conflicting: result.first("conflicting").map(|f| f == "t"),
    }))
}

/// Creates a pgoutput slot and exports its snapshot.
pub async fn create_slot(
    conn: &mut Connection,
    slot: &str,
    failover: bool,
) -> Result<CreatedSlot, SourceError> {
    let result = conn
        .simple_query(&create_slot_command(slot, failover))
        .await?;
    created_slot(&result)
}

/// The pre-PostgreSQL-15 spelling (`EXPORT_SNAPSHOT`) unless the slot is a failover slot: every
/// supported server accepts it, while the option list that carries `FAILOVER` exists only from
/// 15 on (and the option from 17, which the caller has checked).
fn create_slot_command(slot: &str, failover: bool) -> String {
    if failover {
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)",
            quote_ident(slot)
        )
    } else {
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        )
    }
}

/// Makes an existing slot a failover slot (PostgreSQL 17+), so standbys start copying it.
pub async fn enable_failover(conn: &mut Connection, slot: &str) -> Result<(), SourceError> {
    conn.simple_query(&format!(
        "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
        quote_ident(slot)
    ))
    .await?;
    Ok(())
}

/// The first server version with failover slots.
pub const FAILOVER_SINCE: u32 = 170_000;

fn created_slot(result: &QueryResult) -> Result<CreatedSlot, SourceError> {
    Ok(CreatedSlot {
        consistent_point: parse_lsn(result.first("consistent_point"), "consistent_point")?,
        snapshot_name: result
            .first("snapshot_name")
            .ok_or_else(|| SourceError::Protocol("no snapshot_name in the reply".to_owned()))?
            .to_owned(),
    })
}

/// Creates a slot that lives as long as this connection, only for the snapshot it exports: its
/// consistent point says exactly which transactions the snapshot sees.
pub async fn create_temporary_slot(
    conn: &mut Connection,
    slot: &str,
) -> Result<CreatedSlot, SourceError> {
    let result = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .await?;
    created_slot(&result)
}

pub async fn drop_slot(conn: &mut Connection, slot: &str) -> Result<(), SourceError> {
    conn.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(slot)))
        .await?;
    Ok(())
}

/// `server_version_num` (`150018`), for choosing what to ask of the server.
pub async fn server_version_num(conn: &mut Connection) -> Result<u32, SourceError> {
    let result = conn.simple_query("SHOW server_version_num").await?;
    result
        .first("server_version_num")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SourceError::Protocol("SHOW server_version_num gave no number".to_owned()))
}

/// What pgcdc asks pgoutput for: the highest protocol the server offers that pgcdc uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// 1 (PostgreSQL 13) or 2 (14+, needed for streaming).
    pub version: u8,
    /// In-progress transactions are streamed in blocks (protocol 2), so the server does not spill
    /// a huge transaction to disk and send it only at commit.
    pub streaming: bool,
    /// Logical decoding messages are sent (PostgreSQL 14+).
    pub messages: bool,
}

impl Protocol {
    /// Binary values and two-phase decoding stay off: text is what the files hold, and a prepared
    /// transaction is only worth writing once it commits.
    pub fn negotiate(server_version_num: u32, streaming: bool, messages: bool) -> Protocol {
        let v14 = server_version_num >= 140_000;
        Protocol {
            version: if v14 && streaming { 2 } else { 1 },
            streaming: v14 && streaming,
            messages: v14 && messages,
        }
    }
}

/// The START_REPLICATION command for a pgoutput slot.
pub fn start_replication_command(
    slot: &str,
    publications: &Publications,
    start: Lsn,
    protocol: Protocol,
) -> String {
    let names: Vec<String> = publications
        .names()
        .iter()
        .map(|p| quote_ident(p))
        .collect();
    let mut options = format!(
        "proto_version '{}', publication_names {}",
        protocol.version,
        quote_literal(&names.join(","))
    );
    if protocol.streaming {
        options.push_str(", streaming 'on'");
    }
    if protocol.messages {
        options.push_str(", messages 'true'");
    }
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} ({options})",
        quote_ident(slot),
        start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalidated_slot_is_named_with_the_reason_each_version_gives() {
        // 17+: the reason column.
        let reason = invalidation(Some("lost"), Some("idle_timeout"), Some(false));
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.starts_with("idle_timeout:"))
        );
        // 16 marks every invalidation conflicting: lost WAL is named as such.
        let lost16 = invalidation(Some("lost"), None, Some(true));
        assert!(
            lost16
                .as_deref()
                .is_some_and(|r| r.starts_with("wal_status is lost"))
        );
        // 16 on a standby: only the conflict flag.
        let conflict = invalidation(Some("reserved"), None, Some(true));
        assert!(
            conflict
                .as_deref()
                .is_some_and(|r| r.starts_with("conflicting:"))
        );
        // 13 to 16: only wal_status.
        let lost = invalidation(Some("lost"), None, None);
        assert!(
            lost.as_deref()
                .is_some_and(|r| r.contains("max_slot_wal_keep_size"))
        );
        // Usable slots, whatever the version.
        assert_eq!(invalidation(Some("reserved"), None, Some(false)), None);
        assert_eq!(invalidation(Some("unreserved"), None, None), None);
        assert_eq!(invalidation(None, None, None), None);
    }

    #[test]
    fn wal_level_replica_decodes_only_where_effective_wal_level_exists() {
        assert_eq!(wal_level("logical", None), WalLevel::Logical);
        assert_eq!(wal_level("logical", Some("logical")), WalLevel::Logical);
        // PostgreSQL 19: replica turns logical while a logical slot exists.
        for effective in ["replica", "logical"] {
            assert_eq!(
                wal_level("replica", Some(effective)),
                WalLevel::LogicalOnDemand {
                    effective: effective.to_owned()
                }
            );
        }
        // Before 19 (no such setting) replica is not enough; minimal never is.
        assert_eq!(
            wal_level("replica", None),
            WalLevel::Insufficient("replica".to_owned())
        );
        assert_eq!(
            wal_level("replica", Some("")),
            WalLevel::Insufficient("replica".to_owned())
        );
        assert_eq!(
            wal_level("minimal", Some("minimal")),
            WalLevel::Insufficient("minimal".to_owned())
        );
    }

    #[test]
    fn failover_slots_use_the_option_list() {
        assert_eq!(
            create_slot_command("s", false),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", true),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)"
        );
    }

    fn pubs(names: &str) -> Publications {
        Publications::parse(names).unwrap()
    }

    #[test]
    fn start_command_quotes_names() {
        let v1 = Protocol::negotiate(130_010, true, true);
        assert_eq!(
            start_replication_command("pgcdc", &pubs("my\"pub"), Lsn::new(0x1_0000_0010), v1),
            "START_REPLICATION SLOT \"pgcdc\" LOGICAL 1/10 (proto_version '1', publication_names '\"my\"\"pub\"')"
        );
        assert_eq!(
            start_replication_command("s", &pubs("a, it's"), Lsn::ZERO, v1),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names '\"a\",\"it''s\"')"
        );
    }

    #[test]
    fn streaming_and_messages_need_postgresql_14() {
        let v2 = Protocol::negotiate(150_018, true, true);
        assert_eq!((v2.version, v2.streaming, v2.messages), (2, true, true));
        assert_eq!(
            start_replication_command("s", &pubs("p"), Lsn::ZERO, v2),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '2', publication_names '\"p\"', streaming 'on', messages 'true')"
        );
        let off = Protocol::negotiate(170_000, false, false);
        assert_eq!(
            (off.version, off.streaming, off.messages),
            (1, false, false)
        );
        let old = Protocol::negotiate(130_000, true, true);
        assert_eq!(
            (old.version, old.streaming, old.messages),
            (1, false, false)
        );
    }
}

//! Copies of existing rows: the initial snapshot of a new slot, and the copy of tables that
//! join the publication later ([`super::added`]). Both read the publications' projection
//! ([`crate::publication`]) inside a slot's exported snapshot and write it as one transaction
//! of `_op = R` rows at the slot's consistent point.

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tracing::info;

use super::error::RunError;
use super::journal::Journal;
use super::publish::publish;
use crate::batch::Batcher;
use crate::changes::{Op, Table, TxnMeta};
use crate::checkpoint::{Checkpoint, SnapshotState};
use crate::config::Config;
use crate::pg_time;
use crate::publication::Publications;
use crate::schema_file::KnownSchemas;
use crate::sink::Sink;
use crate::snapshot::{self, PublishedTable, SnapshotError, Transcoder};
use crate::source::{Connection, slot};

/// Creates the slot with an exported snapshot and copies the published tables inside it.
pub(super) fn initial_snapshot(
    config: &Config,
    handle: &Handle,
    sink: &dyn Sink,
    journal: &Journal,
    conn: &mut Connection,
    batcher: &mut Batcher,
) -> Result<Checkpoint, RunError> {
    let slot_name = config.source.slot.as_str();
    // Recorded before the slot exists, so a crash at any later point is recognised as an
    // interrupted snapshot rather than a slot someone else made.
    let mut ck = Checkpoint::new(slot_name, SnapshotState::Pending);
    ck.save(sink)?;
    let created = handle.block_on(slot::create_slot(conn, slot_name, config.source.failover))?;
    ck.snapshot_lsn = Some(created.consistent_point);
    ck.save(sink)?;
    info!(slot = slot_name, consistent_point = %created.consistent_point, "Created replication slot; copying existing rows");

    let (client, connection) = handle
        .block_on(crate::source::sql_connect(&config.source))
        .map_err(RunError::SqlConnect)?;
    let connection_task = handle.spawn(connection);
    let started = Instant::now();
    let (rows, tables) = copy_into_batcher(
        handle,
        &client,
        &created,
        &config.source.publications,
        |_| true,
        batcher,
    )?;
    drop(client);
    connection_task.abort();
    let sealed = batcher.seal().map_err(|source| RunError::Spool {
        dir: sink.spool_dir().display().to_string(),
        source,
    })?;
    let mut schemas = KnownSchemas::default();
    let entry = publish(sink, &sealed, &mut schemas, journal)?;
    ck.snapshot = SnapshotState::Done;
    ck.schemas = Some(schemas.by_folder().clone());
    for table in &tables {
        ck.cover_table(&table.folder(), created.consistent_point);
    }
    ck.advance(created.consistent_point, created.consistent_point);
    ck.save(sink)?;
    if let Some(entry) = entry {
        journal.settle(entry);
    }
    info!(
        rows,
        tables = tables.len(),
        files = sealed.files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Snapshot complete"
    );
    Ok(ck)
}

/// Copies the published projection of the tables `wanted` selects inside the snapshot `created`
/// exported, as one transaction of `_op = R` rows at its consistent point. Returns the rows
/// copied and the tables.
pub(super) fn copy_into_batcher(
    handle: &Handle,
    client: &tokio_postgres::Client,
    created: &slot::CreatedSlot,
    publications: &Publications,
    wanted: impl Fn(&Table) -> bool,
    batcher: &mut Batcher,
) -> Result<(u64, Vec<Arc<Table>>), RunError> {
    handle.block_on(snapshot::enter(client, &created.snapshot_name))?;
    let tables: Vec<PublishedTable> = handle
        .block_on(snapshot::published_tables(client, publications))?
        .into_iter()
        .filter(|t| wanted(&t.table))
        .collect();
    for t in tables.iter().filter(|t| t.row_filter.is_some()) {
        info!(table = %t.table, row_filter = t.row_filter.as_deref().unwrap_or_default(), "Copying only the rows the publication's row filter admits");
    }
    batcher.begin(TxnMeta {
        xid: None,
        commit_lsn: created.consistent_point,
        commit_ts: pg_time::from_unix_micros(pg_time::now_unix_micros()),
    });
    let mut seq = 0u64;
    let mut transcoders: Vec<Transcoder> =
        tables.iter().map(|t| Transcoder::new(&t.table)).collect();
    // The window's clock: the snapshot is sealed as soon as the copy ends.
    let now = Instant::now();
    let rows = handle.block_on(snapshot::copy_tables(client, &tables, |index, line| {
        let (Some(table), Some(transcoder)) = (
            tables.get(index).map(|t| &t.table),
            transcoders.get_mut(index),
        ) else {
            return Ok(());
        };
        let mut fields = 0;
        batcher
            .push_encoded(table, Op::Read, seq, now, |out| {
                fields = transcoder.transcode(line, out);
            })
            .map_err(|source| SnapshotError::Write {
                table: table.to_string(),
                source,
            })?;
        if fields != table.columns.len() {
            return Err(SnapshotError::Shape {
                table: table.to_string(),
                got: fields,
                expected: table.columns.len(),
            });
        }
        seq += 1;
        Ok(())
    }))?;
    handle.block_on(snapshot::leave(client))?;
    batcher.commit(
        created.consistent_point,
        created.consistent_point,
        Instant::now(),
    );
    Ok((rows, tables.into_iter().map(|t| t.table).collect()))
}

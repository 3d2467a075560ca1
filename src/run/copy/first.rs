//! Copies of existing rows: the initial snapshot of a new slot, and the copy of tables that
//! join the publication later ([`super::whole`]). Both read the publications' projection
//! ([`crate::publication`]) inside a slot's exported snapshot and write it as one transaction
//! of `_op = R` rows at the slot's consistent point.

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tracing::info;

use crate::batch::Batcher;
use crate::changes::{Op, Table, TxnMeta};
use crate::checkpoint::{Checkpoint, CopyProgress, SnapshotState};
use crate::config::Config;
use crate::pg_time;
use crate::publication::Publications;
use crate::run::error::RunError;
use crate::run::journal::Journal;
use crate::run::publish::publish;
use crate::schema_file::KnownSchemas;
use crate::sink::Sink;
use crate::snapshot::{self, PublishedTable, SnapshotError, Transcoder};
use crate::source::{Connection, slot};

/// Creates the slot with an exported snapshot and copies the published tables inside it.
pub(in crate::run) fn initial_snapshot(
    config: &Config,
    handle: &Handle,
    sink: &dyn Sink,
    journal: &Journal,
    conn: &mut Connection,
    batcher: &mut Batcher,
    chunked: bool,
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
    // Tables with a key are copied in chunks beside the stream (PostgreSQL 14+ sends the
    // watermark messages); the others whole, now, in the slot's exported snapshot.
    let Copied {
        rows,
        tables,
        deferred,
    } = copy_into_batcher(
        handle,
        &client,
        &created,
        &config.source.publications,
        |_| true,
        |t| chunked && t.unchunkable().is_none(),
        batcher,
    )?;
    if !chunked {
        info!(
            "PostgreSQL 13 sends no logical decoding messages: every table is copied whole, in the slot's exported snapshot"
        );
    }
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
    for folder in &deferred {
        ck.copies.insert(
            folder.clone(),
            CopyProgress {
                begun_at: Some(created.consistent_point),
                ..CopyProgress::default()
            },
        );
    }
    ck.advance(created.consistent_point, created.consistent_point);
    ck.save(sink)?;
    if let Some(entry) = entry {
        journal.settle(entry);
    }
    info!(
        rows,
        tables = tables.len(),
        chunked = deferred.len(),
        files = sealed.files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Snapshot complete"
    );
    // The same line the chunked path writes when a table's copy is durable, so an operator (or
    // a script) waits for one thing whichever way a table was copied.
    for table in &tables {
        let folder = table.folder();
        if !deferred.contains(&folder) {
            info!(table = %folder, whole = true, "Copy of the table complete");
        }
    }
    Ok(ck)
}

/// What [`copy_into_batcher`] did.
pub(in crate::run) struct Copied {
    pub rows: u64,
    /// Every table it wrote a `B` row for.
    pub tables: Vec<Arc<Table>>,
    /// The tables left to a chunked copy: only their `B` row is written.
    pub deferred: Vec<String>,
}

/// Copies the published projection of the tables `wanted` selects inside the snapshot `created`
/// exported, as one transaction of `_op = R` rows at its consistent point, each table's rows
/// between a `B` and an `E` row. Tables `defer` selects get their `B` row only: a chunked copy
/// beside the stream reads them.
pub(in crate::run) fn copy_into_batcher(
    handle: &Handle,
    client: &tokio_postgres::Client,
    created: &slot::CreatedSlot,
    publications: &Publications,
    wanted: impl Fn(&Table) -> bool,
    defer: impl Fn(&PublishedTable) -> bool,
    batcher: &mut Batcher,
) -> Result<Copied, RunError> {
    handle.block_on(snapshot::enter(client, &created.snapshot_name))?;
    let all: Vec<PublishedTable> = handle
        .block_on(snapshot::published_tables(client, publications))?
        .into_iter()
        .filter(|t| wanted(&t.table))
        .collect();
    let (deferred, tables): (Vec<PublishedTable>, Vec<PublishedTable>) =
        all.into_iter().partition(|t| defer(t));
    for t in &tables {
        if let Some(reason) = t.unchunkable() {
            info!(table = %t.table, reason, "Copying the table whole, in an exported snapshot, not in chunks");
        }
    }
    for t in tables.iter().filter(|t| t.row_filter.is_some()) {
        info!(table = %t.table, row_filter = t.row_filter.as_deref().unwrap_or_default(), "Copying only the rows the publication's row filter admits");
    }
    batcher.begin(TxnMeta {
        xid: None,
        commit_lsn: created.consistent_point,
        commit_ts: pg_time::from_unix_micros(pg_time::now_unix_micros()),
    });
    let mut seq = 0u64;
    // The window's clock: the snapshot is sealed as soon as the copy ends.
    let now = Instant::now();
    let write_error = |table: &Table, source| SnapshotError::Write {
        table: table.to_string(),
        source,
    };
    let marker = |batcher: &mut Batcher, table: &Arc<Table>, op: Op, seq: &mut u64| {
        let columns = table.columns.len();
        let result = batcher.push_encoded(table, op, *seq, now, |out| {
            out.extend(std::iter::repeat_n(b',', columns))
        });
        *seq += 1;
        result.map_err(|e| write_error(table, e))
    };
    for t in deferred.iter().chain(&tables) {
        marker(batcher, &t.table, Op::CopyBegin, &mut seq)?;
    }
    let mut transcoders: Vec<Transcoder> =
        tables.iter().map(|t| Transcoder::new(&t.table)).collect();
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
            .map_err(|e| write_error(table, e))?;
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
    for t in &tables {
        marker(batcher, &t.table, Op::CopyEnd, &mut seq)?;
    }
    handle.block_on(snapshot::leave(client))?;
    batcher.commit(
        created.consistent_point,
        created.consistent_point,
        Instant::now(),
    );
    Ok(Copied {
        rows,
        deferred: deferred.iter().map(|t| t.table.folder()).collect(),
        tables: deferred
            .into_iter()
            .chain(tables)
            .map(|t| t.table)
            .collect(),
    })
}

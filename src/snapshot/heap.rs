//! The heaps a chunked copy plans with: a table's size in blocks and its heap file, or each leaf
//! partition's for a partitioned root, and the heap file a chunk's read saw.

use super::{PublishedTable, SnapshotError};
use crate::changes::Table;
use crate::checkpoint::LeafPlan;

/// What planning a chunked copy needs to know of a table now.
#[derive(Debug, Clone)]
pub struct TableSize {
    pub blocks: u32,
    pub block_size: u32,
    pub rows_estimated: u64,
    /// See [`crate::checkpoint::CopyPlan::filenode`].
    pub filenode: Option<u32>,
    /// A partitioned root's leaf partitions (see [`crate::checkpoint::CopyPlan::leaves`]).
    pub leaves: Option<Vec<LeafPlan>>,
}

/// The table's size in heap blocks, and the planner's row estimate; for a partitioned root,
/// each leaf partition's (at any depth; rows are only ever in leaves).
pub async fn table_size(
    client: &tokio_postgres::Client,
    published: &PublishedTable,
) -> Result<TableSize, SnapshotError> {
    let table = &published.table;
    let rows = client
        .query(
            "select n.nspname::text, c.relname::text, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::int)::int8, \
                    greatest(c.reltuples, 0)::int8, pg_relation_filenode(c.oid)::int8, \
                    current_setting('block_size')::int8 \
             from pg_catalog.pg_class c \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             where case when $3 \
                        then c.oid in (select relid from pg_partition_tree( \
                                         (quote_ident($1) || '.' || quote_ident($2))::regclass) \
                                       where isleaf) and c.relkind = 'r' \
                        else c.oid = (quote_ident($1) || '.' || quote_ident($2))::regclass end \
             order by c.oid",
            &[&table.schema, &table.name, &published.partitioned],
        )
        .await?;
    let heaps: Vec<(LeafPlan, u64)> = rows
        .iter()
        .map(|row| {
            let blocks: i64 = row.get(2);
            let estimated: i64 = row.get(3);
            let filenode: Option<i64> = row.get(4);
            let leaf = LeafPlan {
                schema: row.get(0),
                name: row.get(1),
                blocks: u32::try_from(blocks).unwrap_or(u32::MAX),
                filenode: filenode.and_then(|f| u32::try_from(f).ok()),
            };
            (leaf, u64::try_from(estimated).unwrap_or(0))
        })
        .collect();
    let rows_estimated = heaps.iter().map(|(_, rows)| rows).sum();
    // The same in every row; with no row (a root without partitions) it plans nothing.
    let block_size = rows
        .first()
        .and_then(|row| u32::try_from(row.get::<_, i64>(5)).ok())
        .unwrap_or(8192);
    Ok(if published.partitioned {
        TableSize {
            blocks: 0,
            block_size,
            rows_estimated,
            filenode: None,
            leaves: Some(heaps.into_iter().map(|(leaf, _)| leaf).collect()),
        }
    } else {
        let heap = heaps.first().map(|(leaf, _)| leaf);
        TableSize {
            blocks: heap.map_or(0, |h| h.blocks),
            block_size,
            rows_estimated,
            filenode: heap.and_then(|h| h.filenode),
            leaves: None,
        }
    })
}

/// The heap file the rows of `span` are in now (`None` for a root's chunk that reads nothing,
/// and for a root's key reads, which read every partition). Asked inside a transaction that has
/// read the rows, it names the file that read saw: the read's lock keeps every rewrite out
/// until it commits.
pub async fn filenode(
    client: &tokio_postgres::Client,
    table: &Table,
    leaf: Option<&LeafPlan>,
) -> Result<Option<u32>, SnapshotError> {
    let (schema, name) = match leaf {
        Some(leaf) => (&leaf.schema, &leaf.name),
        None => (&table.schema, &table.name),
    };
    let row = client
        .query_one(
            "select pg_relation_filenode((quote_ident($1) || '.' || quote_ident($2))::regclass)::int8",
            &[schema, name],
        )
        .await?;
    let filenode: Option<i64> = row.get(0);
    Ok(filenode.and_then(|f| u32::try_from(f).ok()))
}

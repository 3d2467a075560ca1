//! The initial snapshot: the rows that existed before the slot, copied inside the slot's
//! exported snapshot so that snapshot plus stream hold every row exactly once.
//!
//! Runs on an ordinary (tokio-postgres) connection while the replication connection that
//! created the slot stays open and idle: the exported snapshot lives only that long.

mod copy_text;

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};

pub use copy_text::{CopyTextError, CopyTextParser, Transcoder};

use crate::changes::type_name::{FIRST_USER_OID, sql_type};
use crate::changes::{ColumnInfo, Table};
use crate::source::conn::{SESSION_SETTINGS, quote_ident, quote_literal};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot query failed: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("snapshot of {table}: {source}")]
    Copy {
        table: String,
        source: CopyTextError,
    },
    #[error("snapshot of {table}: a row has {got} fields, the table has {expected} columns")]
    Shape {
        table: String,
        got: usize,
        expected: usize,
    },
    #[error("snapshot of {table}: cannot write the spool file: {source}")]
    Write {
        table: String,
        source: std::io::Error,
    },
}

/// The tables of a publication, with their columns in the order pgoutput sends them (attribute
/// number order, without dropped or generated columns).
pub async fn published_tables(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<Arc<Table>>, SnapshotError> {
    let rows = client
        .query(
            "select schemaname::text, tablename::text from pg_catalog.pg_publication_tables \
             where pubname = $1 order by 1, 2",
            &[&publication],
        )
        .await?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let name: String = row.get(1);
        let columns = client
            .query(
                "select a.attname::text, a.atttypid, a.atttypmod, \
                        exists(select 1 from pg_catalog.pg_index i \
                               where i.indrelid = a.attrelid and i.indisprimary \
                                 and a.attnum = any(i.indkey)), \
                        n.nspname::text, t.typname::text, t.oid \
                 from pg_catalog.pg_attribute a \
                 join pg_catalog.pg_type d on d.oid = a.atttypid \
                 join pg_catalog.pg_type t \
                   on t.oid = case when d.typtype = 'd' then d.typbasetype else d.oid end \
                 join pg_catalog.pg_namespace n on n.oid = t.typnamespace \
                 where a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                   and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' \
                 order by a.attnum",
                &[&schema, &name],
            )
            .await?
            .into_iter()
            .map(|c| {
                let type_oid: u32 = c.get(1);
                let type_modifier: i32 = c.get(2);
                let (namespace, type_name): (String, String) = (c.get(4), c.get(5));
                // Named as pgoutput's Type messages name them (a domain by its base type), so
                // the snapshot's schema file and the stream's are the same document.
                let named_oid: u32 = c.get(6);
                let user_type = (named_oid >= FIRST_USER_OID)
                    .then_some((namespace.as_str(), type_name.as_str()));
                ColumnInfo {
                    name: c.get(0),
                    type_name: sql_type(named_oid, type_modifier, user_type),
                    type_oid,
                    type_modifier,
                    is_key: c.get(3),
                }
            })
            .collect();
        tables.push(Arc::new(Table {
            schema,
            name,
            columns,
        }));
    }
    Ok(tables)
}

/// Copies every table inside the exported snapshot `snapshot_name`, handing each row to
/// `on_line` with the index of its table, in COPY text form (without its LF). Returns the
/// number of rows copied.
pub async fn copy_tables(
    client: &tokio_postgres::Client,
    snapshot_name: &str,
    tables: &[Arc<Table>],
    mut on_line: impl FnMut(usize, &[u8]) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let mut setup = String::new();
    for (name, value) in SESSION_SETTINGS {
        setup.push_str(&format!("set {name} = {}; ", quote_literal(value)));
    }
    setup.push_str(&format!(
        "begin isolation level repeatable read read only; set transaction snapshot {}",
        quote_literal(snapshot_name)
    ));
    client.batch_execute(&setup).await?;
    let mut total = 0;
    for (index, table) in tables.iter().enumerate() {
        let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let name = format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        );
        // COPY reads a partitioned table (published through its root) only through a query.
        let partitioned: bool = client
            .query_one(
                "select relkind = 'p' from pg_catalog.pg_class where oid = $1::text::regclass",
                &[&name],
            )
            .await?
            .get(0);
        let sql = if partitioned {
            format!("copy (select {} from {name}) to stdout", columns.join(", "))
        } else {
            format!("copy {name} ({}) to stdout", columns.join(", "))
        };
        let stream = client.copy_out(sql.as_str()).await?;
        pin_mut!(stream);
        let mut parser = CopyTextParser::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            parser.feed_lines(&chunk, |line| {
                total += 1;
                on_line(index, line)
            })?;
        }
        parser.finish().map_err(|source| SnapshotError::Copy {
            table: table.to_string(),
            source,
        })?;
    }
    client.batch_execute("commit").await?;
    Ok(total)
}

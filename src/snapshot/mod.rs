//! The initial snapshot: the rows that existed before the slot, copied inside the slot's
//! exported snapshot so that snapshot plus stream hold every row exactly once.
//!
//! Runs on an ordinary (tokio-postgres) connection while the replication connection that
//! created the slot stays open and idle: the exported snapshot lives only that long.

mod copy_text;
mod heap;
mod primary_key;

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};

pub use copy_text::{CopyTextError, CopyTextParser, Transcoder};
pub use heap::{TableSize, filenode, table_size};
pub use primary_key::primary_key;

use crate::changes::type_name::{FIRST_USER_OID, sql_type};
use crate::changes::{ColumnInfo, Table};
use crate::checkpoint::Span;
use crate::publication::{Entry, ProjectionError, Publications, copy_statement};
use crate::source::conn::{quote_ident, quote_literal};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot query failed: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("chunked copy: {0}")]
    Visibility(#[from] crate::control::VisibilityError),
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

/// A table to copy: its columns as pgoutput's Relation message gives them, and the statement
/// that reads exactly what the publications publish of it.
#[derive(Debug, Clone)]
pub struct PublishedTable {
    pub table: Arc<Table>,
    /// The published row filter, if any (for the log and `pgcdc check`).
    pub row_filter: Option<String>,
    /// `COPY … TO STDOUT` of the published columns and rows.
    pub copy: String,
    /// The positions (in `table.columns`) of the replica identity's key columns, when the
    /// table has a primary key or a replica identity index and publishes all of its columns:
    /// what a chunked copy needs to tell which copied rows the stream changed meanwhile.
    pub identity: Option<Vec<usize>>,
    /// A partitioned root (its rows live in its leaf partitions, whose heaps its chunks read).
    pub partitioned: bool,
    /// For a root: a leaf partition this role cannot read as a table of its own (no SELECT
    /// on it, or row-level security enabled on it). PostgreSQL checks neither for reads through
    /// the root, so such a root is read through the root, whole.
    pub leaves_unreadable: bool,
    qualified: String,
}

impl PublishedTable {
    /// Why this table cannot be copied in chunks, if it cannot.
    pub fn unchunkable(&self) -> Option<&'static str> {
        if self.leaves_unreadable {
            Some(
                "a partition cannot be read by itself (no SELECT on it, or row-level security on it); reading through the root",
            )
        } else if self.identity.is_none() {
            Some(
                "it has neither a primary key nor a replica identity index (or that key is not all published)",
            )
        } else {
            None
        }
    }

    /// `COPY … TO STDOUT` of the published projection of the rows in `span`'s heap blocks: a
    /// TID range scan, which reads only those blocks (of the leaf partition it names, for a
    /// partitioned root).
    pub fn chunk_copy(&self, span: &Span<'_>) -> String {
        if span.empty {
            return self.copy_where("false".to_owned(), None);
        }
        let mut condition = format!("ctid >= '({},0)'::tid", span.start);
        if let Some(end) = span.end {
            condition.push_str(&format!(" and ctid < '({end},0)'::tid"));
        }
        let leaf = span
            .leaf
            .map(|l| format!("{}.{}", quote_ident(&l.schema), quote_ident(&l.name)));
        self.copy_where(condition, leaf)
    }

    /// `COPY … TO STDOUT` of the published columns of the rows that meet `condition` and the
    /// row filter, read from the heap of `leaf` (a leaf partition) or, when `None`, from the
    /// table (all of its partitions, for a root). Columns and the filter are named, so they mean
    /// the same in a partition whose columns are in another order.
    fn copy_where(&self, mut condition: String, leaf: Option<String>) -> String {
        let columns: Vec<String> = self
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        if let Some(filter) = &self.row_filter {
            condition.push_str(&format!(" and ({filter})"));
        }
        let from = match leaf {
            Some(leaf) => format!("only {leaf}"),
            None if self.partitioned => self.qualified.clone(),
            None => format!("only {}", self.qualified),
        };
        format!(
            "copy (select {} from {from} where {condition}) to stdout",
            columns.join(", "),
        )
    }

    /// `COPY … TO STDOUT` of the published projection of the rows with these keys (values of
    /// the identity's columns in column order, as the server prints them). The literals are untyped, so each
    /// takes its column's type and the key's index serves the lookup.
    pub fn keys_copy(&self, keys: &[Vec<String>]) -> String {
        // In column order: how the pipeline lists a key's values.
        let mut positions: Vec<usize> = self.identity.iter().flatten().copied().collect();
        positions.sort_unstable();
        let key_columns: Vec<String> = positions
            .iter()
            .filter_map(|&i| self.table.columns.get(i))
            .map(|c| quote_ident(&c.name))
            .collect();
        let tuples: Vec<String> = keys
            .iter()
            .map(|key| {
                let values: Vec<String> = key.iter().map(|v| escaped_literal(v)).collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let condition = if tuples.is_empty() {
            "false".to_owned()
        } else {
            format!("({}) in ({})", key_columns.join(", "), tuples.join(", "))
        };
        self.copy_where(condition, None)
    }
}

/// A string literal that means `value` whatever `standard_conforming_strings` is.
fn escaped_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Starts the repeatable-read transaction that reads as of the slot's exported snapshot. The
/// catalog is read inside it too, so the copy follows the publications as they were at the
/// slot's consistent point, as the stream does.
pub async fn enter(
    client: &tokio_postgres::Client,
    snapshot_name: &str,
) -> Result<(), SnapshotError> {
    // The session settings came with the connection (`source::sql_connect`).
    let setup = format!(
        "begin isolation level repeatable read read only; set transaction snapshot {}",
        quote_literal(snapshot_name)
    );
    client.batch_execute(&setup).await?;
    Ok(())
}

/// Ends the transaction [`enter`] began.
pub async fn leave(client: &tokio_postgres::Client) -> Result<(), SnapshotError> {
    client.batch_execute("commit").await?;
    Ok(())
}

/// How each publication publishes each table (or only the table `only`, `schema.table`), from
/// `pg_publication_tables`, per table in name order. Column lists and row filters exist from
/// PostgreSQL 15 on.
pub async fn publication_entries(
    client: &tokio_postgres::Client,
    publications: &Publications,
    only: Option<&str>,
) -> Result<Vec<((String, String), Vec<Entry>)>, SnapshotError> {
    let version: i32 = client
        .query_one("select current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let projection = if version >= 150_000 {
        "attnames::text[], rowfilter"
    } else {
        "null::text[], null::text"
    };
    let rows = client
        .query(
            format!(
                "select schemaname::text, tablename::text, pubname::text, {projection} \
                 from pg_catalog.pg_publication_tables where pubname = any($1::text[]) \
                 and ($2::text is null or schemaname || '.' || tablename = $2::text) \
                 order by 1, 2, 3"
            )
            .as_str(),
            &[&publications.names(), &only],
        )
        .await?;
    let mut tables: Vec<((String, String), Vec<Entry>)> = Vec::new();
    for row in rows {
        let name = (row.get::<_, String>(0), row.get::<_, String>(1));
        let entry = Entry {
            publication: row.get(2),
            columns: row.get(3),
            row_filter: row.get(4),
        };
        match tables.last_mut() {
            Some((last, entries)) if *last == name => entries.push(entry),
            _ => tables.push((name, vec![entry])),
        }
    }
    Ok(tables)
}

/// The tables of the publications, with their published columns in the order pgoutput sends
/// them (attribute number order) and the statement that copies their published projection.
pub async fn published_tables(
    client: &tokio_postgres::Client,
    publications: &Publications,
) -> Result<Vec<PublishedTable>, SnapshotError> {
    published_tables_where(client, publications, None).await
}

/// [`published_tables`] for the one table `folder` (`schema.table`), without reading the
/// columns of every other table: a copy plans its table in a few queries however many tables the
/// publication has.
pub async fn published_table(
    client: &tokio_postgres::Client,
    publications: &Publications,
    folder: &str,
) -> Result<Option<PublishedTable>, SnapshotError> {
    // Filtered by the server: each plan reading every published table's entries made the plans
    // of a first copy quadratic in the tables (5,000 rows fetched per table at 5,000 tables).
    Ok(published_tables_where(client, publications, Some(folder))
        .await?
        .into_iter()
        .next())
}

async fn published_tables_where(
    client: &tokio_postgres::Client,
    publications: &Publications,
    only: Option<&str>,
) -> Result<Vec<PublishedTable>, SnapshotError> {
    let mut tables = Vec::new();
    for ((schema, name), entries) in publication_entries(client, publications, only).await? {
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        let projection = crate::publication::combine(&format!("{schema}.{name}"), &entries)?;
        let published: Option<Vec<String>> = projection.columns.map(|c| c.into_iter().collect());
        // Before PostgreSQL 18 pgoutput never sends generated columns; from 18 on it sends the
        // stored ones a publication lists or publishes with `publish_generated_columns`, which
        // `attnames` already says. Virtual generated columns are never sent.
        let rows = client
            .query(
                "select a.attname::text, a.atttypid, a.atttypmod, c.oid, \
                        n.nspname::text, t.typname::text, t.oid, a.attgenerated <> '', \
                        c.relkind = 'p', c.relreplident = 'f' \
                 from pg_catalog.pg_attribute a \
                 join pg_catalog.pg_class c on c.oid = a.attrelid \
                 join pg_catalog.pg_type d on d.oid = a.atttypid \
                 join pg_catalog.pg_type t \
                   on t.oid = case when d.typtype = 'd' then d.typbasetype else d.oid end \
                 join pg_catalog.pg_namespace n on n.oid = t.typnamespace \
                 where a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                   and a.attnum > 0 and not a.attisdropped and a.attgenerated <> 'v' \
                   and case when $3::text[] is null then a.attgenerated = '' \
                            else a.attname = any($3::text[]) \
                                 and (a.attgenerated = '' \
                                      or current_setting('server_version_num')::int >= 180000) \
                       end \
                 order by a.attnum",
                &[&schema, &name, &published],
            )
            .await?;
        let partitioned = rows.first().is_some_and(|c| c.get::<_, bool>(8));
        let primary_key = match rows.first() {
            Some(c) => primary_key(client, c.get(3)).await?,
            None => Vec::new(),
        };
        let key: Vec<String> = client
            .query_one(
                "select array(select a.attname::text \
                   from pg_catalog.pg_index i \
                   join pg_catalog.pg_attribute a \
                     on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
                   where i.indrelid = c.oid \
                     and case c.relreplident when 'd' then i.indisprimary \
                                            when 'i' then i.indisreplident \
                                            else false end \
                   order by array_position(i.indkey::int2[], a.attnum)) \
                 from pg_catalog.pg_class c \
                 where c.oid = (quote_ident($1) || '.' || quote_ident($2))::regclass",
                &[&schema, &name],
            )
            .await?
            .get(0);
        // The key the stream's Relation messages name, so the copy's schema file and the
        // stream's agree: the replica-identity index (the primary key under the default
        // identity), else the primary key (REPLICA IDENTITY FULL, see `run/keys.rs`), else
        // under FULL every column.
        // Only under FULL, and only when every primary-key column is published (the stream's
        // rule, `changes::key`): REPLICA IDENTITY NOTHING, or an identity index that was
        // dropped, names no key in the stream, and so not here either.
        let full = rows.first().is_some_and(|c| c.get::<_, bool>(9));
        let pk_published = primary_key
            .iter()
            .all(|k| rows.iter().any(|c| c.get::<_, &str>(0) == k.as_str()));
        let named_key: Option<&[String]> = if !key.is_empty() {
            Some(&key)
        } else if full && !primary_key.is_empty() && pk_published {
            Some(&primary_key)
        } else if full {
            None
        } else {
            Some(&[])
        };
        let leaves_unreadable = partitioned
            && client
                .query_one(
                    "select exists (select 1 from pg_catalog.pg_partition_tree( \
                         (quote_ident($1) || '.' || quote_ident($2))::regclass) t \
                       join pg_catalog.pg_class c on c.oid = t.relid \
                       where t.isleaf and (c.relrowsecurity \
                             or not has_table_privilege(c.oid, 'select')))",
                    &[&schema, &name],
                )
                .await?
                .get::<_, bool>(0);
        let has_generated = rows.iter().any(|c| c.get::<_, bool>(7));
        let columns: Vec<ColumnInfo> = rows
            .iter()
            .map(|c| {
                let type_oid: u32 = c.get(1);
                let type_modifier: i32 = c.get(2);
                let (namespace, type_name): (String, String) = (c.get(4), c.get(5));
                // Named as pgoutput's Type messages name them (a domain by its base type), so
                // the snapshot's schema file and the stream's are the same document.
                let named_oid: u32 = c.get(6);
                let user_type = (named_oid >= FIRST_USER_OID)
                    .then_some((namespace.as_str(), type_name.as_str()));
                let name: String = c.get(0);
                ColumnInfo {
                    type_name: sql_type(named_oid, type_modifier, user_type),
                    type_oid,
                    type_modifier,
                    is_key: named_key.is_none_or(|k| k.contains(&name)),
                    name,
                }
            })
            .collect();
        let quoted: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let copy = copy_statement(
            &qualified,
            &quoted,
            projection.row_filter.as_deref(),
            partitioned,
            has_generated,
        );
        // The chunked copy's window rule matches rows by this key, the same one the stream names:
        // under REPLICA IDENTITY FULL that is the primary key, so such a table is chunked too.
        let identity: Option<Vec<usize>> = named_key.filter(|k| !k.is_empty()).and_then(|k| {
            k.iter()
                .map(|k| columns.iter().position(|c| &c.name == k))
                .collect()
        });
        tables.push(PublishedTable {
            table: Arc::new(Table {
                schema,
                name,
                columns,
            }),
            row_filter: projection.row_filter,
            copy,
            identity,
            partitioned,
            leaves_unreadable,
            qualified,
        });
    }
    Ok(tables)
}

/// Reads one `COPY … TO STDOUT`, handing each row to `on_line` in COPY text form (without its
/// LF). Returns the number of rows.
pub async fn copy_rows(
    client: &tokio_postgres::Client,
    table: &Table,
    statement: &str,
    mut on_line: impl FnMut(&[u8]) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let stream = client.copy_out(statement).await?;
    pin_mut!(stream);
    let mut parser = CopyTextParser::new();
    let mut rows = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        parser.feed_lines(&chunk, |line| {
            rows += 1;
            on_line(line)
        })?;
    }
    parser.finish().map_err(|source| SnapshotError::Copy {
        table: table.to_string(),
        source,
    })?;
    Ok(rows)
}

/// Copies every table inside the transaction [`enter`] began, handing each row to `on_line` with
/// the index of its table, in COPY text form (without its LF). Returns the number of rows copied.
pub async fn copy_tables(
    client: &tokio_postgres::Client,
    tables: &[PublishedTable],
    mut on_line: impl FnMut(usize, &[u8]) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let mut total = 0;
    for (index, published) in tables.iter().enumerate() {
        total += copy_rows(client, &published.table, &published.copy, |line| {
            on_line(index, line)
        })
        .await?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_literals_mean_their_value_under_any_string_setting() {
        assert_eq!(escaped_literal("plain"), "E'plain'");
        assert_eq!(escaped_literal(r"a'b\c"), r"E'a''b\\c'");
    }
}

//! A table's primary key from the catalog: the one place pgcdc reads it, so the copy's schema
//! file and the stream's (which needs it for `REPLICA IDENTITY FULL` tables, whose Relation
//! message flags every column as key) name the same key.

/// The columns of the primary key of the relation with OID `relid`, in key order; empty when it
/// has none (or no longer exists). One indexed catalog read: cheap enough for the pipeline to
/// make once per Relation message.
pub async fn primary_key(
    client: &tokio_postgres::Client,
    relid: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "select array(select a.attname::text \
               from pg_catalog.pg_index i \
               join pg_catalog.pg_attribute a \
                 on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
               where i.indrelid = $1 and i.indisprimary \
               order by array_position(i.indkey::int2[], a.attnum))",
            &[&relid],
        )
        .await?;
    row.try_get(0)
}

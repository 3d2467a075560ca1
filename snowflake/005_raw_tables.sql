-- pgcdc on Snowflake, step 5 of 7: the RAW table for public.ecommerce_sales. Run as LOADER, which
-- then owns it (schema evolution below needs the owner).
--
-- One row per change row of pgcdc's files, append-only: pgcdc's six metadata columns, the source
-- table's columns in its attribute order (the header of every file), and three columns the load
-- fills from the file (INCLUDE_METADATA in 006/007). Column names are unquoted, so Snowflake
-- stores them upper-case (_OP, _COMMIT_LSN, ..., _LOADED_AT): the names dbt's source uses.
--
-- Every column is nullable: deletes carry only the key (other columns empty), a truncate row
-- carries no column at all, and a replayed file may load twice (dbt dedupes on _commit_lsn, _seq).
--
-- Types:
--   _commit_lsn  NUMBER(20,0): a 64-bit LSN as a decimal integer can reach 18446744073709551615,
--                more than any 64-bit integer type holds signed. Order and compare it as a number.
--   _seq         NUMBER(20,0): pgcdc counts changes in a transaction with an unsigned 64-bit int.
--   _xid         NUMBER(10,0): a 32-bit transaction id; empty (NULL) for snapshot rows.
--   _commit_ts   TIMESTAMP_TZ: pgcdc writes an instant in UTC (...Z); TIMESTAMP_TZ keeps it an
--                instant whatever the session's TIMEZONE, where TIMESTAMP_NTZ would drop the
--                zone and rely on everyone remembering it was UTC.
--   _unchanged   VARCHAR: empty, or the JSON text of the unchanged-TOAST column names
--                (["description"]); dbt parses it (PARSE_JSON). Kept as the exact text of the file.
--   source columns: VARCHAR, every one, whatever the PostgreSQL type. A typed column fails the
--                COPY on a value Snowflake's type cannot hold (numeric NaN, a timestamp
--                'infinity', a BC date, a year past 9999, text over the type's length): no value
--                can fail a VARCHAR (16 MB; pgcdc's text is PostgreSQL's output, a 1 GB text
--                aside). dbt casts them with TRY_ functions and counts what does not fit
--                (README.md "Type mapping", dbt test pgcdc_cast_failures).
--   _loaded_at   TIMESTAMP_LTZ: when the COPY that loaded the row started (METADATA$START_SCAN_TIME).
--                The DEFAULT serves rows inserted any other way; a COPY with MATCH_BY_COLUMN_NAME
--                does not apply column defaults, hence INCLUDE_METADATA.
--
-- ENABLE_SCHEMA_EVOLUTION: a column added to the source table (ALTER TABLE ... ADD COLUMN) shows
-- up in the header of later files; the load then adds it to this table instead of dropping its
-- values. Snowflake infers the new column's type from the data, so add it yourself as VARCHAR
-- when the schema file appears (`alter table ... add column if not exists new_column varchar`) to
-- keep RAW all text; dbt reads every value column as ::varchar either way. Dropped source
-- columns load as NULL from then on; a renamed column arrives under its new name and dbt
-- (scripts/dbt-generate.py) reads the old name for older rows.
--
-- IF NOT EXISTS, never OR REPLACE: this table is the only copy of the change history in Snowflake.

use role loader;

create table if not exists pgcdc.raw.ecommerce_sales_changes (
    -- pgcdc's metadata columns
    _op               varchar(1)    comment 'I insert, U update (new row), D delete (key only), T truncate, R copied row, B/E copy begins/ends',
    _commit_lsn       number(20,0)  comment 'Commit LSN of the transaction as an integer; snapshot rows carry the slot''s consistent point',
    _seq              number(20,0)  comment 'Position of the change in its transaction from 0; (_commit_lsn, _seq) is unique and increasing',
    _xid              number(10,0)  comment 'Transaction id; NULL for snapshot rows',
    _commit_ts        timestamp_tz(6) comment 'Commit time (snapshot time for R rows), UTC',
    _unchanged        varchar       comment 'NULL, or a JSON array of columns whose unchanged TOAST value was not sent (keep the previous value)',
    -- public.ecommerce_sales, in attribute order, as text
    id                varchar,
    invoice_no        varchar,
    stock_code        varchar,
    description       varchar,
    quantity          varchar,
    invoice_date      varchar,
    unit_price        varchar,
    customer_id       varchar,
    country           varchar,
    -- filled by the load (INCLUDE_METADATA)
    _file_name        varchar       comment 'Stage path of the file the row came from (METADATA$FILENAME)',
    _file_row_number  number(20,0)  comment 'Row number in that file (METADATA$FILE_ROW_NUMBER)',
    _loaded_at        timestamp_ltz(6) default current_timestamp() comment 'Start of the COPY that loaded the row (METADATA$START_SCAN_TIME)'
)
enable_schema_evolution = true
comment = 'pgcdc change rows of public.ecommerce_sales, as written in s3://<bucket>/<prefix>/public.ecommerce_sales/';

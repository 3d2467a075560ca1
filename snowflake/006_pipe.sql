-- pgcdc on Snowflake, step 6 of 7 (choose this or 007, not both): Snowpipe with AUTO_INGEST
-- loads every file within a minute or so of pgcdc writing it, using serverless compute (no
-- warehouse). Run as LOADER.
--
-- The COPY (the same statement as in 007):
--   from @.../public.ecommerce_sales/   one table's folder only; never _pgcdc/ (checkpoint, write probe)
--   pattern                             only pgcdc's data files: dt=YYYY-MM-DD/hour=HH/<16 hex>-<16 hex>,
--                                       optionally .part-NNNN-of-NNNN, then .csv.gz (or .csv)
--   match_by_column_name                columns by the file's header (PARSE_HEADER, 003), not by position
--   include_metadata                    where each row came from and when it was loaded; needs
--                                       MATCH_BY_COLUMN_NAME and ERROR_ON_COLUMN_COUNT_MISMATCH = FALSE
--   on_error = continue                 RAW is all text, so no value can fail; what is left is a
--                                       malformed line (a damaged file). SKIP_FILE would drop the
--                                       whole file silently (freshness stays green); ABORT_STATEMENT
--                                       is not allowed in a pipe. CONTINUE loads every other line and
--                                       counts the error (COPY_HISTORY error_count): checks.sql lists
--                                       such files, and dbt counts a file with a gap in its
--                                       _file_row_number as not loaded, which holds the current state
--                                       back before it (int_pgcdc__completeness).
--
-- Load history makes a file load once: a replayed upload of the same name and content is skipped.
-- A pipe keeps its history (14 days) as long as it exists, so change it with care: CREATE OR
-- REPLACE PIPE starts an empty history and ALTER PIPE ... REFRESH would then load the last 7 days
-- again (harmless for dbt, which dedupes on _commit_lsn, _seq, but wasteful).
--
-- After creating it, connect S3 to the pipe's queue (README.md "Snowpipe notifications"):
--   show pipes like 'ECOMMERCE_SALES_PIPE' in schema pgcdc.raw;   -- column notification_channel
--   desc pipe pgcdc.raw.ecommerce_sales_pipe;                      -- the same, one pipe
-- put that SQS ARN into aws/s3_notification.json as QueueArn and apply it to the bucket. Then load
-- what pgcdc wrote before the notification existed: alter pipe ... refresh (README.md "Backfill").

use role loader;

create pipe if not exists pgcdc.raw.ecommerce_sales_pipe
    auto_ingest = true
    comment = 'pgcdc: loads public.ecommerce_sales change files into RAW.ECOMMERCE_SALES_CHANGES on S3 events'
as
copy into pgcdc.raw.ecommerce_sales_changes
    from @pgcdc.raw.pgcdc_stage/public.ecommerce_sales/
    file_format = (format_name = 'pgcdc.raw.pgcdc_csv')
    pattern = '.*dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/hour=[0-9]{2}/[0-9A-F]{16}-[0-9A-F]{16}([.]part-[0-9]{4,}-of-[0-9]{4,})?[.]csv([.]gz)?'
    match_by_column_name = case_insensitive
    include_metadata = (
        _file_name = metadata$filename,
        _file_row_number = metadata$file_row_number,
        _loaded_at = metadata$start_scan_time
    )
    on_error = continue;

show pipes like 'ECOMMERCE_SALES_PIPE' in schema pgcdc.raw;
select system$pipe_status('pgcdc.raw.ecommerce_sales_pipe');

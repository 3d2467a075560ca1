-- pgcdc on Snowflake, step 7 of 7, the alternative to 006 (choose one, not both: a pipe and a
-- bulk COPY keep separate load histories, so running both loads every file twice). A task runs
-- the same COPY every 5 minutes on the LOADING warehouse. Use it when S3 event notifications
-- cannot be configured on the bucket, or to batch loads.
--
-- Trade-offs against the pipe: rows arrive up to 5 minutes (+ the COPY) later; the warehouse
-- resumes for each run (billed at least a minute per resume, so ~5 minute schedules cost more
-- than Snowpipe for a trickle); each run lists the table's whole folder, which grows with time
-- (expire or archive old dt= folders with an S3 lifecycle rule once they are loaded; the bulk
-- load history remembers a file for 64 days).
--
-- The COPY matches columns by name (PARSE_HEADER + MATCH_BY_COLUMN_NAME), so an added or
-- dropped source column does not break it, and the table grows the new column (005).
--
-- Run as ACCOUNTADMIN for the grant, then as LOADER, which owns the task.

use role accountadmin;
-- Resuming a task needs the account-level EXECUTE TASK privilege.
grant execute task on account to role loader;

use role loader;

create task if not exists pgcdc.raw.load_ecommerce_sales_changes
    warehouse = loading
    schedule = '5 minute'
    comment = 'pgcdc: loads new public.ecommerce_sales change files into RAW.ECOMMERCE_SALES_CHANGES'
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

-- A task is created suspended.
alter task pgcdc.raw.load_ecommerce_sales_changes resume;

-- Run it now instead of waiting for the schedule:
--   execute task pgcdc.raw.load_ecommerce_sales_changes;

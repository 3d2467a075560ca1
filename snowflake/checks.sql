-- pgcdc on Snowflake: is everything pgcdc wrote in RAW? Run any time, as LOADER or TRANSFORMER
-- (dbt's test assert_no_stage_file_missing_from_raw asks the same of the directory table).
-- Every row these queries return is a problem; none is the answer you want.

-- 1. Data files in the stage that RAW has no row of, older than an hour (a late Snowpipe
--    event is minutes). The directory table lists the stage (004: DIRECTORY, AUTO_REFRESH);
--    RAW's _file_name is the same stage-relative path (METADATA$FILENAME).
select stage_files.relative_path, stage_files.last_modified
from directory(@pgcdc.raw.pgcdc_stage) as stage_files
left join (select distinct _file_name from pgcdc.raw.ecommerce_sales_changes) as loaded
    on loaded._file_name = stage_files.relative_path
where stage_files.relative_path like 'public.ecommerce_sales/dt=%'
    and stage_files.relative_path like '%.csv%'
    and loaded._file_name is null
    and stage_files.last_modified < dateadd(hour, -1, current_timestamp())
order by stage_files.relative_path;

-- 2. Files a load read with errors (ON_ERROR = CONTINUE loaded their other lines) in the last
--    14 days, with the first error: a damaged file, never a value (RAW is all text).
select file_name, status, row_count, row_parsed, error_count, first_error_message, last_load_time
from table(pgcdc.information_schema.copy_history(
    table_name => 'PGCDC.RAW.ECOMMERCE_SALES_CHANGES',
    start_time => dateadd(day, -14, current_timestamp())))
where error_count > 0 or status <> 'Loaded'
order by last_load_time desc;

-- 3. Files whose rows in RAW have gaps in their row numbers (the skipped lines of 2, for as long
--    as RAW keeps them, beyond COPY_HISTORY's 14 days).
select _file_name, count(distinct _file_row_number) as rows_loaded, max(_file_row_number) as last_row
from pgcdc.raw.ecommerce_sales_changes
group by _file_name
having count(distinct _file_row_number) <> max(_file_row_number);

-- A data file pgcdc made durable (at or before its checkpoint) that RAW still lacks after
-- var pgcdc_missing_file_grace_minutes (60) has been lost by the loader: a Snowpipe that never
-- got its event, a load that failed, a file loaded under another name. Until it is loaded the
-- completeness LSN stays before it, so the current state stops advancing: this test says why.
with

checkpoint as (

    {{ pgcdc_checkpoint_lsn() }}

)

select
    files.path,
    files.last_modified,
    files.first_lsn,
    files.last_lsn
from {{ ref('int_pgcdc__files') }} as files
cross join checkpoint
where
    not files.is_loaded
    and files.first_lsn <= checkpoint.checkpoint_lsn
    and files.last_modified < {{ dbt.dateadd('minute', -1 * var('pgcdc_missing_file_grace_minutes', 60), dbt.current_timestamp()) }}

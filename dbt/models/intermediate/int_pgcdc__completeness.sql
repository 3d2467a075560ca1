-- One row per table: the completeness LSN, up to which every change is known to be in RAW.
-- pgcdc's checkpoint says everything at or before its commit_lsn is durable in the stage; a file
-- of the stage at or before it that RAW does not hold yet (late, or one part of a part set)
-- holds the LSN back to just before that file's first commit. The state models apply changes up
-- to this LSN only, so a late or half-loaded file delays the current state, never corrupts it.

with

checkpoint as (

    {{ pgcdc_checkpoint_lsn() }}

),

tables as (

    {%- for table in pgcdc_tables().values() %}
    select '{{ table["table"] }}' as table_name, '{{ table["folder"] }}' as table_folder
    {{ 'union all' if not loop.last }}
    {%- endfor %}

),

files as (

    select * from {{ ref('int_pgcdc__files') }}

),

missing as (

    select
        files.table_folder,
        min(files.first_lsn) as first_missing_lsn,
        count(*) as missing_files
    from files
    cross join checkpoint
    where not files.is_loaded and files.first_lsn <= checkpoint.checkpoint_lsn
    group by files.table_folder

),

final as (

    select
        tables.table_name,
        checkpoint.checkpoint_lsn,
        missing.first_missing_lsn,
        coalesce(missing.missing_files, 0) as missing_files,
        case
            when missing.first_missing_lsn is null then checkpoint.checkpoint_lsn
            when missing.first_missing_lsn - 1 < checkpoint.checkpoint_lsn then missing.first_missing_lsn - 1
            else checkpoint.checkpoint_lsn
        end as completeness_lsn
    from tables
    cross join checkpoint
    left join missing
        on tables.table_folder = missing.table_folder

)

select * from final

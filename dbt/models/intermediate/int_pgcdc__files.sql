-- One row per data file pgcdc wrote into the stage: its table, LSN range, part, when it landed,
-- and whether RAW holds it. The completeness LSN and the missing-file test read this.
{%- set pattern = pgcdc_data_file_regex() %}

with

stage_files as (

    {{ pgcdc_stage_listing() }}

),

loaded_files as (

    select distinct path from (
        {{ pgcdc_loaded_listing() }}
    ) as loaded

),

parsed as (

    select
        stage_files.path,
        stage_files.last_modified,
        {{ pgcdc_regex_group('stage_files.path', pattern, 1) }} as table_folder,
        {{ pgcdc_hex_to_lsn(pgcdc_regex_group('stage_files.path', pattern, 2)) }} as first_lsn,
        {{ pgcdc_hex_to_lsn(pgcdc_regex_group('stage_files.path', pattern, 3)) }} as last_lsn,
        loaded_files.path is not null as is_loaded
    from stage_files
    left join loaded_files
        on stage_files.path = loaded_files.path
    where {{ pgcdc_regex_matches('stage_files.path', pattern) }}

)

select * from parsed

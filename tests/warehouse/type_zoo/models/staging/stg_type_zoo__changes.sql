-- Every change of public.type_zoo once: pgcdc's metadata parsed, the values still the text pgcdc
-- wrote. A file read twice (a replayed upload) repeats changes; (commit_lsn, seq) names a change.
with

source as (

    select * from {{ source('pgcdc', 'type_zoo_changes') }}

),

parsed as (

    select
        _op as op,
        {{ pgcdc_lsn_to_hugeint('_commit_lsn') }} as commit_lsn,
        cast(_seq as bigint) as seq,
        cast(_xid as bigint) as xid,
        cast(_commit_ts as timestamptz) as committed_at,
        -- Columns whose unchanged TOAST value PostgreSQL did not send (their field is empty).
        coalesce(cast(json(nullif(_unchanged, '')) as varchar[]), []) as unchanged_columns,
        cast(id as integer) as id,
        {%- for column in type_zoo_columns() %}
        {{ column.name }},
        {%- endfor %}
        _file_name as file_name

    from source

)

select * from parsed
qualify row_number() over (partition by commit_lsn, seq order by file_name) = 1

-- The current state of public.type_zoo with DuckDB types: README.md's "Type mapping" table, applied
-- by pg_to_duckdb() (macros/pg_to_duckdb.sql). cast_failures names the columns whose value DuckDB
-- cannot hold (a non-NULL text that became NULL): empty but for timestamps past DuckDB's range.
with

current_text as (

    select * from {{ ref('stg_type_zoo__current_text') }}

),

typed as (

    select
        id,
        {%- for column in type_zoo_columns() %}
        {{ pg_to_duckdb(column, 'current_text.' ~ column.name) }} as {{ column.name }},
        {%- endfor %}
        commit_lsn,
        seq,
        committed_at,
        current_text as text_values

    from current_text

)

select
    * exclude (text_values),
    list_filter([
        {%- for column in type_zoo_columns() %}
        case when text_values.{{ column.name }} is not null and {{ column.name }} is null then '{{ column.name }}' end{{ ',' if not loop.last }}
        {%- endfor %}
    ], lambda name: name is not null) as cast_failures

from typed

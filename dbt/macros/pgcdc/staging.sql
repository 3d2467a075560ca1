{#-
    stg_pgcdc__<table>: every change of a pgcdc table once (a file loaded twice repeats its
    changes; (commit_lsn, seq) names a change), metadata typed, values cast by the type mapping
    (pgcdc_cast: safe casts), one *_is_unchanged flag per non-key column. A view: always in step
    with RAW, and cheap until queried. The state models do not read it (they read only the new
    part of RAW); it is the typed change history for people and tests.
-#}
{% macro pgcdc_staging(table_name) -%}
{%- set table = pgcdc_table(table_name) -%}
with

source as (

    select * from {{ source('pgcdc', table['source']) }}

),

renamed as (

    select
        ----------  change metadata
        cast(_op as {{ dbt.type_string() }}) as op,
        {{ pgcdc_cast_lsn('_commit_lsn') }} as commit_lsn,
        cast(_seq as {{ dbt.type_bigint() }}) as seq,
        cast(_xid as {{ dbt.type_bigint() }}) as xid,
        {{ pgcdc_parse_utc_timestamp('_commit_ts') }} as committed_at,

        ----------  the table's columns, by the type mapping
        {%- for column in table['columns'] %}
        {{ pgcdc_cast(pgcdc_column_text(column), column['type']) }} as {{ column['name'] }},
        {%- endfor %}

        ----------  unchanged TOAST values: true = not sent, keep the previous value
        {%- for column in table['columns'] if not column['key'] %}
        {{ pgcdc_is_unchanged('_unchanged', column['name']) }} as {{ column['name'] }}_is_unchanged,
        {%- endfor %}

        ----------  load metadata
        {{ pgcdc_load_metadata() }}

    from source

),

deduplicated as (

    select * from renamed
    qualify row_number() over (
        partition by commit_lsn, seq
        order by loaded_at asc nulls last, file_name asc nulls last, file_row_number asc nulls last
    ) = 1

)

select * from deduplicated
{%- endmacro %}


{#- int_<table>__current: the live rows of the state, as the source table has them now. -#}
{% macro pgcdc_current(table_name) -%}
{%- set table = pgcdc_table(table_name) -%}
{{ config(materialized='view') }}
select * from {{ ref('int_' ~ table['id'] ~ '__state') }}
where not is_deleted
{%- endmacro %}


{#- (commit_lsn, seq) as one exact number that orders like the pair (seq < 10^12). -#}
{% macro pgcdc_position(lsn, seq) -%}
    ({{ lsn }} * 1000000000000 + {{ seq }})
{%- endmacro %}


{#- The value of `value` at the greatest `position` among rows where it is not null. -#}
{% macro pgcdc_last_sent(value, position) -%}
    {{ return(adapter.dispatch('pgcdc_last_sent', 'pgcdc')(value, position)) }}
{%- endmacro %}
{% macro default__pgcdc_last_sent(value, position) -%}
    arg_max({{ value }}, {{ position }}) filter (where {{ value }} is not null)
{%- endmacro %}
{% macro snowflake__pgcdc_last_sent(value, position) -%}
    max_by({{ value }}, iff({{ value }} is null, null, {{ position }}))
{%- endmacro %}

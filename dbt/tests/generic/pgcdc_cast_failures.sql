{#-
    Counts the values the type mapping could not hold: text present in RAW, NULL after the cast
    (numeric NaN into a decimal, a BC date or infinity on Snowflake, a year past DuckDB's range,
    ...). One row per column with failures: column, failures, an example. Such a value never
    stops a load or a build; this test makes it visible (severity: var pgcdc_cast_failure_severity,
    default warn). Reads the table's whole RAW history.
-#}
{% test pgcdc_cast_failures(model, table_name) %}
{%- set table = pgcdc_table(table_name) -%}
{%- set checked = [] -%}
{%- for column in table['columns'] if pgcdc_type_family(column['type']) != 'text' -%}
    {%- do checked.append(column) -%}
{%- endfor %}
with

source as (

    select * from {{ source('pgcdc', table['source']) }}
    where _op in ('I', 'U', 'R', 'D')

),

failures as (

    {%- for column in checked %}
    select
        '{{ column["name"] }}' as column_name,
        count(*) as failures,
        min(cast({{ pgcdc_column_text(column) }} as {{ dbt.type_string() }})) as example
    from source
    where {{ pgcdc_column_text(column) }} is not null
        and {{ pgcdc_cast(pgcdc_column_text(column), column['type']) }} is null
    {{ 'union all' if not loop.last }}
    {%- else %}
    select cast(null as {{ dbt.type_string() }}) as column_name, 0 as failures,
        cast(null as {{ dbt.type_string() }}) as example
    {%- endfor %}

)

select * from failures where failures > 0
{% endtest %}

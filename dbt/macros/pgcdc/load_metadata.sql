{#-
    Where a change row was loaded from. Snowflake's RAW table records the staged file, the row in
    it and the load time (_file_name, _file_row_number, _loaded_at, filled by COPY INTO /
    Snowpipe). DuckDB reads the files in place: it knows the file name only.
    Renders the three columns file_name, file_row_number, loaded_at of the staging model.
-#}
{% macro pgcdc_load_metadata() -%}
    {{ return(adapter.dispatch('pgcdc_load_metadata', 'pgcdc')()) }}
{%- endmacro %}

{% macro default__pgcdc_load_metadata() -%}
        cast(_file_name as {{ dbt.type_string() }}) as file_name,
        cast(_file_row_number as {{ dbt.type_bigint() }}) as file_row_number,
        cast(_loaded_at as {{ dbt.type_timestamp() }}) as loaded_at
{%- endmacro %}

{% macro snowflake__pgcdc_load_metadata() -%}
        cast(_file_name as varchar) as file_name,
        cast(_file_row_number as bigint) as file_row_number,
        convert_timezone('UTC', cast(_loaded_at as timestamp_tz))::timestamp_ntz as loaded_at
{%- endmacro %}

{% macro duckdb__pgcdc_load_metadata() -%}
        cast(_file_name as varchar) as file_name,
        cast(null as bigint) as file_row_number,
        cast(null as timestamp) as loaded_at
{%- endmacro %}

{#-
    pgcdc's `_commit_ts` is ISO-8601 UTC with a `Z` (2024-03-05T17:05:00.123456Z). Return a
    timestamp without time zone holding the UTC wall-clock time, whatever the session time zone.
-#}
{% macro pgcdc_parse_utc_timestamp(expression) -%}
    {{ return(adapter.dispatch('pgcdc_parse_utc_timestamp', 'pgcdc')(expression)) }}
{%- endmacro %}

{% macro default__pgcdc_parse_utc_timestamp(expression) -%}
    cast(cast({{ expression }} as timestamp with time zone) at time zone 'UTC' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro duckdb__pgcdc_parse_utc_timestamp(expression) -%}
    cast(timezone('UTC', cast({{ expression }} as timestamptz)) as timestamp)
{%- endmacro %}

{% macro snowflake__pgcdc_parse_utc_timestamp(expression) -%}
    {#- RAW types _commit_ts as TIMESTAMP_TZ; the cast also reads the text form with its Z. -#}
    convert_timezone('UTC', cast({{ expression }} as timestamp_tz))::timestamp_ntz
{%- endmacro %}

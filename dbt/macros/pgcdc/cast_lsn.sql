{#-
    pgcdc writes commit LSNs as decimal integers up to 2^64 - 1: more than a signed bigint holds,
    and ordering them as text is wrong ('9' > '10'). Cast to an exact integer type that holds them.
-#}
{% macro pgcdc_cast_lsn(expression) -%}
    {{ return(adapter.dispatch('pgcdc_cast_lsn', 'pgcdc')(expression)) }}
{%- endmacro %}

{% macro default__pgcdc_cast_lsn(expression) -%}
    cast({{ expression }} as numeric(20, 0))
{%- endmacro %}

{% macro duckdb__pgcdc_cast_lsn(expression) -%}
    cast({{ expression }} as hugeint)
{%- endmacro %}

{% macro snowflake__pgcdc_cast_lsn(expression) -%}
    cast({{ expression }} as number(20, 0))
{%- endmacro %}

{#-
    pgcdc's `_unchanged` is empty or a JSON array of the columns whose unchanged TOAST value
    PostgreSQL did not send, e.g. ["description"]. True when `column_name` is in it, else false
    (never null).
-#}
{% macro pgcdc_is_unchanged(json_array, column_name) -%}
    {{ return(adapter.dispatch('pgcdc_is_unchanged', 'pgcdc')(json_array, column_name)) }}
{%- endmacro %}

{% macro default__pgcdc_is_unchanged(json_array, column_name) -%}
    coalesce({{ json_array }} like '%"{{ column_name }}"%', false)
{%- endmacro %}

{% macro duckdb__pgcdc_is_unchanged(json_array, column_name) -%}
    coalesce(list_contains(cast(json(nullif({{ json_array }}, '')) as varchar[]), '{{ column_name }}'), false)
{%- endmacro %}

{% macro snowflake__pgcdc_is_unchanged(json_array, column_name) -%}
    {#- ::varchar first, so a RAW column loaded as text or as a variant both parse. -#}
    coalesce(array_contains('{{ column_name }}'::variant, try_parse_json(nullif({{ json_array }}::varchar, ''))), false)
{%- endmacro %}

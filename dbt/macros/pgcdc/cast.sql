{#-
    The PostgreSQL -> warehouse type mapping (README.md, "Type mapping"), as safe casts: `text` is
    pgcdc's text of a value (PostgreSQL's output under pgcdc's session settings), `pg_type` the
    column's type as the schema file spells it (format_type: `numeric(12,2)`, `timestamp with time
    zone`, `integer[]`, `public.mood`). A value the warehouse type cannot hold (numeric NaN, an
    infinite or BC date on Snowflake, a year past DuckDB's range, ...) becomes NULL, never an
    error: the load and the build go on, and pgcdc_cast_failures counts every such value (text
    present, cast NULL). Types without a faithful warehouse type stay text (VARCHAR): exact.
-#}
{% macro pgcdc_cast(text, pg_type) -%}
    {{ return(adapter.dispatch('pgcdc_cast', 'pgcdc')(text, pg_type)) }}
{%- endmacro %}

{#- The mapping's family of a PostgreSQL type: what both dialects decide on. -#}
{% macro pgcdc_type_family(pg_type) -%}
    {%- set t = pg_type | lower -%}
    {%- set base = t.split('(')[0] | trim -%}
    {%- if t.endswith('[]') -%} {%- set family = 'text' -%}
    {%- elif base in ('smallint', 'integer', 'bigint') -%} {%- set family = base -%}
    {%- elif base == 'numeric' -%}
        {#- numeric(p,s) with p <= 38 fits an exact decimal; unconstrained numeric (any length,
            NaN, Infinity) stays text. -#}
        {%- set args = t[8:-1].split(',') if '(' in t else [] -%}
        {%- if args | length == 2 and args[0] | int <= 38 -%} {%- set family = 'decimal(' ~ args[0] | int ~ ',' ~ args[1] | int ~ ')' -%}
        {%- elif args | length == 1 and args[0] | int <= 38 -%} {%- set family = 'decimal(' ~ args[0] | int ~ ',0)' -%}
        {%- else -%} {%- set family = 'text' -%}
        {%- endif -%}
    {%- elif base == 'money' -%} {%- set family = 'decimal(19,2)' -%}
    {%- elif base in ('real', 'double precision') -%} {%- set family = 'float' if base == 'real' else 'double' -%}
    {%- elif base == 'boolean' -%} {%- set family = 'boolean' -%}
    {%- elif base == 'date' -%} {%- set family = 'date' -%}
    {%- elif base.startswith('timestamp') and 'with time zone' in t and 'without' not in t -%} {%- set family = 'timestamptz' -%}
    {%- elif base.startswith('timestamp') -%} {%- set family = 'timestamp' -%}
    {%- elif base.startswith('time') and 'with time zone' in t and 'without' not in t -%} {%- set family = 'timetz' -%}
    {%- elif base.startswith('time') -%} {%- set family = 'time' -%}
    {%- elif base == 'interval' -%} {%- set family = 'interval' -%}
    {%- elif base == 'bytea' -%} {%- set family = 'bytea' -%}
    {%- elif base in ('json', 'jsonb') -%} {%- set family = 'json' -%}
    {%- elif base == 'uuid' -%} {%- set family = 'uuid' -%}
    {%- else -%} {%- set family = 'text' -%}
    {%- endif -%}
    {{ return(family) }}
{%- endmacro %}

{% macro default__pgcdc_cast(text, pg_type) -%}
    {{ return(duckdb__pgcdc_cast(text, pg_type)) }}
{%- endmacro %}

{% macro duckdb__pgcdc_cast(text, pg_type) -%}
    {%- set family = pgcdc_type_family(pg_type) -%}
    {%- if family == 'text' -%} cast({{ text }} as varchar)
    {%- elif family in ('smallint', 'integer', 'bigint', 'float', 'double', 'boolean', 'time', 'uuid', 'json') or family.startswith('decimal') -%}
        {#- DuckDB reads PostgreSQL's forms of these as they are (NaN/Infinity/-0 for floats, t/f). -#}
        try_cast({{ text }} as {{ 'time with time zone' if family == 'timetz' else family }})
    {%- elif family == 'timetz' -%} try_cast({{ text }} as time with time zone)
    {%- elif family == 'bytea' -%}
        case when starts_with({{ text }}, '\x') then try(from_hex(substr({{ text }}, 3))) end
    {%- elif family == 'date' -%}
        {#- 0044-03-15 BC is 0044-03-15 (BC) to DuckDB; infinity and -infinity are DuckDB's too. -#}
        try_cast(replace({{ text }}, ' BC', ' (BC)') as date)
    {%- elif family == 'timestamp' -%}
        {#- DuckDB's cast ignores a BC suffix: read the date and the time apart. -#}
        case when ends_with({{ text }}, ' BC')
             then try_cast(split_part({{ text }}, ' ', 1) || ' (BC)' as date) + try_cast(split_part({{ text }}, ' ', 2) as time)
             else try_cast({{ text }} as timestamp) end
    {%- elif family == 'timestamptz' -%}
        {#- pgcdc's session is UTC: a BC value ends in +00 BC. -#}
        case when ends_with({{ text }}, ' BC')
             then timezone('UTC', try_cast(split_part({{ text }}, ' ', 1) || ' (BC)' as date)
                                  + try_cast(regexp_extract(split_part({{ text }}, ' ', 2), '^[0-9:.]+') as time))
             else try_cast({{ text }} as timestamptz) end
    {%- elif family == 'interval' -%}
        try_cast(regexp_replace({{ text }}, '\+([0-9])', '\1', 'g') as interval)
    {%- else -%}
        {{ exceptions.raise_compiler_error('pgcdc_cast: no DuckDB cast for family ' ~ family) }}
    {%- endif -%}
{%- endmacro %}

{% macro snowflake__pgcdc_cast(text, pg_type) -%}
    {#- ::varchar first: a RAW column that schema evolution added with an inferred type reads too. -#}
    {%- set family = pgcdc_type_family(pg_type) -%}
    {%- set v = '(' ~ text ~ ')::varchar' -%}
    {%- if family in ('text', 'uuid', 'timetz', 'interval') -%} {{ v }}
    {%- elif family == 'smallint' -%} try_to_number({{ v }}, 5, 0)
    {%- elif family == 'integer' -%} try_to_number({{ v }}, 10, 0)
    {%- elif family == 'bigint' -%} try_to_number({{ v }}, 19, 0)
    {%- elif family.startswith('decimal') -%}
        {%- set ps = family[8:-1].split(',') -%}
        try_to_number({{ v }}, {{ ps[0] }}, {{ ps[1] }})
    {%- elif family in ('float', 'double') -%}
        {#- Snowflake spells the infinities inf/-inf. -#}
        try_to_double(case {{ v }} when 'Infinity' then 'inf' when '-Infinity' then '-inf' else {{ v }} end)
    {%- elif family == 'boolean' -%} try_to_boolean({{ v }})
    {%- elif family == 'bytea' -%} try_to_binary(substr({{ v }}, 3), 'HEX')
    {%- elif family == 'date' -%} try_to_date({{ v }})
    {%- elif family == 'time' -%} try_to_time({{ v }})
    {%- elif family == 'timestamp' -%} try_to_timestamp_ntz({{ v }})
    {%- elif family == 'timestamptz' -%} try_to_timestamp_tz({{ v }})
    {%- elif family == 'json' -%} try_parse_json({{ v }})
    {%- else -%}
        {{ exceptions.raise_compiler_error('pgcdc_cast: no Snowflake cast for family ' ~ family) }}
    {%- endif -%}
{%- endmacro %}

{#- The table's description written by scripts/dbt-generate.py (macros/generated/). -#}
{% macro pgcdc_table(table_name) -%}
    {%- set tables = pgcdc_tables() -%}
    {%- if table_name not in tables -%}
        {{ exceptions.raise_compiler_error('pgcdc: ' ~ table_name ~ ' is not in macros/generated/pgcdc_tables.sql; run scripts/dbt-generate.py') }}
    {%- endif -%}
    {{ return(tables[table_name]) }}
{%- endmacro %}

{#- The text of a column in RAW: after a rename, old files fill the old name. -#}
{% macro pgcdc_column_text(column) -%}
    {%- if column['aliases'] -%}
        coalesce({{ column['name'] }}, {{ column['aliases'] | join(', ') }})
    {%- else -%}
        {{ column['name'] }}
    {%- endif -%}
{%- endmacro %}

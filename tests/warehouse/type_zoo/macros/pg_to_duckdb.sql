{#-
    From the text pgcdc writes (PostgreSQL's output under pgcdc's session settings, with
    timestamps in ISO 8601 form and money as a plain decimal) to a DuckDB value. Every conversion
    either gives the exact value or fails the build, except one, named: a timestamp past the end
    of DuckDB's range (PostgreSQL goes to 294276 AD, DuckDB to 294247-01-10) becomes NULL, and the
    row lists the column in cast_failures.
-#}
{% macro pg_to_duckdb(column, text) -%}
    {%- set kind = column['cast'] -%}
    {%- if kind == 'varchar' -%}
        {{ text }}
    {%- elif kind == 'plain' -%}
        {#- DuckDB reads these forms as PostgreSQL prints them: integers, decimals, NaN/Infinity/-0
            for floats, t/f, times, timetz with its offset (seconds included), uuid, json text
            (kept byte for byte), money once pgcdc dropped $ and the separators. -#}
        cast({{ text }} as {{ column['duckdb'] }})
    {%- elif kind == 'bytea' -%}
        {#- bytea_output = hex: \x followed by two hex digits per byte. -#}
        case when {{ text }} is null then null
             when starts_with({{ text }}, '\x') then from_hex(substr({{ text }}, 3))
             else error('bytea not in hex form: ' || left({{ text }}, 40)) end
    {%- elif kind == 'date' -%}
        {#- PostgreSQL: 0044-03-15 BC; DuckDB reads 0044-03-15 (BC). infinity and -infinity as they are. -#}
        cast(case when ends_with({{ text }}, ' BC') then replace({{ text }}, ' BC', ' (BC)') else {{ text }} end as date)
    {%- elif kind == 'timestamp' -%}
        {{ pg_timestamp_to_duckdb(text) }}
    {%- elif kind == 'timestamptz' -%}
        {{ pg_timestamptz_to_duckdb(text) }}
    {%- elif kind == 'interval' -%}
        {#- IntervalStyle postgres: "-1 years -2 mons +3 days -04:05:06". DuckDB reads it all but
            the explicit + that PostgreSQL puts on a field whose sign differs from the one before. -#}
        cast(regexp_replace({{ text }}, '\+([0-9])', '\1', 'g') as interval)
    {%- elif kind == 'int_array' -%}
        {#- {1,NULL,-3} -> [1,NULL,-3]. One dimension, lower bound 1: anything else fails. -#}
        case when {{ text }} is null then null
             when {{ text }} similar to '\{[^{}]*\}' then cast('[' || substr({{ text }}, 2, length({{ text }}) - 2) || ']' as integer[])
             else error('not a one-dimensional array: ' || left({{ text }}, 40)) end
    {%- elif kind == 'text_array' -%}
        {{ pg_text_array_to_duckdb(text) }}
    {%- else -%}
        {{ exceptions.raise_compiler_error('pg_to_duckdb: unknown cast ' ~ kind) }}
    {%- endif -%}
{%- endmacro %}


{#- timestamp without time zone. AD: 2024-02-29T12:34:56.789012 (pgcdc's T). BC keeps PostgreSQL's
    form, 0001-12-31 23:59:59.999999 BC: DuckDB reads that as AD (it drops the suffix), so the date
    and the time are read apart. -#}
{% macro pg_timestamp_to_duckdb(text) -%}
    case when {{ text }} is null then null
         when ends_with({{ text }}, ' BC') then
             cast(split_part({{ text }}, ' ', 1) || ' (BC)' as date) + cast(split_part({{ text }}, ' ', 2) as time)
         else try_cast({{ text }} as timestamp) end
{%- endmacro %}


{#- timestamp with time zone. AD: 2024-02-29T12:34:56.789012+00:00. BC: 0044-03-15 10:00:00+00 BC:
    date and wall-clock time read apart, then moved by the offset (always +00: pgcdc's session runs
    in UTC). -#}
{% macro pg_timestamptz_to_duckdb(text) -%}
    case when {{ text }} is null then null
         when ends_with({{ text }}, ' BC') then
             timezone('UTC',
                 cast(split_part({{ text }}, ' ', 1) || ' (BC)' as date)
                 + cast(regexp_extract(split_part({{ text }}, ' ', 2), '^[0-9:.]+') as time))
             - to_seconds(extract(timezone from cast('00:00:00' || regexp_replace(split_part({{ text }}, ' ', 2), '^[0-9:.]+', '') as timetz)))
         else try_cast({{ text }} as timestamptz) end
{%- endmacro %}


{#- text[]: {a,"b,c","d\"e",NULL,"NULL",""} -> ['a', 'b,c', 'd"e', NULL, 'NULL', '']. An element is
    quoted ("...", with \" and \\ inside) or bare; a bare NULL is SQL NULL. One dimension only. -#}
{% macro pg_text_array_to_duckdb(text) -%}
    case when {{ text }} is null then null
         when not starts_with({{ text }}, '{') or starts_with({{ text }}, '{{ '{{' }}') then
             error('not a one-dimensional array: ' || left({{ text }}, 40))
         else list_transform(
             regexp_extract_all({{ text }}, '"(?:[^"\\]|\\.)*"|[^,{}"]+'),
             lambda element: case
                 when starts_with(element, '"') then regexp_replace(element[2:-2], '\\(.)', '\1', 'gs')
                 when element = 'NULL' then null
                 else element end)
         end
{%- endmacro %}


{#- pgcdc writes _commit_lsn as a decimal integer; an X/Y form (PostgreSQL's) is read too. -#}
{% macro pgcdc_lsn_to_hugeint(text) -%}
    case when contains({{ text }}, '/')
         then (cast('0x' || split_part({{ text }}, '/', 1) as hugeint) << 32) + cast('0x' || split_part({{ text }}, '/', 2) as hugeint)
         else cast({{ text }} as hugeint) end
{%- endmacro %}

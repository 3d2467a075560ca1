{#-
    What is in the stage and what is in RAW, for the completeness LSN (models/intermediate/
    int_pgcdc__files.sql, int_pgcdc__completeness.sql) and the missing-file test.

    Snowflake: the stage's directory table (snowflake/004_stage.sql enables it) lists the files
    pgcdc wrote; RAW's _file_name says which were loaded; the checkpoint is read from the stage.
    DuckDB: the stage is a folder (var pgcdc_stage) and RAW is the folder the source reads
    (var pgcdc_raw, by default the stage itself: then every file on disk counts as loaded).
-#}

{% macro pgcdc_stage_dir() -%}
    {{ return(var('pgcdc_stage', env_var('PGCDC_STAGE', '/tmp/pgcdc-fixture/stage'))) }}
{%- endmacro %}

{% macro pgcdc_raw_dir() -%}
    {{ return(var('pgcdc_raw', env_var('PGCDC_RAW', pgcdc_stage_dir()))) }}
{%- endmacro %}

{#- A data file's path relative to the stage: <schema>.<table>/dt=.../hour=.../<first>-<last>[.part-i-of-n].csv[.gz] -#}
{% macro pgcdc_data_file_regex() -%}
    {{ return("([^/]+)/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/hour=[0-9]{2}/([0-9A-F]{16})-([0-9A-F]{16})([.]part-[0-9]{4,}-of-[0-9]{4,})?[.]csv([.]gz)?$") }}
{%- endmacro %}

{#- 16 upper-case hex digits (a file name's LSN) -> an exact integer. -#}
{% macro pgcdc_hex_to_lsn(expression) -%}
    {{ return(adapter.dispatch('pgcdc_hex_to_lsn', 'pgcdc')(expression)) }}
{%- endmacro %}
{% macro default__pgcdc_hex_to_lsn(expression) -%}
    cast(('0x' || {{ expression }}) as hugeint)
{%- endmacro %}
{% macro snowflake__pgcdc_hex_to_lsn(expression) -%}
    to_number({{ expression }}, 'XXXXXXXXXXXXXXXX')
{%- endmacro %}

{#- PostgreSQL's X/Y form of an LSN (the checkpoint's) -> an exact integer. -#}
{% macro pgcdc_xy_to_lsn(expression) -%}
    {{ return(adapter.dispatch('pgcdc_xy_to_lsn', 'pgcdc')(expression)) }}
{%- endmacro %}
{% macro default__pgcdc_xy_to_lsn(expression) -%}
    ((cast(('0x' || split_part({{ expression }}, '/', 1)) as hugeint) << 32)
     + cast(('0x' || split_part({{ expression }}, '/', 2)) as hugeint))
{%- endmacro %}
{% macro snowflake__pgcdc_xy_to_lsn(expression) -%}
    (to_number(split_part({{ expression }}, '/', 1), 'XXXXXXXX') * 4294967296
     + to_number(split_part({{ expression }}, '/', 2), 'XXXXXXXX'))
{%- endmacro %}

{#- (path relative to the stage, last_modified) of every file in the stage. -#}
{% macro pgcdc_stage_listing() -%}
    {{ return(adapter.dispatch('pgcdc_stage_listing', 'pgcdc')()) }}
{%- endmacro %}
{% macro default__pgcdc_stage_listing() -%}
    {%- set root = pgcdc_stage_dir() -%}
    select substr(filename, {{ root | length + 2 }}) as path, cast(last_modified as timestamp) as last_modified
    from read_blob('{{ root }}/*/dt=*/hour=*/*.csv*')
{%- endmacro %}
{% macro snowflake__pgcdc_stage_listing() -%}
    select relative_path as path, convert_timezone('UTC', last_modified)::timestamp_ntz as last_modified
    from directory(@{{ var('pgcdc_snowflake_stage', 'pgcdc.raw.pgcdc_stage') }})
{%- endmacro %}

{#- Paths (relative to the stage) of the files RAW holds rows of. -#}
{% macro pgcdc_loaded_listing() -%}
    {{ return(adapter.dispatch('pgcdc_loaded_listing', 'pgcdc')()) }}
{%- endmacro %}
{% macro default__pgcdc_loaded_listing() -%}
    {%- set root = pgcdc_raw_dir() -%}
    select substr(file, {{ root | length + 2 }}) as path from glob('{{ root }}/*/dt=*/hour=*/*.csv*')
{%- endmacro %}
{% macro snowflake__pgcdc_loaded_listing() -%}
    {#- ON_ERROR = CONTINUE skips a malformed line: a file with a gap in its row numbers is not
        (completely) loaded. A file loaded twice repeats its row numbers: distinct. -#}
    {%- for table in pgcdc_tables().values() %}
    select _file_name as path from {{ source('pgcdc', table['source']) }}
    group by _file_name
    having count(distinct _file_row_number) = max(_file_row_number)
    {{ 'union all' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- pgcdc's checkpoint: everything at or before its commit_lsn is durable in the stage. -#}
{% macro pgcdc_checkpoint_lsn() -%}
    {{ return(adapter.dispatch('pgcdc_checkpoint_lsn', 'pgcdc')()) }}
{%- endmacro %}
{% macro default__pgcdc_checkpoint_lsn() -%}
    {%- if var('pgcdc_checkpoint', 'required') == 'none' %}
    -- var pgcdc_checkpoint = none: a copy of table folders without pgcdc's bookkeeping (a
    -- test's export); every file present counts as complete.
    select max({{ pgcdc_hex_to_lsn(pgcdc_regex_group('path', pgcdc_data_file_regex(), 3)) }}) as checkpoint_lsn
    from ({{ pgcdc_stage_listing() }}) as listing
    {%- else %}
    select {{ pgcdc_xy_to_lsn('commit_lsn') }} as checkpoint_lsn
    from read_json('{{ pgcdc_stage_dir() }}/_pgcdc/{{ var("pgcdc_slot", "pgcdc") }}/checkpoint.json',
                   columns = {commit_lsn: 'varchar'})
    {%- endif %}
{%- endmacro %}
{% macro snowflake__pgcdc_checkpoint_lsn() -%}
    select {{ pgcdc_xy_to_lsn('$1:commit_lsn::varchar') }} as checkpoint_lsn
    from @{{ var('pgcdc_snowflake_stage', 'pgcdc.raw.pgcdc_stage') }}/_pgcdc/{{ var("pgcdc_slot", "pgcdc") }}/checkpoint.json
        (file_format => '{{ var("pgcdc_snowflake_json_format", "pgcdc.raw.pgcdc_json") }}')
{%- endmacro %}

{#- Rows of one batch: (lo_lsn, lo_seq) < (_commit_lsn, _seq) <= (hi_lsn, any). On DuckDB the
    file names prune the read to files whose LSN range meets the batch (the filter on
    _file_name is applied to the file list before any file is opened). -#}
{% macro pgcdc_batch_filter(lo_lsn, lo_seq, hi_lsn) -%}
    {{ return(adapter.dispatch('pgcdc_batch_filter', 'pgcdc')(lo_lsn, lo_seq, hi_lsn)) }}
{%- endmacro %}
{% macro default__pgcdc_batch_filter(lo_lsn, lo_seq, hi_lsn) -%}
    {%- set first = "regexp_extract(_file_name, '([0-9A-F]{16})-[0-9A-F]{16}[^/]*$', 1)" -%}
    {%- set last = "regexp_extract(_file_name, '[0-9A-F]{16}-([0-9A-F]{16})[^/]*$', 1)" -%}
    {{ pgcdc_hex_to_lsn(last) }} >= {{ lo_lsn }}
    and {{ pgcdc_hex_to_lsn(first) }} <= {{ hi_lsn }}
    and {{ pgcdc_row_in_batch(pgcdc_cast_lsn('_commit_lsn'), 'cast(_seq as bigint)', lo_lsn, lo_seq, hi_lsn) }}
{%- endmacro %}
{% macro snowflake__pgcdc_batch_filter(lo_lsn, lo_seq, hi_lsn) -%}
    {{ pgcdc_row_in_batch('_commit_lsn', '_seq', lo_lsn, lo_seq, hi_lsn) }}
{%- endmacro %}

{% macro pgcdc_row_in_batch(lsn, seq, lo_lsn, lo_seq, hi_lsn) -%}
    ({{ lsn }} > {{ lo_lsn }} or ({{ lsn }} = {{ lo_lsn }} and {{ seq }} > {{ lo_seq }})) and {{ lsn }} <= {{ hi_lsn }}
{%- endmacro %}

{#- The completeness LSN of a table, at run time (a number; 0 at parse time). -#}
{% macro pgcdc_completeness_lsn(table_name) -%}
    {%- if not execute -%} {{ return(0) }} {%- endif -%}
    {%- set result = run_query(
        "select completeness_lsn from " ~ ref('int_pgcdc__completeness') ~ " where table_name = '" ~ table_name ~ "'") -%}
    {%- if result.rows | length == 0 or result.rows[0][0] is none -%} {{ return(0) }} {%- endif -%}
    {{ return(result.rows[0][0] | int) }}
{%- endmacro %}

{#- Group `group` of the first match of `pattern` in `expression`; and whether it matches. -#}
{% macro pgcdc_regex_group(expression, pattern, group) -%}
    {{ return(adapter.dispatch('pgcdc_regex_group', 'pgcdc')(expression, pattern, group)) }}
{%- endmacro %}
{% macro default__pgcdc_regex_group(expression, pattern, group) -%}
    regexp_extract({{ expression }}, '{{ pattern }}', {{ group }})
{%- endmacro %}
{% macro snowflake__pgcdc_regex_group(expression, pattern, group) -%}
    regexp_substr({{ expression }}, '{{ pattern }}', 1, 1, 'e', {{ group }})
{%- endmacro %}

{% macro pgcdc_regex_matches(expression, pattern) -%}
    {{ return(adapter.dispatch('pgcdc_regex_matches', 'pgcdc')(expression, pattern)) }}
{%- endmacro %}
{% macro default__pgcdc_regex_matches(expression, pattern) -%}
    regexp_matches({{ expression }}, '{{ pattern }}')
{%- endmacro %}
{% macro snowflake__pgcdc_regex_matches(expression, pattern) -%}
    regexp_like({{ expression }}, '.*{{ pattern }}')
{%- endmacro %}

{#- The relation a batch reads: the table's source. On DuckDB only the files whose LSN range
    (from their names) meets the batch are given to read_csv: with union_by_name it would
    otherwise open every file of the table's history to learn its header, on every run.
    The options are the source's (models/staging/__sources.yml). -#}
{% macro pgcdc_batch_source(table, lo_lsn, hi_lsn) -%}
    {{ return(adapter.dispatch('pgcdc_batch_source', 'pgcdc')(table, lo_lsn, hi_lsn)) }}
{%- endmacro %}
{% macro default__pgcdc_batch_source(table, lo_lsn, hi_lsn) -%}
    {%- set relation = source('pgcdc', table['source']) -%}
    {%- if not execute -%} {{ return(relation) }} {%- endif -%}
    {%- set listing = run_query("select file from glob('" ~ pgcdc_raw_dir() ~ "/" ~ table['folder'] ~ "/*/*/*.csv*') order by file") -%}
    {%- set files = [] -%}
    {%- for row in listing.rows -%}
        {%- set match = modules.re.search('([0-9A-F]{16})-([0-9A-F]{16})[^/]*$', row[0]) -%}
        {%- if match and match.group(2) | int(base=16) >= lo_lsn and match.group(1) | int(base=16) <= hi_lsn -%}
            {%- do files.append(row[0]) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not files and listing.rows | length > 0 -%}
        {#- Nothing new: read one file (the batch filter keeps none of its rows). -#}
        {%- do files.append(listing.rows[-1][0]) -%}
    {%- endif -%}
    {%- if not files -%} {{ return(relation) }} {%- endif -%}
    {{ return("read_csv(['" ~ files | join("', '") ~ "'], header=true, delim=',', quote='\"', escape='\"', "
              ~ "all_varchar=true, allow_quoted_nulls=false, union_by_name=true, hive_partitioning=false, "
              ~ "filename='_file_name')") }}
{%- endmacro %}
{% macro snowflake__pgcdc_batch_source(table, lo_lsn, hi_lsn) -%}
    {{ return(source('pgcdc', table['source'])) }}
{%- endmacro %}

{#-
    int_<table>__markers and int_<table>__state: the current state of a pgcdc table, applied
    incrementally (merge on the table's key columns) from the changes after the last one applied
    up to the completeness LSN (int_pgcdc__completeness). A --full-refresh runs the same SQL over
    an empty target and the whole history, so both give the same table.

    The rules (README.md, "The file format"): changes apply in (commit_lsn, seq) order, compared
    as numbers; the latest change of a key wins; D removes the key; T removes every key whose
    latest change is before it; a copy begin marker B followed later by an end marker E does the
    same for every key whose latest change is before the B (a B still without its E changes
    nothing); an UPDATE that did not send an unchanged TOAST value keeps the value the row had,
    also through a key change (pgcdc writes D of the old key, then U of the new key, at
    consecutive seq in one commit).

    Removed keys stay as tombstones (is_deleted, values NULL): the latest change applied is then
    always the greatest (last_commit_lsn, last_seq) of the table, which is where the next run
    starts reading, without a separate watermark that could drift from the merged rows.
-#}

{% macro pgcdc_markers(table_name) -%}
{%- set table = pgcdc_table(table_name) -%}
{{ config(materialized='incremental', unique_key='marker_id', incremental_strategy='merge') }}
{%- set hi = pgcdc_completeness_lsn(table_name) -%}
{%- set lo = -1 -%}
{%- if is_incremental() and execute -%}
    {%- set result = run_query("select max(commit_lsn) from " ~ this ~ " where op = 'W'") -%}
    {%- if result.rows[0][0] is not none -%} {%- set lo = result.rows[0][0] | int -%} {%- endif -%}
{%- endif -%}
{%- if hi < lo -%} {%- set hi = lo -%} {%- endif %}
with

markers as (

    -- Every column of a T, B or E row is empty: only where it is in the stream matters.
    select
        cast(_op as {{ dbt.type_string() }}) as op,
        {{ pgcdc_cast_lsn('_commit_lsn') }} as commit_lsn,
        cast(_seq as {{ dbt.type_bigint() }}) as seq
    from {{ pgcdc_batch_source(table, lo, hi) }} as batch
    where {{ pgcdc_batch_filter(lo, 999999999999, hi) }} and _op in ('T', 'B', 'E')

),

watermark as (

    -- W: markers up to this commit LSN have been read (the next run starts after it).
    select 'W' as op, {{ pgcdc_cast_lsn(hi) }} as commit_lsn, cast(0 as {{ dbt.type_bigint() }}) as seq

),

final as (

    select
        case when op = 'W' then 'W' else cast(commit_lsn as {{ dbt.type_string() }}) || '/' || cast(seq as {{ dbt.type_string() }}) end as marker_id,
        op,
        commit_lsn,
        seq
    from (select * from markers union all select * from watermark) as all_markers
    qualify row_number() over (partition by op, commit_lsn, seq order by op) = 1

)

select * from final
{%- endmacro %}


{#- A row of the state: the key columns, every other column (`value`: a format string around
    the column's name, or none for a typed NULL), the last change, is_deleted, the flag. -#}
{% macro pgcdc_state_row(table, value, is_deleted, has_unresolved) -%}
        {%- for column in table['columns'] %}
        {%- if column['key'] %}
        {{ column['name'] }},
        {%- elif value is none %}
        {{ pgcdc_cast('cast(null as ' ~ dbt.type_string() ~ ')', column['type']) }} as {{ column['name'] }},
        {%- else %}
        {{ value.format(column['name']) }} as {{ column['name'] }},
        {%- endif %}
        {%- endfor %}
        last_op,
        last_commit_lsn,
        last_seq,
        last_committed_at,
        {{ is_deleted }} as is_deleted,
        {{ has_unresolved }} as has_unresolved_unchanged_value
{%- endmacro %}


{% macro pgcdc_keys_equal(left, right, keys, right_prefix='') -%}
    ({%- for key in keys %}{{ left }}.{{ key }} = {{ right }}.{{ right_prefix }}{{ key }}{{ ' and ' if not loop.last }}{% endfor -%})
{%- endmacro %}


{#- An encoded value (v<text>: sent; n: sent NULL) back to the column's type. -#}
{% macro pgcdc_decode(encoded, column) -%}
    {{ pgcdc_cast("case when " ~ encoded ~ " = 'n' then null else substr(" ~ encoded ~ ", 2) end", column['type']) }}
{%- endmacro %}


{% macro pgcdc_state(table_name) -%}
{%- set table = pgcdc_table(table_name) -%}
{%- set keys = table['key_columns'] -%}
{%- set key_columns = table['columns'] | selectattr('key') | list -%}
{%- set values = table['columns'] | rejectattr('key') | list -%}
{%- set hops = var('pgcdc_key_change_hops', 3) | int -%}
{%- set markers = ref('int_' ~ table['id'] ~ '__markers') -%}
{#- Snowflake: MERGE. DuckDB: delete+insert, same rows (one per key per batch): DuckDB 2.0's
    MERGE took 1.5 s to apply 10k rows to a 3M-row table where delete+insert takes 0.04 s
    (var pgcdc_duckdb_incremental_strategy to choose). -#}
{{ config(materialized='incremental', unique_key=keys,
          incremental_strategy=(var('pgcdc_duckdb_incremental_strategy', 'delete+insert') if target.type == 'duckdb' else 'merge'),
          on_schema_change='append_new_columns') }}
{%- set hi = pgcdc_completeness_lsn(table_name) -%}
{%- set lo_lsn, lo_seq = -1, 0 -%}
{%- if is_incremental() and execute -%}
    {%- set result = run_query("select last_commit_lsn, last_seq from " ~ this
                               ~ " order by last_commit_lsn desc, last_seq desc limit 1") -%}
    {%- if result.rows | length > 0 -%}
        {%- set lo_lsn, lo_seq = result.rows[0][0] | int, result.rows[0][1] | int -%}
    {%- endif -%}
{%- endif %}
{%- set new_reset = false -%}
{%- if is_incremental() and execute -%}
    {%- set result = run_query("select count(*) from " ~ markers ~ " where op in ('T', 'E') and commit_lsn <= " ~ hi
                               ~ " and " ~ pgcdc_position('commit_lsn', 'seq') ~ " > " ~ (lo_lsn * 1000000000000 + lo_seq)) -%}
    {%- set new_reset = result.rows[0][0] > 0 -%}
{%- endif %}
with

batch as (

    -- The changes after the last one applied, up to the completeness LSN.
    select * from {{ pgcdc_batch_source(table, lo_lsn, hi) }} as source_rows
    where {{ pgcdc_batch_filter(lo_lsn, lo_seq, hi) }}

),

changes as (

    -- One row per change (a file loaded twice repeats them). Values stay text, encoded so that
    -- "not sent" (NULL) differs from "sent NULL" ('n') and a sent value ('v' || text).
    select
        cast(_op as {{ dbt.type_string() }}) as op,
        {{ pgcdc_cast_lsn('_commit_lsn') }} as commit_lsn,
        cast(_seq as {{ dbt.type_bigint() }}) as seq,
        {{ pgcdc_parse_utc_timestamp('_commit_ts') }} as committed_at,
        {%- for column in key_columns %}
        {{ pgcdc_cast(pgcdc_column_text(column), column['type']) }} as {{ column['name'] }},
        {%- endfor %}
        {%- for column in values %}
        case
            when _op in ('I', 'U', 'R') and not coalesce(contains(_unchanged, '"{{ column["name"] }}"'), false)
                then coalesce('v' || {{ pgcdc_column_text(column) }}, 'n')
        end as {{ column['name'] }}__sent{{ ',' if not loop.last }}
        {%- endfor %}
    from batch
    where _op in ('I', 'U', 'R', 'D')
    qualify row_number() over (partition by _commit_lsn, _seq order by _file_name) = 1

),

target as (

    {%- if is_incremental() %}
    -- Only the keys the batch touches (a key change's old key has its D in the batch too).
    select * from {{ this }} as existing
    where exists (select 1 from changes where {{ pgcdc_keys_equal('changes', 'existing', keys) }})
    {%- else %}
    -- A full refresh starts from nothing.
    select
        {%- for column in table['columns'] %}
        {{ pgcdc_cast('cast(null as ' ~ dbt.type_string() ~ ')', column['type']) }} as {{ column['name'] }},
        {%- endfor %}
        cast(null as {{ dbt.type_string() }}) as last_op,
        {{ pgcdc_cast_lsn('null') }} as last_commit_lsn,
        cast(null as {{ dbt.type_bigint() }}) as last_seq,
        {{ pgcdc_parse_utc_timestamp('null') }} as last_committed_at,
        cast(null as boolean) as is_deleted,
        cast(null as boolean) as has_unresolved_unchanged_value
    where 1 = 0
    {%- endif %}

),

markers as (

    select op, {{ pgcdc_position('commit_lsn', 'seq') }} as position
    from {{ markers }}
    where op in ('T', 'B', 'E') and commit_lsn <= {{ hi }}

),

reset as (

    -- The last truncate, or the last copy begin with an end after it: keys whose latest change
    -- is before it are gone.
    select
        case
            when coalesce(max(case when op = 'T' then position end), -1)
                 > coalesce(max(case when op = 'B' and position < last_end then position end), -1)
                then coalesce(max(case when op = 'T' then position end), -1)
            else coalesce(max(case when op = 'B' and position < last_end then position end), -1)
        end as reset_position
    from markers
    cross join (select max(position) as last_end from markers where op = 'E') as ends

),

liveness_resets as (

    -- For telling a key change from an update: a key is gone after a truncate, and after a
    -- finished copy that did not copy it (from its E on).
    select position as reset_position, position as effective_position from markers where op = 'T'
    union all
    select begins.position, min(ends.position)
    from markers as begins
    inner join markers as ends
        on ends.op = 'E' and ends.position > begins.position
    where begins.op = 'B'
    group by begins.position

),

deletes as (

    select commit_lsn, seq, {{ keys | join(', ') }} from changes where op = 'D'

),

flagged as (

    -- For a key change: the key the D right before this U (same commit) removed, and this key's
    -- previous change (in the batch, else the target's last one).
    select
        changes.*,
        {{ pgcdc_position('changes.commit_lsn', 'changes.seq') }} as position,
        {%- for key in keys %}
        deletes.{{ key }} as _pgcdc_from_{{ key }},
        {%- endfor %}
        coalesce(
            lag(changes.op) over (
                partition by {% for key in keys %}changes.{{ key }}{{ ', ' if not loop.last }}{% endfor %}
                order by changes.commit_lsn, changes.seq
            ),
            case when target.is_deleted then 'D' else target.last_op end
        ) as previous_op,
        coalesce(
            lag({{ pgcdc_position('changes.commit_lsn', 'changes.seq') }}) over (
                partition by {% for key in keys %}changes.{{ key }}{{ ', ' if not loop.last }}{% endfor %}
                order by changes.commit_lsn, changes.seq
            ),
            {{ pgcdc_position('target.last_commit_lsn', 'target.last_seq') }}
        ) as previous_position
    from changes
    left join deletes
        on changes.op = 'U' and deletes.commit_lsn = changes.commit_lsn and deletes.seq = changes.seq - 1
    left join target
        on {{ pgcdc_keys_equal('changes', 'target', keys) }}

),

reset_since_previous as (

    -- Candidate key changes whose key was truncated or left out of a finished copy since its
    -- previous change: the key did not exist any more.
    select distinct flagged.commit_lsn, flagged.seq
    from flagged
    inner join liveness_resets
        on liveness_resets.reset_position > flagged.previous_position
        and liveness_resets.effective_position < flagged.position
    where flagged.op = 'U' and flagged._pgcdc_from_{{ keys[0] }} is not null

),

lived as (

    -- A key's life starts at an insert, a copied row or a key change (each sends or inherits
    -- every value), and after a delete (nothing is carried across it); unsent values are looked
    -- up within the life, then where it came from.
    select
        *,
        count(case when op in ('I', 'R') or is_key_change or previous_op = 'D' then 1 end) over (
            partition by {{ keys | join(', ') }} order by commit_lsn, seq
            rows between unbounded preceding and current row
        ) as life
    from (
        select
            flagged.*,
            coalesce(
                flagged.op = 'U'
                and flagged._pgcdc_from_{{ keys[0] }} is not null
                and not {{ pgcdc_keys_equal('flagged', 'flagged', keys, '_pgcdc_from_') }}
                and (
                    flagged.previous_op is null
                    or flagged.previous_op = 'D'
                    or reset_since_previous.seq is not null
                ),
                false
            ) as is_key_change
        from flagged
        left join reset_since_previous
            on reset_since_previous.commit_lsn = flagged.commit_lsn and reset_since_previous.seq = flagged.seq
    ) as with_key_changes

),

lives as (

    select
        {{ keys | join(', ') }},
        life,
        max(position) as last_position,
        {{ pgcdc_last_sent('op', 'position') }} as last_op,
        {{ pgcdc_last_sent('commit_lsn', 'position') }} as last_commit_lsn,
        {{ pgcdc_last_sent('seq', 'position') }} as last_seq,
        {{ pgcdc_last_sent('committed_at', 'position') }} as last_committed_at,
        {%- for key in keys %}
        max(case when is_key_change then _pgcdc_from_{{ key }} end) as _pgcdc_from_{{ key }},
        {%- endfor %}
        max(case when is_key_change then commit_lsn end) as key_change_lsn,
        max(case when is_key_change then seq end) as key_change_seq,
        {%- for column in values %}
        {{ pgcdc_last_sent(column['name'] ~ '__sent', 'position') }} as {{ column['name'] }}__sent{{ ',' if not loop.last }}
        {%- endfor %}
    from lived
    group by {{ keys | join(', ') }}, life

),

linked as (

    -- A life started by a key change continues the old key's life that its D ended.
    select
        lives.*,
        old_key_rows.life as from_life
    from lives
    left join lived as old_key_rows
        on old_key_rows.op = 'D'
        and old_key_rows.commit_lsn = lives.key_change_lsn
        and old_key_rows.seq = lives.key_change_seq - 1

),

latest as (

    select * from linked
    qualify row_number() over (partition by {{ keys | join(', ') }} order by life desc) = 1

),

resolved as (

    -- Each value of a key's latest life: sent in that life, else from where the life came from
    -- (the old key of a key change, up to {{ hops }} key changes back), else from the target's
    -- row (a life that began before this batch).
    select
        h0.*,
        {%- for column in values %}
        {%- set c = column['name'] %}
        case
            {%- for i in range(hops + 1) %}
            when h{{ i }}.{{ c }}__sent is not null then {{ pgcdc_decode('h' ~ i ~ '.' ~ c ~ '__sent', column) }}
            when h{{ i }}.life = 0 then t{{ i }}.{{ c }}
            {%- endfor %}
        end as {{ c }},
        case
            {%- for i in range(hops + 1) %}
            when h{{ i }}.{{ c }}__sent is not null then false
            when h{{ i }}.life = 0 then coalesce(t{{ i }}.is_deleted or t{{ i }}.has_unresolved_unchanged_value, true)
            {%- endfor %}
            else true
        end as {{ c }}__unresolved,
        {%- endfor %}
        reset.reset_position
    from latest as h0
    {%- for i in range(hops + 1) %}
    {%- if i > 0 %}
    left join linked as h{{ i }}
        on {{ pgcdc_keys_equal('h' ~ i, 'h' ~ (i - 1), keys, '_pgcdc_from_') }} and h{{ i }}.life = h{{ i - 1 }}.from_life
    {%- endif %}
    left join target as t{{ i }}
        on {{ pgcdc_keys_equal('t' ~ i, 'h' ~ i, keys) }}
    {%- endfor %}
    cross join reset

),

batch_rows as (

    select
        *,
        last_op = 'D' or last_position < reset_position as is_deleted
    from resolved

),

reset_tombstones as (

    -- Target rows the batch does not touch, removed by a truncate or a finished re-copy in it.
    -- Only a batch holding a T or an E reads the whole target (resets before the batch were
    -- applied by the run that read them).
    select target.*
    from {{ this if new_reset else 'target' }} as target
    cross join reset
    where
        {{ 'true' if new_reset else 'false' }} and
        not target.is_deleted
        and {{ pgcdc_position('target.last_commit_lsn', 'target.last_seq') }} < reset.reset_position
        and not exists (select 1 from latest where {{ pgcdc_keys_equal('latest', 'target', keys) }})

),

final as (

    {%- set unresolved = [] -%}
    {%- for column in values -%}{%- do unresolved.append(column['name'] ~ '__unresolved') -%}{%- endfor %}

    select {{ pgcdc_state_row(table, 'case when not is_deleted then {} end', 'is_deleted',
                              'not is_deleted and (' ~ (unresolved | join(' or ') or 'false') ~ ')') }}
    from batch_rows

    union all

    select {{ pgcdc_state_row(table, none, 'true', 'false') }}
    from reset_tombstones

)

select * from final
{%- endmacro %}

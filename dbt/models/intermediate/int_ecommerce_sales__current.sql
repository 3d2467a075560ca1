{%- set value_columns = pgcdc_ecommerce_sales_value_columns() -%}

with

changes as (

    -- Staging already keeps one row per change; repeated here (one cheap window) so this model
    -- stays correct on any input, and its unit tests can feed it a file loaded twice. A missing
    -- *_is_unchanged flag means the value was sent.
    select
        op,
        commit_lsn,
        seq,
        committed_at,
        id,
        {%- for column in value_columns %}
        {{ column }},
        coalesce({{ column }}_is_unchanged, false) as {{ column }}_is_unchanged{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('stg_ecommerce_sales__changes') }}
    qualify row_number() over (partition by commit_lsn, seq order by commit_lsn) = 1

),

last_truncate as (

    -- A T row means: everything of this table committed before it is gone.
    select
        commit_lsn,
        seq
    from changes
    where op = 'T'
    qualify row_number() over (order by commit_lsn desc, seq desc) = 1

),

row_changes as (

    -- Inserts, snapshot reads, updates and deletes after the last truncate (all of them when
    -- there was none). Everything below orders changes by (commit_lsn, seq) as numbers.
    select
        changes.*,
        lag(changes.op) over (partition by changes.id order by changes.commit_lsn, changes.seq)
            as previous_op_of_id,
        lag(changes.op) over (partition by changes.commit_lsn order by changes.seq)
            as previous_op_in_commit,
        lag(changes.seq) over (partition by changes.commit_lsn order by changes.seq)
            as previous_seq_in_commit
    from changes
    left join last_truncate
        on 1 = 1
    where
        changes.op in ('I', 'U', 'R', 'D')
        and (
            last_truncate.commit_lsn is null
            or {{ pgcdc_change_is_after(
                'changes.commit_lsn', 'changes.seq', 'last_truncate.commit_lsn', 'last_truncate.seq'
            ) }}
        )

),

key_changes as (

    -- pgcdc writes an UPDATE that changed the key as a D of the old key immediately followed, in
    -- the same commit, by a U of the new key. Such a U follows no live row of its own id (nothing,
    -- or a delete): that tells it from an ordinary update that happens to follow a delete.
    select
        *,
        coalesce(
            op = 'U'
            and coalesce(previous_op_of_id, 'D') = 'D'
            and previous_op_in_commit = 'D'
            and previous_seq_in_commit = seq - 1,
            false
        ) as is_key_change
    from row_changes

),

value_runs as (

    -- An unchanged TOAST value was not sent: the row still has the value it had just before.
    -- Per id and column, number the runs of changes: a run starts at a change that sent the
    -- value, at a delete (the row is gone) and at a key change (the row came from the old key).
    -- Each unchanged value is in the run of the change it must copy from, however many unchanged
    -- updates are chained. Run 0 holds unchanged values with nothing of this id before them.
    select
        *,
        count(case when is_key_change then 1 end) over (
            partition by id order by commit_lsn, seq rows between unbounded preceding and current row
        ) as key_change_run,
        {%- for column in value_columns %}
        count(case when op = 'D' or is_key_change or not {{ column }}_is_unchanged then 1 end) over (
            partition by id order by commit_lsn, seq rows between unbounded preceding and current row
        ) as {{ column }}_run{{ "," if not loop.last }}
        {%- endfor %}
    from key_changes

),

run_starts as (

    -- What each change's runs started with: the value sent ('sent'), a delete ('deleted'), a key
    -- change that did not send it ('old_key': look the value up on the old key), or nothing
    -- (null, run 0). And the last key change of the id, for the 'old_key' look-up.
    select
        op,
        commit_lsn,
        seq,
        committed_at,
        id,
        first_value(case when is_key_change then commit_lsn end) over (
            partition by id, key_change_run order by commit_lsn, seq
            rows between unbounded preceding and unbounded following
        ) as key_change_lsn,
        first_value(case when is_key_change then seq end) over (
            partition by id, key_change_run order by commit_lsn, seq
            rows between unbounded preceding and unbounded following
        ) as key_change_seq,
        {%- for column in value_columns %}
        first_value({{ column }}) over (
            partition by id, {{ column }}_run order by commit_lsn, seq
            rows between unbounded preceding and unbounded following
        ) as {{ column }}_run_value,
        first_value(
            case
                when {{ column }}_run = 0 then null
                when op = 'D' then 'deleted'
                when not {{ column }}_is_unchanged then 'sent'
                when is_key_change then 'old_key'
            end
        ) over (
            partition by id, {{ column }}_run order by commit_lsn, seq
            rows between unbounded preceding and unbounded following
        ) as {{ column }}_run_start{{ "," if not loop.last }}
        {%- endfor %}
    from value_runs

),

before_delete as (

    -- The row each delete removed, as it was just before: where a key change finds the values
    -- it did not send. One hop only: a value the old key itself got through an earlier key
    -- change without it being sent is left unresolved (and flagged).
    select
        commit_lsn,
        seq,
        {%- for column in value_columns %}
        {{ column }}_before,
        {{ column }}_before_start{{ "," if not loop.last }}
        {%- endfor %}
    from (
        select
            op,
            commit_lsn,
            seq,
            {%- for column in value_columns %}
            lag({{ column }}_run_value) over (partition by id order by commit_lsn, seq)
                as {{ column }}_before,
            lag({{ column }}_run_start) over (partition by id order by commit_lsn, seq)
                as {{ column }}_before_start{{ "," if not loop.last }}
            {%- endfor %}
        from run_starts
    ) as with_previous
    where op = 'D'

),

carried_forward as (

    select
        run_starts.op,
        run_starts.commit_lsn,
        run_starts.seq,
        run_starts.committed_at,
        run_starts.id,
        {%- for column in value_columns %}
        case run_starts.{{ column }}_run_start
            when 'sent' then run_starts.{{ column }}_run_value
            when 'old_key' then
                case
                    when before_delete.{{ column }}_before_start = 'sent'
                        then before_delete.{{ column }}_before
                end
        end as {{ column }},
        {%- endfor %}
        (
            {%- for column in value_columns %}
            coalesce(
                run_starts.{{ column }}_run_start = 'sent'
                or (
                    run_starts.{{ column }}_run_start = 'old_key'
                    and before_delete.{{ column }}_before_start = 'sent'
                ),
                false
            ) {{- " and" if not loop.last }}
            {%- endfor %}
        ) as has_every_value
    from run_starts
    left join before_delete
        on
            run_starts.key_change_lsn = before_delete.commit_lsn
            and run_starts.key_change_seq - 1 = before_delete.seq

),

latest as (

    -- The last change of each id.
    select * from carried_forward
    qualify row_number() over (partition by id order by commit_lsn desc, seq desc) = 1

),

final as (

    select
        ----------  ids
        id,
        invoice_no,
        stock_code,
        customer_id,

        ----------  text
        description,
        country,

        ----------  numerics
        quantity,
        unit_price,

        ----------  timestamps
        invoice_date,

        ----------  the change that made the row what it is
        op as last_op,
        commit_lsn as last_commit_lsn,
        seq as last_seq,
        committed_at as last_committed_at,
        not has_every_value as has_unresolved_unchanged_value

    from latest
    where op <> 'D'

)

select * from final

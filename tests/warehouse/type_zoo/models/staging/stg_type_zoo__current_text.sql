-- The current state of public.type_zoo, as the text pgcdc wrote: the last change per id in
-- (commit_lsn, seq) order after the last TRUNCATE, deleted ids dropped, and an unchanged TOAST
-- value taken from the id's latest earlier change that carried it.
with

changes as (

    select * from {{ ref('stg_type_zoo__changes') }}

),

last_truncate as (

    select commit_lsn, seq from changes where op = 'T'
    qualify row_number() over (order by commit_lsn desc, seq desc) = 1

),

row_changes as (

    select changes.*
    from changes
    left join last_truncate
        on {{ pgcdc_change_is_after('last_truncate.commit_lsn', 'last_truncate.seq', 'changes.commit_lsn', 'changes.seq') }}
        or (last_truncate.commit_lsn = changes.commit_lsn and last_truncate.seq = changes.seq)
    where changes.op in ('R', 'I', 'U', 'D') and last_truncate.commit_lsn is null

),

filled as (

    select
        op, commit_lsn, seq, committed_at, id,
        {%- for column in type_zoo_columns() %}
        case when list_contains(unchanged_columns, '{{ column.name }}')
             -- [value] is never NULL, so IGNORE NULLS skips only the changes without the value.
             then last_value(case when not list_contains(unchanged_columns, '{{ column.name }}') then [{{ column.name }}] end ignore nulls)
                  over (partition by id order by commit_lsn, seq rows between unbounded preceding and 1 preceding)[1]
             else {{ column.name }} end as {{ column.name }},
        {%- endfor %}
        unchanged_columns

    from row_changes

)

select * exclude (op, unchanged_columns), op as last_op, unchanged_columns as last_unchanged_columns
from filled
qualify row_number() over (partition by id order by commit_lsn desc, seq desc) = 1
    and op <> 'D'

-- A TRUNCATE empties the table: every current row must come from a change after the last one.
with

last_truncate as (

    select
        commit_lsn,
        seq
    from {{ ref('stg_pgcdc__ecommerce_sales') }}
    where op = 'T'
    qualify row_number() over (order by commit_lsn desc, seq desc) = 1

)

select
    current_rows.id,
    current_rows.last_commit_lsn,
    current_rows.last_seq
from {{ ref('int_ecommerce_sales__current') }} as current_rows
inner join last_truncate
    on not {{ pgcdc_change_is_after(
        'current_rows.last_commit_lsn', 'current_rows.last_seq',
        'last_truncate.commit_lsn', 'last_truncate.seq'
    ) }}

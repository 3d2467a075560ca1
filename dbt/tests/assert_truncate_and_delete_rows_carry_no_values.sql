-- pgcdc's contract: a T row has every table column empty; a D row always names the key it
-- deletes. Anything else means the files and this project disagree about the format.
select
    op,
    commit_lsn,
    seq,
    id
from {{ ref('stg_pgcdc__ecommerce_sales') }}
where
    (op = 'T' and (id is not null or invoice_no is not null or stock_code is not null
                   or quantity is not null or unit_price is not null or invoice_date is not null))
    or (op = 'D' and id is null)

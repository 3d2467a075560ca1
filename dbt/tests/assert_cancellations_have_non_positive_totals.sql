-- A cancellation ('C' invoice) reverses goods: its lines have negative quantities and prices are
-- never negative, so its total cannot be positive; and no ordinary invoice is negative.
select
    invoice_no,
    is_cancellation,
    total_amount
from {{ ref('invoices') }}
where
    (is_cancellation and total_amount > 0)
    or (not is_cancellation and total_amount < 0)

-- The marts neither lose nor invent money or lines: invoices and products both add up to the
-- current lines. Amounts are compared as decimal(38, 2): exact, whatever type a sum comes back as.
with

lines as (

    select
        count(*) as line_count,
        sum(quantity) as units,
        cast(sum(quantity * unit_price) as decimal(38, 2)) as amount
    from {{ ref('int_ecommerce_sales__current') }}

),

invoices as (

    select
        sum(line_count) as line_count,
        cast(sum(total_amount) as decimal(38, 2)) as amount
    from {{ ref('invoices') }}

),

products as (

    select
        sum(line_count) as line_count,
        sum(units_sold) as units,
        cast(sum(revenue) as decimal(38, 2)) as amount
    from {{ ref('products') }}

)

select
    lines.line_count as lines_line_count,
    invoices.line_count as invoices_line_count,
    products.line_count as products_line_count,
    lines.units as lines_units,
    products.units as products_units,
    lines.amount as lines_amount,
    invoices.amount as invoices_amount,
    products.amount as products_amount
from lines
cross join invoices
cross join products
where
    lines.line_count <> coalesce(invoices.line_count, 0)
    or lines.line_count <> coalesce(products.line_count, 0)
    or coalesce(lines.units, 0) <> coalesce(products.units, 0)
    or coalesce(lines.amount, 0) <> coalesce(invoices.amount, 0)
    or coalesce(lines.amount, 0) <> coalesce(products.amount, 0)

with

lines as (

    select * from {{ ref('int_ecommerce_sales__current') }}

),

lines_with_header as (

    -- An invoice's customer, country and date are those of its first line (lowest id): one
    -- deterministic answer even if a correction left its lines disagreeing.
    select
        invoice_no,
        quantity,
        unit_price,
        first_value(customer_id) over (partition by invoice_no order by id) as customer_id,
        first_value(country) over (partition by invoice_no order by id) as country,
        first_value(invoice_date) over (partition by invoice_no order by id) as invoice_date
    from lines

),

invoices as (

    select
        invoice_no,
        customer_id,
        country,
        invoice_date,
        count(*) as line_count,
        cast(sum(quantity * unit_price) as decimal(38, 2)) as total_amount
    from lines_with_header
    group by invoice_no, customer_id, country, invoice_date

),

final as (

    select
        ----------  ids
        invoice_no,
        customer_id,

        ----------  text
        country,

        ----------  numerics
        line_count,
        total_amount,

        ----------  booleans
        invoice_no like 'C%' as is_cancellation,

        ----------  timestamps
        invoice_date

    from invoices

)

select * from final

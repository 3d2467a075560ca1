with

lines as (

    select * from {{ ref('int_ecommerce_sales__current') }}

),

latest_descriptions as (

    -- The description on the product's most recent invoice line that has one (not null, not
    -- empty): the latest invoice date, then the latest line.
    select
        stock_code,
        description
    from lines
    where description is not null and description <> ''
    qualify row_number() over (
        partition by stock_code order by invoice_date desc, id desc
    ) = 1

),

sales as (

    -- Net of cancellations: a cancelled line has a negative quantity.
    select
        stock_code,
        count(*) as line_count,
        cast(sum(quantity) as {{ dbt.type_bigint() }}) as units_sold,
        cast(sum(quantity * unit_price) as decimal(38, 2)) as revenue,
        max(case when invoice_no not like 'C%' then invoice_date end) as last_sold_at
    from lines
    group by stock_code

),

final as (

    select
        ----------  ids
        sales.stock_code,

        ----------  text
        latest_descriptions.description,

        ----------  numerics
        sales.line_count,
        sales.units_sold,
        sales.revenue,

        ----------  timestamps
        sales.last_sold_at

    from sales
    left join latest_descriptions
        on sales.stock_code = latest_descriptions.stock_code

)

select * from final

with

source as (

    select * from {{ source('pgcdc', 'ecommerce_sales_changes') }}

),

renamed as (

    select
        ----------  change metadata
        cast(_op as {{ dbt.type_string() }}) as op,
        {{ pgcdc_cast_lsn('_commit_lsn') }} as commit_lsn,
        cast(_seq as {{ dbt.type_bigint() }}) as seq,
        cast(_xid as {{ dbt.type_bigint() }}) as xid,
        {{ pgcdc_parse_utc_timestamp('_commit_ts') }} as committed_at,

        ----------  ids
        cast(id as {{ dbt.type_bigint() }}) as id,
        cast(invoice_no as {{ dbt.type_string() }}) as invoice_no,
        cast(stock_code as {{ dbt.type_string() }}) as stock_code,
        cast(customer_id as {{ dbt.type_int() }}) as customer_id,

        ----------  text
        cast(description as {{ dbt.type_string() }}) as description,
        cast(country as {{ dbt.type_string() }}) as country,

        ----------  numerics
        cast(quantity as {{ dbt.type_int() }}) as quantity,
        cast(unit_price as decimal(10, 2)) as unit_price,

        ----------  timestamps
        cast(invoice_date as {{ dbt.type_timestamp() }}) as invoice_date,

        ----------  unchanged TOAST values: true = not sent, keep the previous value
        {%- for column in pgcdc_ecommerce_sales_value_columns() %}
        {{ pgcdc_is_unchanged('_unchanged', column) }} as {{ column }}_is_unchanged,
        {%- endfor %}

        ----------  load metadata
        {{ pgcdc_load_metadata() }}

    from source

),

deduplicated as (

    -- A file loaded twice (a replayed upload, a re-run COPY, a copy under another name) repeats
    -- its changes; (commit_lsn, seq) names a change, so keep one row of each: the first loaded.
    select * from renamed
    qualify row_number() over (
        partition by commit_lsn, seq
        order by loaded_at asc nulls last, file_name asc nulls last, file_row_number asc nulls last
    ) = 1

),

final as (

    select * from deduplicated

)

select * from final

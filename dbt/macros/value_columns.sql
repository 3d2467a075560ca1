{#-
    The columns of public.ecommerce_sales other than its primary key (id), in relation order: the
    ones an UPDATE can leave as an unchanged TOAST value, and the ones the current state carries.
-#}
{% macro pgcdc_ecommerce_sales_value_columns() -%}
    {{ return([
        'invoice_no', 'stock_code', 'description', 'quantity',
        'invoice_date', 'unit_price', 'customer_id', 'country',
    ]) }}
{%- endmacro %}

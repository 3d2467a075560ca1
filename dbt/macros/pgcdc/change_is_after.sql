{#-
    True when change (lsn_a, seq_a) comes after change (lsn_b, seq_b) in pgcdc's order: commit LSN
    first, then the position in the transaction. Both LSNs must be numeric (pgcdc_cast_lsn), never
    text. Written out rather than as a row comparison, which Snowflake does not have.
-#}
{% macro pgcdc_change_is_after(lsn_a, seq_a, lsn_b, seq_b) -%}
    ({{ lsn_a }} > {{ lsn_b }} or ({{ lsn_a }} = {{ lsn_b }} and {{ seq_a }} > {{ seq_b }}))
{%- endmacro %}

{#- True when change (lsn_a, seq_a) comes after (lsn_b, seq_b): commit LSN first, then the
    position in the transaction (the same as the main project's macro of this name). -#}
{% macro pgcdc_change_is_after(lsn_a, seq_a, lsn_b, seq_b) -%}
    ({{ lsn_a }} > {{ lsn_b }} or ({{ lsn_a }} = {{ lsn_b }} and {{ seq_a }} > {{ seq_b }}))
{%- endmacro %}

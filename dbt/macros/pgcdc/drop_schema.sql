{#- dbt run-operation pgcdc_drop_schema --args '{schema: CI_123}': the CI lane's cleanup
    (scripts/warehouse-snowflake-ci.sh). Refuses the production schemas. -#}
{% macro pgcdc_drop_schema(schema) %}
    {%- if schema | upper in ('RAW', 'DEV', 'PROD', 'PUBLIC') -%}
        {{ exceptions.raise_compiler_error('pgcdc_drop_schema: refusing to drop ' ~ schema) }}
    {%- endif -%}
    {% do adapter.drop_schema(api.Relation.create(database=target.database, schema=schema)) %}
{% endmacro %}

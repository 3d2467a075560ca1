{#-
    The value columns of public.type_zoo in relation order (the key, id, is not one of them), with
    the PostgreSQL type and the DuckDB type each becomes. `cast` names the conversion in
    pg_to_duckdb() below; README.md's "Type mapping" table says the same in prose.
-#}
{% macro type_zoo_columns() -%}
    {{ return([
        {'name': 'label',          'pg': 'text',                        'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_smallint',     'pg': 'smallint',                    'duckdb': 'SMALLINT',      'cast': 'plain'},
        {'name': 'c_integer',      'pg': 'integer',                     'duckdb': 'INTEGER',       'cast': 'plain'},
        {'name': 'c_bigint',       'pg': 'bigint',                      'duckdb': 'BIGINT',        'cast': 'plain'},
        {'name': 'c_numeric',      'pg': 'numeric',                     'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_numeric_12_2', 'pg': 'numeric(12,2)',               'duckdb': 'DECIMAL(12,2)', 'cast': 'plain'},
        {'name': 'c_real',         'pg': 'real',                        'duckdb': 'FLOAT',         'cast': 'plain'},
        {'name': 'c_double',       'pg': 'double precision',            'duckdb': 'DOUBLE',        'cast': 'plain'},
        {'name': 'c_boolean',      'pg': 'boolean',                     'duckdb': 'BOOLEAN',       'cast': 'plain'},
        {'name': 'c_text',         'pg': 'text',                        'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_varchar',      'pg': 'character varying(20)',       'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_char',         'pg': 'character(5)',                'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_bytea',        'pg': 'bytea',                       'duckdb': 'BLOB',          'cast': 'bytea'},
        {'name': 'c_date',         'pg': 'date',                        'duckdb': 'DATE',          'cast': 'date'},
        {'name': 'c_time',         'pg': 'time without time zone',      'duckdb': 'TIME',          'cast': 'plain'},
        {'name': 'c_timetz',       'pg': 'time with time zone',         'duckdb': 'TIME WITH TIME ZONE', 'cast': 'plain'},
        {'name': 'c_timestamp',    'pg': 'timestamp without time zone', 'duckdb': 'TIMESTAMP',     'cast': 'timestamp'},
        {'name': 'c_timestamptz',  'pg': 'timestamp with time zone',    'duckdb': 'TIMESTAMP WITH TIME ZONE', 'cast': 'timestamptz'},
        {'name': 'c_interval',     'pg': 'interval',                    'duckdb': 'INTERVAL',      'cast': 'interval'},
        {'name': 'c_uuid',         'pg': 'uuid',                        'duckdb': 'UUID',          'cast': 'plain'},
        {'name': 'c_json',         'pg': 'json',                        'duckdb': 'JSON',          'cast': 'plain'},
        {'name': 'c_jsonb',        'pg': 'jsonb',                       'duckdb': 'JSON',          'cast': 'plain'},
        {'name': 'c_int_array',    'pg': 'integer[]',                   'duckdb': 'INTEGER[]',     'cast': 'int_array'},
        {'name': 'c_text_array',   'pg': 'text[]',                      'duckdb': 'VARCHAR[]',     'cast': 'text_array'},
        {'name': 'c_mood',         'pg': 'public.mood',                 'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_positive_int', 'pg': 'public.positive_int',         'duckdb': 'INTEGER',       'cast': 'plain'},
        {'name': 'c_inet',         'pg': 'inet',                        'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_cidr',         'pg': 'cidr',                        'duckdb': 'VARCHAR',       'cast': 'varchar'},
        {'name': 'c_money',        'pg': 'money',                       'duckdb': 'DECIMAL(19,2)', 'cast': 'plain'},
    ]) }}
{%- endmacro %}

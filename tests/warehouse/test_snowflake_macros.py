"""The Snowflake side of the dbt package's macros, rendered by dbt for a Snowflake target and run
in fakesnow (Snowflake SQL transpiled onto DuckDB).

dbt renders the `snowflake__*` implementations (adapter.dispatch picks them for a Snowflake
target; `run-operation` renders without connecting), and each expression runs in fakesnow on
the edge values of the type mapping: what the warehouse type cannot hold must come back NULL,
never an error. What fakesnow cannot emulate is listed in NOT_EMULATED and asserted to still
fail there, so the list cannot go stale silently; those expressions run only on a real account
(scripts/warehouse-snowflake-ci.sh).
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import subprocess

import pytest

fakesnow = pytest.importorskip("fakesnow")
import snowflake.connector  # noqa: E402

from pgcdc_files import REPO  # noqa: E402

RENDER = """
{% macro render_for_test() %}
    {%- set out = {
        'adapter': adapter.type(),
        'hex_to_lsn': pgcdc_hex_to_lsn("'FFFFFFFFFFFFFFFF'"),
        'xy_to_lsn': pgcdc_xy_to_lsn("'16/B374D848'"),
        'regex_group': pgcdc_regex_group("'public.t/dt=2024-03-05/hour=17/00000016B374D848-00000016B3750000.csv.gz'", pgcdc_data_file_regex(), 2),
        'is_unchanged': pgcdc_is_unchanged("'[\\"description\\"]'", 'description'),
        'last_sent': pgcdc_last_sent('v', 'p'),
        'casts': {},
    } -%}
    {%- for pg_type in ['integer', 'bigint', 'numeric(10,2)', 'numeric', 'double precision', 'boolean', 'date',
                        'timestamp without time zone', 'timestamp with time zone', 'bytea', 'json', 'text', 'uuid'] -%}
        {%- do out['casts'].update({pg_type: pgcdc_cast('V', pg_type)}) -%}
    {%- endfor -%}
    {{ log('RENDERED:' ~ tojson(out), info=True) }}
{% endmacro %}
"""

# (PostgreSQL type, pgcdc's text, what Snowflake gives): NULL where the type cannot hold it.
CASES = [
    ("integer", "42", 42), ("integer", "x", None), ("bigint", "9223372036854775807", 9223372036854775807),
    ("numeric(10,2)", "1234.50", decimal.Decimal("1234.50")), ("numeric(10,2)", "NaN", None),
    ("numeric", "NaN", "NaN"), ("numeric", "1" * 50, "1" * 50),
    ("double precision", "0.1", 0.1), ("double precision", "Infinity", float("inf")),
    ("double precision", "-Infinity", float("-inf")),
    ("boolean", "t", True), ("boolean", "f", False),
    ("date", "2024-02-29", datetime.date(2024, 2, 29)), ("date", "infinity", None), ("date", "0044-03-15 BC", None),
    ("timestamp without time zone", "2024-02-29T12:34:56.789012", datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)),
    ("timestamp without time zone", "infinity", None),
    ("timestamp without time zone", "0001-12-31 23:59:59.999999 BC", None),
    ("bytea", "\\x00ff", b"\x00\xff"),
    ("text", "it's", "it's"), ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
]
# What fakesnow (0.12) does not emulate, by case: asserted to still differ, so this list shrinks
# when fakesnow learns them.
NOT_EMULATED = {
    ("date", "infinity"),  # fakesnow returns DuckDB's infinite date; Snowflake gives NULL
    # fakesnow has no TRY_TO_TIMESTAMP_NTZ
    ("timestamp without time zone", "2024-02-29T12:34:56.789012"),
    ("timestamp without time zone", "infinity"),
    ("timestamp without time zone", "0001-12-31 23:59:59.999999 BC"),
}


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, venv_bin, fixture_dir):
    from pgcdc_files import copy_dbt_project

    work = tmp_path_factory.mktemp("sfmacros")
    project = copy_dbt_project(work, fixture_dir / "stage", ["public.ecommerce_sales"], keep_shop_models=True)
    (project / "macros" / "render_for_test.sql").write_text(RENDER)
    env = dict(os.environ, SNOWFLAKE_ACCOUNT="not-used", SNOWFLAKE_USER="not-used", NO_COLOR="1",
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    done = subprocess.run(
        [str(venv_bin("dbt")), "run-operation", "render_for_test", "--project-dir", str(project),
         "--profiles-dir", str(project), "--target", "snowflake", "--target-path", str(work / "target"),
         "--log-path", str(work / "logs")],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    (line,) = [l for l in done.stdout.splitlines() if "RENDERED:" in l]
    out = json.loads(line.split("RENDERED:", 1)[1])
    assert out["adapter"] == "snowflake"
    return out


def run(sql: str):
    with fakesnow.patch():
        con = snowflake.connector.connect()
        try:
            return con.cursor().execute(sql).fetchall()
        finally:
            con.close()


def test_snowflake_casts_render_snowflake_functions(rendered):
    casts = rendered["casts"]
    assert casts["numeric(10,2)"].startswith("try_to_number(") and ", 10, 2)" in casts["numeric(10,2)"]
    assert casts["date"].startswith("try_to_date(") and casts["bytea"].startswith("try_to_binary(")
    assert casts["numeric"] == "(V)::varchar", "unconstrained numeric stays exact text"


@pytest.mark.parametrize("pg_type,text,expected", CASES, ids=[f"{t}:{v[:20]}" for t, v, _ in CASES])
def test_snowflake_cast_in_fakesnow(rendered, pg_type, text, expected):
    expression = rendered["casts"][pg_type].replace("(V)", f"({literal(text)})")
    try:
        (got,), = run(f"select {expression}")
    except Exception as error:  # noqa: BLE001 (fakesnow raises several kinds)
        got = error
    if isinstance(got, str) and pg_type == "bytea":
        got = bytes.fromhex(got)
    if (pg_type, text) in NOT_EMULATED:
        assert got != expected, f"fakesnow now emulates {pg_type} {text!r}: drop it from NOT_EMULATED"
        return
    assert got == expected, (expression, got)


def test_file_name_helper_in_fakesnow(rendered):
    (row,) = run(f"select {rendered['regex_group']}")
    assert row == ("00000016B374D848",)


def test_unchanged_flag_is_not_emulated(rendered):
    """ARRAY_CONTAINS over TRY_PARSE_JSON runs on Snowflake only (fakesnow: a JSON is no list)."""
    assert "array_contains(" in rendered["is_unchanged"]
    with pytest.raises(snowflake.connector.errors.ProgrammingError):
        run(f"select {rendered['is_unchanged']}")


def test_hex_lsns_are_not_emulated(rendered):
    """TO_NUMBER(x, 'XXXX...') (hex file names and the checkpoint's X/Y) runs on Snowflake only."""
    assert "to_number(" in rendered["hex_to_lsn"] and "'XXXXXXXXXXXXXXXX'" in rendered["hex_to_lsn"]
    with pytest.raises(snowflake.connector.errors.ProgrammingError, match="format argument not implemented"):
        run(f"select {rendered['hex_to_lsn']}")


def test_last_sent_ignores_unsent_values_in_fakesnow(rendered):
    (row,) = run(f"select {rendered['last_sent']} from (select 'a' as v, 1 as p union all select null, 2 "
                 "union all select 'c', 3 union all select null, 4) as t")
    assert row == ("c",)

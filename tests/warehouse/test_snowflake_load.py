"""The loading path of snowflake/, run in fakesnow (a Snowflake emulator on DuckDB) over files
pgcdc really wrote.

Nothing here is a copy of the scripts: the statements are derived, in code, from the text of
snowflake/*.sql, changed only where fakesnow cannot run Snowflake's syntax, and each change is
listed and asserted below so it cannot grow silently:

  001  only CREATE DATABASE and CREATE SCHEMA run. fakesnow has no warehouses, roles or grants.
  003  the file format runs with PARSE_HEADER = TRUE replaced by SKIP_HEADER = 1. fakesnow
       cannot match CSV columns by name (it loads by position), so the header is skipped
       instead. Since the local table has exactly the header's columns in the header's order
       (test_snowflake_sql.py checks the DDL against real headers), position and name give the
       same mapping. Options fakesnow does not implement are dropped only when their value is
       what DuckDB does anyway for these files (DROPPED_FORMAT_OPTIONS).
  004  the stage's URL becomes a file:// URL over a copy of the fixture's stage folder, and the
       STORAGE_INTEGRATION goes, since there are no cloud credentials locally.
  005  the RAW table loses the three INCLUDE_METADATA columns. fakesnow cannot fill them (no
       METADATA$ in a CSV COPY), and a positional load needs table = file.
  006  the pipe's COPY runs without INCLUDE_METADATA and ON_ERROR, which fakesnow rejects. Its
       PATTERN becomes FILES = (...): the files the PATTERN regex selects, computed here from
       the stage's recursive listing, because fakesnow rejects PATTERN and lists file:// stages
       only one level deep. 007's COPY is the same statement (test_snowflake_sql.py).

The setup runs once per module: fakesnow's CREATE TABLE IF NOT EXISTS on an existing table resets
its load history (a fakesnow bug), so the scripts' idempotence is checked statically
(test_snowflake_sql.py), not by running them twice here.

Two defaults of DuckDB's read_csv, under fakesnow, are set to what Snowflake does instead
(SnowflakeReadCSV); test_fakesnow_still_needs_the_snowflake_like_reader shows each is still needed:
  - Snowflake does not read dt=.../hour=... folder names as columns. DuckDB does (hive
    partitioning): hive_partitioning = false.
  - Snowflake keeps a quoted "" as '' (EMPTY_FIELD_AS_NULL applies to an empty field between
    delimiters, not to an enclosed one). DuckDB turns it into NULL when '' is a null string:
    allow_quoted_nulls = false, when the format encloses fields and NULL_IF does not list ''.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import gzip
import logging
import re
import shutil
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from pgcdc_files import parse_csv

fakesnow = pytest.importorskip("fakesnow")
import fakesnow.copy_into  # noqa: E402  (patched below)
import fakesnow.transforms.options  # noqa: E402
import snowflake.connector  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SNOWFLAKE = REPO / "snowflake"
# sqlglot warns for every statement it keeps as a Command (CREATE PIPE, GRANT ROLE, ...).
logging.getLogger("sqlglot").setLevel(logging.ERROR)
RAW_TABLE = "pgcdc.raw.ecommerce_sales_changes"

# File format options fakesnow does not implement, with the only value each may have for the
# local load to stand for the real one: what DuckDB's read_csv does with pgcdc's files anyway.
DROPPED_FORMAT_OPTIONS = {
    "RECORD_DELIMITER": {"\n", "\\n"},  # DuckDB detects \n
    "ESCAPE": {"NONE"},  # DuckDB's escape is the quote itself (RFC 4180 doubling)
    "TRIM_SPACE": {False},  # DuckDB keeps spaces
    "MULTI_LINE": {True},  # DuckDB reads line breaks inside quotes
    "ERROR_ON_COLUMN_COUNT_MISMATCH": {False},  # the local load is positional over table = file
    "TIMESTAMP_FORMAT": {"AUTO"},  # DuckDB casts ISO 8601 text
    "ENCODING": {"UTF8"},  # DuckDB reads UTF-8
}
# Options handed to fakesnow as they are.
KEPT_FORMAT_OPTIONS = {
    "TYPE",
    "COMPRESSION",
    "FIELD_DELIMITER",
    "FIELD_OPTIONALLY_ENCLOSED_BY",
    "ESCAPE_UNENCLOSED_FIELD",
    "NULL_IF",
    "EMPTY_FIELD_AS_NULL",
}
# COPY options fakesnow rejects; PATTERN is turned into FILES.
DROPPED_COPY_OPTIONS = {"INCLUDE_METADATA", "ON_ERROR"}

# A file the test writes next to the real ones: values at the edges of the format.
EDGE_FILE = "dt=2099-12-31/hour=23/FFFFFFFFFFFFFFFF-FFFFFFFFFFFFFFFF.part-0001-of-0001.csv.gz"
MAX_LSN = 2**64 - 1
EDGE_ROWS = [
    # description `\N` unquoted: text, not NULL (NULL_IF = ()); customer_id NULL
    f"I,{MAX_LSN},0,4294967295,2099-12-31T23:59:59.999999Z,,9223372036854775807,X1,S1,\\N,1,2099-12-31 23:59:59,1.00,,Nowhere",
    # backslashes are data (ESCAPE_UNENCLOSED_FIELD = NONE), trailing space kept, country ''
    f"U,{MAX_LSN},1,4294967295,2099-12-31T23:59:59.999999Z,,2,X2,S2,C:\\temp\\new ,2,2099-12-31 23:59:59,0.01,1,\"\"",
    # an unchanged TOAST value: empty field, named in _unchanged
    f'U,{MAX_LSN},2,4294967295,2099-12-31T23:59:59.999999Z,"[""description""]",3,X3,S3,,3,2099-12-31 23:59:59,0.10,2,UK',
    # a quoted field with a line break, a comma and quotes
    f'I,{MAX_LSN},3,4294967295,2099-12-31T23:59:59.999999Z,,4,X4,S4,"line one\nline two, with ""quotes""",4,2099-12-31 23:59:59,9.99,3,UK',
    # the empty string (a short workload run may not set one)
    f'U,{MAX_LSN},4,4294967295,2099-12-31T23:59:59.999999Z,,5,X5,S5,"",5,2099-12-31 23:59:59,5.00,4,UK',
    f"D,{MAX_LSN},5,4294967295,2099-12-31T23:59:59.999999Z,,6,,,,,,,,",
    f"T,{MAX_LSN},6,4294967295,2099-12-31T23:59:59.999999Z,,,,,,,,,,",
    # What a typed RAW table dropped whole files for: NaN into NUMBER(10,2), a timestamp
    # 'infinity' and a BC one, a year past 9999, a 1 MiB text. RAW is text: all of it loads.
    f"I,{MAX_LSN},7,4294967295,2099-12-31T23:59:59.999999Z,,7,X7,S7,{'x' * 2**20},7,infinity,NaN,,UK",
    f"I,{MAX_LSN},8,4294967295,2099-12-31T23:59:59.999999Z,,8,X8,S8,bc,8,0044-03-15 10:00:00 BC,-Infinity,,UK",
    f"I,{MAX_LSN},9,4294967295,2099-12-31T23:59:59.999999Z,,9,X9,S9,far,9,294276-12-31T23:59:59,1e400,,UK",
]


# --- the scripts --------------------------------------------------------------------------------


def statements_of(name: str) -> list[exp.Expr]:
    parsed = sqlglot.parse((SNOWFLAKE / name).read_text(), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
    return [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]


def creates(name: str, kind: str) -> list[exp.Create]:
    return [
        s for s in statements_of(name) if isinstance(s, exp.Create) and str(s.args.get("kind")).upper() == kind
    ]


def pipe_copy() -> exp.Copy:
    """The COPY inside 006's CREATE PIPE (sqlglot leaves a pipe's body unparsed)."""
    (command,) = [
        s for s in statements_of("006_pipe.sql") if isinstance(s, exp.Command) and s.name.lower() == "create"
    ]
    text = re.sub(r"--[^\n]*", " ", f"{command.this} {command.expression}")
    match = re.search(r"\bas\s+(copy\s+into\b.*)$", text, flags=re.IGNORECASE | re.DOTALL)
    assert match, "006_pipe.sql: CREATE PIPE ... AS COPY INTO not found"
    return sqlglot.parse_one(match.group(1), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)


def option_value(node: exp.Expr | None) -> object:
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else int(node.this)
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, (exp.Var, exp.Column, exp.Identifier)):
        return node.name.upper()
    if isinstance(node, exp.Tuple):
        return [option_value(e) for e in node.expressions]
    if isinstance(node, exp.Paren):
        return [option_value(node.this)]
    raise AssertionError(f"unexpected option value {node!r}")


def property_list(create: exp.Create) -> list[exp.Expr]:
    return create.args["properties"].expressions


# --- the derivation -----------------------------------------------------------------------------


@dataclasses.dataclass
class Derived:
    """One statement as fakesnow runs it, with where it came from and what was changed."""

    source: str
    sql: str
    changes: list[str]


def derive_setup(stage_url: str) -> list[Derived]:
    derived = []
    for create in creates("001_database.sql", "DATABASE") + creates("001_database.sql", "SCHEMA"):
        derived.append(Derived("001_database.sql", create.sql("snowflake"), []))

    (file_format,) = [f for f in creates("003_file_format.sql", "FILE FORMAT") if f.this.name.upper() == "PGCDC_CSV"]
    file_format = file_format.copy()
    changes = []
    for prop in list(property_list(file_format)):
        if isinstance(prop, exp.SchemaCommentProperty):
            continue
        name, value = prop.name.upper(), option_value(prop.args.get("value"))
        if name == "PARSE_HEADER":
            assert value is True
            prop.replace(exp.Property(this=exp.var("skip_header"), value=exp.Literal.number(1)))
            changes.append("PARSE_HEADER = TRUE -> SKIP_HEADER = 1")
        elif name in DROPPED_FORMAT_OPTIONS:
            assert value in DROPPED_FORMAT_OPTIONS[name], (
                f"003_file_format.sql: {name} = {value!r}; the fakesnow load can only stand for "
                f"{sorted(map(repr, DROPPED_FORMAT_OPTIONS[name]))}: check what that option means for "
                "pgcdc's files and update DROPPED_FORMAT_OPTIONS"
            )
            prop.pop()
            changes.append(f"{name} dropped")
        else:
            assert name in KEPT_FORMAT_OPTIONS, (
                f"003_file_format.sql: new option {name}; decide whether fakesnow can run it "
                "(KEPT_FORMAT_OPTIONS) or it is a no-op for pgcdc's files (DROPPED_FORMAT_OPTIONS)"
            )
    derived.append(Derived("003_file_format.sql", file_format.sql("snowflake"), changes))

    (stage,) = creates("004_stage.sql", "STAGE")
    stage = stage.copy()
    changes = []
    for prop in list(property_list(stage)):
        if isinstance(prop, exp.Property) and prop.name.upper() == "URL":
            prop.set("value", exp.Literal.string(stage_url))
            changes.append(f"URL -> {stage_url}")
        elif isinstance(prop, exp.Property) and prop.name.upper() in ("STORAGE_INTEGRATION", "DIRECTORY"):
            prop.pop()
            changes.append(f"{prop.name.upper()} dropped")
    derived.append(Derived("004_stage.sql", stage.sql("snowflake"), changes))

    (table,) = creates("005_raw_tables.sql", "TABLE")
    table = table.copy()
    metadata_columns = set(include_metadata_targets(pipe_copy()))
    changes = []
    for column in list(table.this.expressions):
        if isinstance(column, exp.ColumnDef) and column.name.upper() in metadata_columns:
            column.pop()
            changes.append(f"column {column.name.upper()} dropped")
    derived.append(Derived("005_raw_tables.sql", table.sql("snowflake"), changes))
    return derived


def include_metadata_targets(copy: exp.Copy) -> list[str]:
    (param,) = [p for p in copy.args["params"] if p.name.upper() == "INCLUDE_METADATA"]
    return [eq.this.name.upper() for eq in param.expression.expressions]


def derive_copy(stage_root: Path) -> tuple[Derived, list[str]]:
    """The pipe's COPY with PATTERN applied here (-> FILES) and what fakesnow rejects removed.

    Returns the statement and the stage paths (relative to the stage's root) it loads.
    """
    copy = pipe_copy().copy()
    source = copy.args["files"][0].this.name  # @db.schema.stage/folder/
    folder = source.split("/", 1)[1]
    changes = []
    selected: list[str] = []
    for param in list(copy.args["params"]):
        name = param.name.upper()
        if name == "PATTERN":
            pattern = re.compile(param.expression.this)
            # Snowflake lists the stage folder recursively and keeps the paths the regex matches.
            for path in sorted((stage_root / folder).rglob("*")):
                relative = path.relative_to(stage_root).as_posix()
                if path.is_file() and pattern.fullmatch(relative):
                    selected.append(relative)
            files = [p.removeprefix(folder) for p in selected]
            param.replace(
                exp.CopyParameter(
                    this=exp.var("FILES"), expression=exp.Tuple(expressions=[exp.Literal.string(f) for f in files])
                )
            )
            changes.append(f"PATTERN -> FILES ({len(files)} files the PATTERN selects)")
        elif name in DROPPED_COPY_OPTIONS:
            param.pop()
            changes.append(f"{name} dropped")
    return Derived("006_pipe.sql", copy.sql("snowflake"), changes), selected


# --- expected values: pgcdc's CSV with the quoting kept -----------------------------------------


def read_records(path: Path) -> tuple[list[str], list[list[str | None]]]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    header, *rows = parse_csv(text)
    return [h.upper() for h in header], rows


# --- the run ------------------------------------------------------------------------------------


@dataclasses.dataclass
class SnowflakeReadCSV(fakesnow.copy_into.ReadCSV):
    """fakesnow's read_csv, with DuckDB's defaults set to what Snowflake does (module docstring)."""

    keep_quoted_empty: bool = True

    def read_expression(self, url: str) -> exp.Expr:
        read = super().read_expression(url)
        # dt=.../hour=... folders are not columns of the file.
        read.append("expressions", self.make_eq("hive_partitioning", False))
        if self.keep_quoted_empty:
            read.append("expressions", self.make_eq("allow_quoted_nulls", False))
        return read


def snowflake_like(handle_csv):
    """Wraps fakesnow's FILE_FORMAT -> read_csv translation to return a SnowflakeReadCSV."""

    def handle(options: dict) -> fakesnow.copy_into.ReadCSV:
        read = handle_csv(options)
        # NULL_IF = ('') would match a quoted "" too: then DuckDB's default is the right one.
        keep = bool(read.quote) and "" not in options.get("NULL_IF", ["\\N"])
        return SnowflakeReadCSV(**dataclasses.asdict(read), keep_quoted_empty=keep)

    return handle


@pytest.fixture(scope="module")
def run(tmp_path_factory, fixture_dir):
    """Sets up fakesnow from the scripts, loads the fixture, loads it again; returns all of it."""
    stage_root = tmp_path_factory.mktemp("snowflake") / "stage"
    shutil.copytree(fixture_dir / "stage", stage_root)
    folder = stage_root / "public.ecommerce_sales"
    # What must never load: pgcdc's bookkeeping and anything that is not a change file.
    (stage_root / "_pgcdc" / "pgcdc").mkdir(parents=True, exist_ok=True)
    (stage_root / "_pgcdc" / "pgcdc" / ".write-probe").write_text("probe")
    (folder / "dt=2099-12-31" / "hour=23").mkdir(parents=True)
    (folder / "dt=2099-12-31" / "hour=23" / "notes.txt").write_text("not, a, change, file\n")
    header = gzip.decompress(next(folder.glob("dt=*/hour=*/*.csv.gz")).read_bytes()).decode().split("\n", 1)[0]
    (folder / EDGE_FILE).write_bytes(gzip.compress(("\n".join([header, *EDGE_ROWS]) + "\n").encode()))

    setup = derive_setup(stage_root.as_uri() + "/")
    copy, selected = derive_copy(stage_root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fakesnow.copy_into, "handle_csv", snowflake_like(fakesnow.copy_into.handle_csv))
        with fakesnow.patch():
            conn = snowflake.connector.connect()
            cur = conn.cursor()
            for statement in setup:
                cur.execute(statement.sql)
            cur.execute(copy.sql)
            first = cur.fetchall()
            cur.execute(copy.sql)
            second = cur.fetchall()
            cur.execute(
                f"select _op, _commit_lsn, _seq, _xid, _commit_ts, _unchanged, id, invoice_no, stock_code, "
                f"description, quantity, invoice_date, unit_price, customer_id, country from {RAW_TABLE}"
            )
            rows = cur.fetchall()
            conn.close()

    expected = {}
    for path in selected:
        file_header, records = read_records(stage_root / path)
        for record in records:
            assert len(record) == len(file_header), (path, record)
            expected[path, len(expected)] = dict(zip(file_header, record))
    return dict(setup=setup, copy=copy, selected=selected, first=first, second=second, rows=rows,
                expected=list(expected.values()), stage_root=stage_root, fixture_stage=fixture_dir / "stage")


def by_key(rows: list[dict]) -> dict[tuple[int, int], dict]:
    keyed = {(int(r["_COMMIT_LSN"]), int(r["_SEQ"])): r for r in rows}
    assert len(keyed) == len(rows), "(_commit_lsn, _seq) must be unique"
    return keyed


COLUMNS = ["_OP", "_COMMIT_LSN", "_SEQ", "_XID", "_COMMIT_TS", "_UNCHANGED", "ID", "INVOICE_NO", "STOCK_CODE",
           "DESCRIPTION", "QUANTITY", "INVOICE_DATE", "UNIT_PRICE", "CUSTOMER_ID", "COUNTRY"]  # fmt: skip


def loaded(run) -> list[dict]:
    return [dict(zip(COLUMNS, row)) for row in run["rows"]]


# --- the checks ---------------------------------------------------------------------------------


def test_derived_statements_change_only_what_fakesnow_cannot_run(run):
    changes = {d.source: d.changes for d in run["setup"] + [run["copy"]]}
    assert changes["001_database.sql"] == []
    assert "PARSE_HEADER = TRUE -> SKIP_HEADER = 1" in changes["003_file_format.sql"]
    assert set(changes["004_stage.sql"]) == {
        f"URL -> {run['stage_root'].as_uri()}/", "STORAGE_INTEGRATION dropped", "DIRECTORY dropped"}
    assert changes["005_raw_tables.sql"] == [f"column {c} dropped" for c in include_metadata_targets(pipe_copy())]
    assert sorted(changes["006_pipe.sql"]) == sorted(
        [f"PATTERN -> FILES ({len(run['selected'])} files the PATTERN selects)"]
        + [f"{o} dropped" for o in DROPPED_COPY_OPTIONS]
    )
    # What stays is the real thing: the file format by name, matching by column name.
    assert "MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE" in run["copy"].sql.upper().replace(" ", "")
    assert "FORMAT_NAME='PGCDC.RAW.PGCDC_CSV'" in run["copy"].sql.upper().replace(" ", "")


def test_pattern_selects_the_change_files_and_nothing_else(run):
    stage = run["fixture_stage"]
    real = sorted(p.relative_to(stage).as_posix() for p in stage.glob("public.ecommerce_sales/**/*.csv.gz"))
    assert run["selected"] == sorted(real + [f"public.ecommerce_sales/{EDGE_FILE}"])


def test_first_copy_loads_every_row_of_every_file(run):
    statuses = {row[1] for row in run["first"]}
    assert statuses == {"LOADED"}, run["first"]
    assert len(run["first"]) == len(run["selected"])
    assert sum(row[3] for row in run["first"]) == len(run["expected"])
    assert len(run["rows"]) == len(run["expected"])
    fixture_rows = [r for r in run["expected"] if int(r["_COMMIT_LSN"]) != MAX_LSN]
    assert len(fixture_rows) == len(run["expected"]) - len(EDGE_ROWS) > 1000


def test_second_copy_loads_nothing(run):
    """Load history: a file already loaded into the table is skipped."""
    assert {row[1] for row in run["second"]} == {"LOAD_SKIPPED"}, run["second"]
    assert sum(row[3] for row in run["second"]) == 0
    assert len(run["second"]) == len(run["selected"])


def test_null_and_empty_string_stay_distinct(run):
    expected, table = by_key(run["expected"]), by_key(loaded(run))
    for column in ["DESCRIPTION", "COUNTRY", "INVOICE_NO", "_UNCHANGED"]:
        nulls = {k for k, r in expected.items() if r[column] is None}
        empties = {k for k, r in expected.items() if r[column] == ""}
        assert {k for k, r in table.items() if r[column] is None} == nulls, column
        assert {k for k, r in table.items() if r[column] == ""} == empties, column
    # Both occur in rows that carry a description: the sample data has NULL descriptions, the
    # workload sets some to '' (and to NULL), and the edge file has one of each.
    rows = [r for r in expected.values() if r["_OP"] in {"I", "U", "R"}]
    assert any(r["DESCRIPTION"] is None for r in rows if r["_COMMIT_LSN"] != str(MAX_LSN))
    assert any(r["DESCRIPTION"] == "" for r in rows)


def test_every_value_matches_the_files(run):
    expected, table = by_key(run["expected"]), by_key(loaded(run))
    assert table.keys() == expected.keys()

    def number(text):
        return None if text is None else decimal.Decimal(text)

    def timestamp(text):
        return None if text is None else datetime.datetime.fromisoformat(text)

    mismatches = []
    for key, want in expected.items():
        got = table[key]
        for column in COLUMNS:
            w, g = want[column], got[column]
            # The value columns are text, exactly the file's; only the metadata is typed.
            if column == "_COMMIT_TS":
                w = timestamp(w)
                g = g if g is None else g.astimezone(datetime.UTC)
            elif column in {"_COMMIT_LSN", "_SEQ", "_XID"}:
                w, g = number(w), None if g is None else decimal.Decimal(str(g))
            if w != g:
                mismatches.append((key, column, w, g))
    assert mismatches == [], mismatches[:10]


def test_lsns_are_exact_integers(run):
    table = loaded(run)
    lsns = {int(decimal.Decimal(str(r["_COMMIT_LSN"]))) for r in table}
    assert MAX_LSN in lsns, "2^64-1 must survive NUMBER(20,0) exactly"
    # A few LSNs read straight from the fixture's file names (first LSN of each file).
    for path in run["selected"]:
        if "FFFFFFFFFFFFFFFF" not in path:
            first = int(Path(path).name.split("-")[0], 16)
            assert first in lsns, path


def test_edge_values_survive(run):
    rows = {int(r["_SEQ"]): r for r in loaded(run) if int(decimal.Decimal(str(r["_COMMIT_LSN"]))) == MAX_LSN}
    assert rows[0]["DESCRIPTION"] == "\\N", "the text \\N is data, not NULL"
    assert rows[0]["CUSTOMER_ID"] is None
    assert rows[1]["DESCRIPTION"] == "C:\\temp\\new ", "backslashes and trailing spaces are data"
    assert rows[1]["COUNTRY"] == ""
    assert rows[2]["DESCRIPTION"] is None and rows[2]["_UNCHANGED"] == '["description"]'
    assert rows[3]["DESCRIPTION"] == 'line one\nline two, with "quotes"'
    assert rows[4]["DESCRIPTION"] == ""
    assert rows[5]["_OP"] == "D" and rows[5]["ID"] == "6" and rows[5]["INVOICE_NO"] is None
    assert rows[6]["_OP"] == "T" and rows[6]["ID"] is None
    assert (rows[7]["UNIT_PRICE"], rows[7]["INVOICE_DATE"], len(rows[7]["DESCRIPTION"])) == ("NaN", "infinity", 2**20)
    assert (rows[8]["UNIT_PRICE"], rows[8]["INVOICE_DATE"]) == ("-Infinity", "0044-03-15 10:00:00 BC")
    assert (rows[9]["UNIT_PRICE"], rows[9]["INVOICE_DATE"]) == ("1e400", "294276-12-31T23:59:59")


def test_fakesnow_still_needs_the_snowflake_like_reader(tmp_path):
    """Why the load uses SnowflakeReadCSV: fakesnow's own read_csv differs from Snowflake in two
    ways that matter for pgcdc's files. When an assertion here fails, fakesnow has changed: drop
    the corresponding setting from SnowflakeReadCSV."""
    import duckdb

    folder = tmp_path / "dt=2099-12-31" / "hour=23"
    folder.mkdir(parents=True)
    path = folder / "f.csv"
    path.write_text(f'a,b\n{MAX_LSN},""\n1,\n')
    (file_format,) = [d for d in derive_setup(tmp_path.as_uri() + "/") if d.source == "003_file_format.sql"]
    options = fakesnow.transforms.options.parse_options(
        sqlglot.parse_one(file_format.sql, read="snowflake").args["properties"].expressions
    )
    stock = fakesnow.copy_into.handle_csv({k: v for k, v in options.items() if k != "COMMENT"})
    ours = snowflake_like(fakesnow.copy_into.handle_csv)({k: v for k, v in options.items() if k != "COMMENT"})

    def read(reader):
        return duckdb.sql("select * from " + reader.read_expression(str(path)).sql("duckdb")).fetchall()

    stock_rows = read(stock)
    assert len(stock_rows[0]) == 4, "hive partitioning: dt and hour became columns"
    assert stock_rows[0][1] is None, 'allow_quoted_nulls: "" read as NULL'
    assert read(ours) == [(MAX_LSN, ""), (1, None)]


def test_s3_notification_sends_only_the_tables_change_files(monkeypatch, fixture_dir):
    """aws/s3_notification.json, applied to an S3 API (moto), queues exactly the S3 events the
    pipe must see: the table's change files, not pgcdc's bookkeeping or other tables."""
    import json
    import urllib.parse

    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    prefix, bucket = "prod/shop", "pgcdc-notification-test"
    stage = fixture_dir / "stage"
    change_files = sorted(f"{prefix}/{p.relative_to(stage).as_posix()}" for p in stage.glob("public.ecommerce_sales/**/*.csv.gz"))
    others = [
        f"{prefix}/_pgcdc/pgcdc/checkpoint.json",
        f"{prefix}/_pgcdc/pgcdc/.write-probe",
        f"{prefix}/public.other_table/dt=2026-11-24/hour=22/00000000019B57D8-00000000019B57D8.csv.gz",
        f"{prefix}/public.ecommerce_sales/dt=2026-11-24/hour=22/notes.txt",
    ]
    with moto.mock_aws():
        sqs = boto3.client("sqs")
        queue = sqs.create_queue(QueueName="sf-snowpipe-test")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        text = (SNOWFLAKE / "aws" / "s3_notification.json").read_text()
        config = json.loads(text.replace("<notification_channel>", queue_arn).replace("<prefix>", prefix))
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        for key in change_files + others:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        events = []
        while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                body = json.loads(message["Body"])
                events += [
                    (r["eventName"], urllib.parse.unquote_plus(r["s3"]["object"]["key"])) for r in body.get("Records", [])
                ]
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(events) == [("ObjectCreated:Put", key) for key in change_files]

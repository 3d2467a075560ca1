"""Static checks of the Snowflake scripts in snowflake/ (no Snowflake account needed).

Every statement of every script must parse with sqlglot's Snowflake dialect. sqlglot turns what
it cannot parse into a generic `Command` that accepts anything, so a Command passes here only
when it has one of the few shapes listed in COMMAND_SHAPES, and the statements that matter (file
format, stage, table, the COPY inside the pipe and the task) must be real syntax-tree nodes whose
options are checked one by one. The RAW table's columns are compared with the header of a file
pgcdc really wrote, so the DDL cannot drift from pgcdc's format. The AWS JSON documents must
parse, agree with the SQL and use only the documented placeholders.

The executable half of the loading path is in test_snowflake_load.py.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

REPO = Path(__file__).resolve().parents[2]
SNOWFLAKE = REPO / "snowflake"
SCRIPTS = sorted(SNOWFLAKE.glob("[0-9][0-9][0-9]_*.sql"))
AWS = SNOWFLAKE / "aws"
# sqlglot warns for every statement it keeps as a Command; COMMAND_SHAPES checks those instead.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Object names the scripts create and refer to (dbt/profiles.yml uses the database, the
# TRANSFORMER role and the TRANSFORMING warehouse).
DATABASE = "PGCDC"
FILE_FORMAT = "PGCDC.RAW.PGCDC_CSV"
STAGE = "PGCDC.RAW.PGCDC_STAGE"
RAW_TABLE = "PGCDC.RAW.ECOMMERCE_SALES_CHANGES"
INTEGRATION = "PGCDC_S3"
TABLE_FOLDER = "public.ecommerce_sales/"

# What INCLUDE_METADATA must fill, in the order the RAW table ends with them.
LOAD_METADATA = {
    "_FILE_NAME": "METADATA$FILENAME",
    "_FILE_ROW_NUMBER": "METADATA$FILE_ROW_NUMBER",
    "_LOADED_AT": "METADATA$START_SCAN_TIME",
}

# Account-specific values an administrator fills in (snowflake/README.md, "Placeholders").
PLACEHOLDERS = {
    "<bucket>",
    "<prefix>",
    "<aws_account_id>",
    "<iam_role_name>",
    "<notification_channel>",
    "<STORAGE_AWS_IAM_USER_ARN>",
    "<STORAGE_AWS_EXTERNAL_ID>",
    # Optional, in 001's closing comment: who gets which role.
    "<dbt_user>",
    "<analyst_user>",
    "<admin_user>",
}

# The only statements allowed to come back from sqlglot as a generic Command (it has no node
# for them); anything else parsed as a Command is a typo sqlglot swallowed.
COMMAND_SHAPES = [
    r"create role if not exists \w+ comment = '[^']*'",
    r"grant role \w+ to role \w+",
    r"grant select on (all|future) (tables|views) in schema pgcdc\.(raw|dev) to role \w+",
    r"create pipe if not exists pgcdc\.raw\.\w+ .* as copy into .*",
    r"create task if not exists pgcdc\.raw\.\w+ .* as copy into .*",
    r"alter task pgcdc\.raw\.\w+ resume",
    r"show pipes like '\w+' in schema pgcdc\.raw",
]
# ... and in the examples of snowflake/README.md.
README_COMMAND_SHAPES = [
    r"alter pipe pgcdc\.raw\.\w+ refresh( prefix = '[^']*')?",
    r"execute task pgcdc\.raw\.\w+",
    r"desc pipe pgcdc\.raw\.\w+",
]


# --- helpers ------------------------------------------------------------------------------------


def fixture_files(fixture_dir: Path) -> list[Path]:
    """The change files of a real pgcdc run (conftest.py's fixture_dir)."""
    files = sorted((fixture_dir / "stage" / TABLE_FOLDER).glob("dt=*/hour=*/*.csv*"))
    assert files, f"the fixture has no change files under {TABLE_FOLDER}"
    return files


def header_of(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.readline().rstrip("\r\n").split(",")


def parse_script(path: Path) -> list[exp.Expr]:
    """Every statement of a script; comment-only tails are dropped."""
    statements = sqlglot.parse(
        path.read_text(), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE
    )
    return [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]


def script(name: str) -> list[exp.Expr]:
    return parse_script(SNOWFLAKE / name)


def command_text(statement: exp.Command) -> str:
    """A Command's original text, whitespace collapsed, comments removed."""
    text = f"{statement.this} {statement.expression}"
    text = re.sub(r"--[^\n]*", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def creates(statements: list[exp.Expr], kind: str) -> list[exp.Create]:
    return [s for s in statements if isinstance(s, exp.Create) and str(s.args.get("kind")).upper() == kind]


def only(items: list, what: str):
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}"
    return items[0]


def name_of(node: exp.Expr) -> str:
    """The (qualified) name a CREATE creates or a COPY loads, upper-case."""
    if isinstance(node, exp.Create) and isinstance(node.this, exp.Identifier):
        return node.this.name.upper()  # warehouses, integrations
    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    return ".".join(part.name for part in table.parts).upper()


def sql_of(node: exp.Expr) -> str:
    """Snowflake SQL of a node without the comments sqlglot attaches to it, upper-case."""
    return node.sql("snowflake", comments=False).upper()


def options(create: exp.Create) -> dict[str, exp.Expr]:
    """CREATE ... name = value properties, by upper-case name."""
    found = {}
    for prop in create.args["properties"].expressions:
        if isinstance(prop, exp.FileFormatProperty):
            found["FILE_FORMAT"] = prop
        elif isinstance(prop, exp.SchemaCommentProperty):
            found["COMMENT"] = prop.this
        elif isinstance(prop, exp.Property):
            found[prop.name.upper()] = prop.args.get("value")
    return found


def value(node: exp.Expr | None) -> object:
    """A property value as Python: str (upper-cased unless a string literal), bool, int, list."""
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else int(node.this)
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Tuple):
        return [value(e) for e in node.expressions]
    if isinstance(node, exp.Paren):
        return [value(node.this)]
    if isinstance(node, (exp.Var, exp.Column, exp.Identifier)):
        return node.name.upper()
    raise AssertionError(f"unexpected option value {node!r}")


def body_copy(statements: list[exp.Expr], kind: str) -> tuple[str, exp.Copy]:
    """(header, COPY) of the one CREATE PIPE or CREATE TASK, whose body sqlglot leaves unparsed."""
    command = only(
        [s for s in statements if isinstance(s, exp.Command) and command_text(s).startswith(f"create {kind} ")],
        f"create {kind}",
    )
    text = command_text(command)
    match = re.search(r"\bas (copy into .*)$", text, flags=re.IGNORECASE)
    assert match, f"create {kind} has no `as copy into ...` body: {text}"
    copy = sqlglot.parse_one(match.group(1), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(copy, exp.Copy), f"the body of create {kind} is a {type(copy).__name__}, not a COPY"
    return text[: match.start()], copy


def copy_params(copy: exp.Copy) -> dict[str, exp.CopyParameter]:
    return {p.name.upper(): p for p in copy.args.get("params", [])}


def copy_source(copy: exp.Copy) -> str:
    return copy.args["files"][0].this.name


def include_metadata(copy: exp.Copy) -> dict[str, str]:
    param = copy_params(copy)["INCLUDE_METADATA"]
    pairs = param.expression.expressions if isinstance(param.expression, exp.Tuple) else [param.expression]
    return {eq.this.name.upper(): eq.expression.name.upper() for eq in pairs}


def copy_pattern(copy: exp.Copy) -> str:
    return copy_params(copy)["PATTERN"].expression.this


def raw_table_columns() -> list[tuple[str, exp.DataType]]:
    table = only([c for c in creates(script("005_raw_tables.sql"), "TABLE") if name_of(c) == RAW_TABLE], RAW_TABLE)
    return [(c.name.upper(), c.args["kind"]) for c in table.this.expressions if isinstance(c, exp.ColumnDef)]


def stage_url() -> str:
    stage = only(creates(script("004_stage.sql"), "STAGE"), "stage")
    return value(options(stage)["URL"])


def placeholders_in(text: str) -> set[str]:
    return set(re.findall(r"<[A-Za-z_]+>", text))


# --- every script -------------------------------------------------------------------------------


def test_scripts_are_numbered_in_order():
    assert [p.name[:3] for p in SCRIPTS] == [f"{i:03d}" for i in range(1, 8)], [p.name for p in SCRIPTS]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_statement_parses(path: Path):
    statements = parse_script(path)
    assert statements, f"{path.name} has no statements"
    for statement in statements:
        if isinstance(statement, exp.Command):
            text = command_text(statement)
            assert any(re.fullmatch(shape, text, flags=re.IGNORECASE | re.DOTALL) for shape in COMMAND_SHAPES), (
                f"{path.name}: sqlglot could not parse this statement and it is not one of the known "
                f"Snowflake statements sqlglot has no node for (a typo?): {text}"
            )


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_rerunning_is_safe(path: Path):
    """Every CREATE is IF NOT EXISTS: a second run changes nothing and destroys nothing."""
    for statement in parse_script(path):
        if isinstance(statement, exp.Create):
            assert statement.args.get("exists") and not statement.args.get("replace"), (
                f"{path.name}: {statement.sql('snowflake')[:80]} must be CREATE ... IF NOT EXISTS"
            )
        elif isinstance(statement, exp.Command) and command_text(statement).lower().startswith("create"):
            assert " if not exists " in command_text(statement).lower(), command_text(statement)[:80]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_only_documented_placeholders(path: Path):
    readme = (SNOWFLAKE / "README.md").read_text()
    found = placeholders_in(path.read_text())
    assert found <= PLACEHOLDERS, f"{path.name}: undocumented placeholders {found - PLACEHOLDERS}"
    for placeholder in found:
        assert placeholder in readme, f"snowflake/README.md does not explain {placeholder}"


def test_readme_sql_examples_parse():
    readme = (SNOWFLAKE / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        for statement in sqlglot.parse(block, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE):
            if isinstance(statement, exp.Command):
                text = command_text(statement)
                assert any(
                    re.fullmatch(shape, text, flags=re.IGNORECASE) for shape in COMMAND_SHAPES + README_COMMAND_SHAPES
                ), f"README.md: not a statement sqlglot knows, nor a known Command shape: {text}"


# --- 001 database, schemas, warehouses, roles ---------------------------------------------------


def test_database_schemas_and_warehouses():
    statements = script("001_database.sql")
    assert [name_of(c) for c in creates(statements, "DATABASE")] == [DATABASE]
    assert {name_of(c) for c in creates(statements, "SCHEMA")} == {"PGCDC.RAW", "PGCDC.DEV"}
    warehouses = creates(statements, "WAREHOUSE")
    assert {name_of(w) for w in warehouses} == {"LOADING", "TRANSFORMING"}
    for warehouse in warehouses:
        props = options(warehouse)
        assert value(props["WAREHOUSE_SIZE"]) == "XSMALL"
        assert 0 < value(props["AUTO_SUSPEND"]) <= 300
        assert value(props["AUTO_RESUME"]) is True
        assert value(props["INITIALLY_SUSPENDED"]) is True


def test_roles_and_grants():
    statements = script("001_database.sql")
    commands = [command_text(s).lower() for s in statements if isinstance(s, exp.Command)]
    roles = {m.group(1) for c in commands if (m := re.match(r"create role if not exists (\w+)", c))}
    assert roles == {"loader", "transformer", "reader"}
    grants = [sql_of(s) for s in statements if isinstance(s, exp.Grant)]
    assert "GRANT USAGE, OPERATE ON WAREHOUSE LOADING TO ROLE LOADER" in grants
    assert "GRANT USAGE ON WAREHOUSE TRANSFORMING TO ROLE TRANSFORMER" in grants
    assert any(g.startswith("GRANT CREATE FILE FORMAT, CREATE STAGE, CREATE TABLE, CREATE PIPE, CREATE TASK ON SCHEMA PGCDC.RAW TO ROLE LOADER") for g in grants)
    assert "grant select on future tables in schema pgcdc.raw to role transformer" in commands
    assert "grant select on future tables in schema pgcdc.dev to role reader" in commands
    # The reader never sees RAW.
    assert not any("pgcdc.raw" in c and "role reader" in c for c in commands)
    assert not any("PGCDC.RAW" in g and "ROLE READER" in g for g in grants)


# --- 002 storage integration --------------------------------------------------------------------


def test_storage_integration():
    statements = script("002_storage_integration.sql")
    integration = only(creates(statements, "STORAGE INTEGRATION"), "storage integration")
    assert name_of(integration) == INTEGRATION
    props = options(integration)
    assert value(props["TYPE"]) == "EXTERNAL_STAGE"
    assert value(props["STORAGE_PROVIDER"]) == "S3"
    assert value(props["ENABLED"]) is True
    assert re.fullmatch(r"arn:aws:iam::<aws_account_id>:role/<iam_role_name>", value(props["STORAGE_AWS_ROLE_ARN"]))
    assert value(props["STORAGE_ALLOWED_LOCATIONS"]) == ["s3://<bucket>/<prefix>/"]
    assert stage_url() == "s3://<bucket>/<prefix>/", "the stage must sit on the allowed location"
    assert "GRANT USAGE ON INTEGRATION PGCDC_S3 TO ROLE LOADER" in [
        sql_of(s) for s in statements if isinstance(s, exp.Grant)
    ]
    assert any(isinstance(s, exp.Describe) and "PGCDC_S3" in sql_of(s) for s in statements)


# --- 003 file format ----------------------------------------------------------------------------


def file_format_options() -> dict[str, object]:
    file_format = only([f for f in creates(script("003_file_format.sql"), "FILE FORMAT") if name_of(f) == FILE_FORMAT],
                       "file format")
    assert name_of(file_format) == FILE_FORMAT
    return {k: value(v) for k, v in options(file_format).items()}


def test_file_format_reads_pgcdc_files_exactly():
    opts = file_format_options()
    assert opts["TYPE"] == "CSV"
    assert opts["COMPRESSION"] in {"AUTO", "GZIP"}
    # Columns by name from the header; PARSE_HEADER and SKIP_HEADER are mutually exclusive.
    assert opts["PARSE_HEADER"] is True
    assert "SKIP_HEADER" not in opts
    assert opts["FIELD_DELIMITER"] == ","
    # NULL is an unquoted empty field, '' is "": only the empty-field rule may produce NULL.
    assert opts["FIELD_OPTIONALLY_ENCLOSED_BY"] == '"'
    assert opts["EMPTY_FIELD_AS_NULL"] is True
    assert opts["NULL_IF"] == [], "NULL_IF must be () so neither '' nor the text \\N becomes NULL"
    # Values are PostgreSQL's text output byte for byte: no escapes, no trimming.
    assert opts["ESCAPE_UNENCLOSED_FIELD"] == "NONE"
    assert opts.get("ESCAPE", "NONE") == "NONE"
    assert opts.get("TRIM_SPACE", False) is False
    assert opts.get("MULTI_LINE", True) is True
    assert opts["ENCODING"] == "UTF8"
    # Needed by INCLUDE_METADATA on CSV and by schema evolution.
    assert opts["ERROR_ON_COLUMN_COUNT_MISMATCH"] is False


# --- 004 stage ----------------------------------------------------------------------------------


def test_checks_parse_and_compare_the_stage_with_raw():
    statements = parse_script(SNOWFLAKE / "checks.sql")
    assert len(statements) == 3 and all(isinstance(s, exp.Select) for s in statements)
    text = (SNOWFLAKE / "checks.sql").read_text().upper()
    assert f"DIRECTORY(@{STAGE})" in text and RAW_TABLE in text and "COPY_HISTORY" in text


def test_stage_uses_the_integration_and_the_file_format():
    stage = only(creates(script("004_stage.sql"), "STAGE"), "stage")
    assert "DIRECTORY=(ENABLE = TRUE, AUTO_REFRESH = TRUE)" in sql_of(stage).replace("DIRECTORY =", "DIRECTORY=")
    grants = [sql_of(s) for s in script("004_stage.sql") if isinstance(s, exp.Grant)]
    assert "GRANT USAGE ON STAGE PGCDC.RAW.PGCDC_STAGE TO ROLE TRANSFORMER" in grants
    assert name_of(stage) == STAGE
    props = options(stage)
    assert value(props["STORAGE_INTEGRATION"]) == INTEGRATION
    assert value(props["URL"]).endswith("/"), "a stage URL without a trailing slash is a key prefix"
    file_format = props["FILE_FORMAT"]
    assert [value(p.args["value"]) for p in file_format.expressions if p.name.upper() == "FORMAT_NAME"] == [
        FILE_FORMAT.lower()
    ]


# --- 005 RAW table ------------------------------------------------------------------------------


def test_raw_columns_are_the_file_header_plus_load_metadata(fixture_dir):
    """The DDL cannot drift from what pgcdc writes: compare it with real files' headers."""
    headers = {tuple(header_of(f)) for f in fixture_files(fixture_dir)}
    assert len(headers) == 1, f"fixture files disagree on the header: {headers}"
    header = [name.upper() for name in headers.pop()]
    assert header[:6] == ["_OP", "_COMMIT_LSN", "_SEQ", "_XID", "_COMMIT_TS", "_UNCHANGED"]
    columns = [name for name, _ in raw_table_columns()]
    assert columns == header + list(LOAD_METADATA), (
        "RAW.ECOMMERCE_SALES_CHANGES must have the columns of pgcdc's header, in order, then "
        f"{list(LOAD_METADATA)}\n  table:  {columns}\n  header: {header}"
    )


def test_raw_column_types():
    types = {name: kind.sql("snowflake").upper() for name, kind in raw_table_columns()}
    assert types["_COMMIT_LSN"] == "DECIMAL(20, 0)", "an LSN up to 2^64-1 needs NUMBER(20,0)"
    assert types["_SEQ"] == "DECIMAL(20, 0)"
    assert types["_COMMIT_TS"].startswith(("TIMESTAMPTZ", "TIMESTAMPNTZ", "TIMESTAMP_NTZ", "TIMESTAMP"))
    assert types["_UNCHANGED"] in {"VARCHAR", "VARIANT"}
    assert types["_FILE_NAME"] == "VARCHAR"
    assert types["_LOADED_AT"].startswith("TIMESTAMPLTZ")
    # Every column of the source table is text: no value can fail the load; dbt casts.
    metadata = {"_OP", "_COMMIT_LSN", "_SEQ", "_XID", "_COMMIT_TS", "_UNCHANGED", *LOAD_METADATA}
    assert {name: kind for name, kind in types.items() if name not in metadata and kind != "VARCHAR"} == {}


def test_raw_table_evolves_its_schema():
    table = only([c for c in creates(script("005_raw_tables.sql"), "TABLE")], "table")
    assert value(options(table)["ENABLE_SCHEMA_EVOLUTION"]) is True


# --- 006 pipe and 007 task ----------------------------------------------------------------------


def check_copy(copy: exp.Copy) -> None:
    assert name_of(copy.this) == RAW_TABLE
    source = copy_source(copy)
    assert source.upper() == f"@{STAGE}/{TABLE_FOLDER}".upper(), source
    params = copy_params(copy)
    file_format = params["FILE_FORMAT"].expressions
    assert [value(p.args["value"]) for p in file_format if p.name.upper() == "FORMAT_NAME"] == [FILE_FORMAT.lower()]
    assert value(params["MATCH_BY_COLUMN_NAME"].expression) == "CASE_INSENSITIVE"
    assert include_metadata(copy) == LOAD_METADATA
    assert "PATTERN" in params
    # Not allowed in a pipe's COPY (and not wanted in the task's): ABORT_STATEMENT, FILES,
    # FORCE, PURGE, VALIDATION_MODE; a COPY transformation excludes MATCH_BY_COLUMN_NAME.
    # CONTINUE: a malformed line is skipped and counted (checks.sql, dbt's completeness), never
    # a whole file dropped silently (SKIP_FILE); ABORT_STATEMENT is not allowed in a pipe.
    assert value(params["ON_ERROR"].expression) == "CONTINUE"
    assert not {"FILES", "FORCE", "PURGE", "VALIDATION_MODE", "SIZE_LIMIT"} & params.keys()
    assert not isinstance(copy.args["files"][0], exp.Subquery)


def test_pipe_auto_ingests_with_the_copy():
    header, copy = body_copy(script("006_pipe.sql"), "pipe")
    assert re.search(r"\bauto_ingest = true\b", header, flags=re.IGNORECASE), header
    check_copy(copy)


def test_task_runs_the_same_copy_and_is_resumed():
    statements = script("007_task.sql")
    header, copy = body_copy(statements, "task")
    assert re.search(r"\bwarehouse = loading\b", header, flags=re.IGNORECASE), header
    assert re.search(r"\bschedule = '\d+ minute'", header, flags=re.IGNORECASE), header
    check_copy(copy)
    _, pipe_copy = body_copy(script("006_pipe.sql"), "pipe")
    assert sql_of(copy) == sql_of(pipe_copy), "the pipe and the task must run the same COPY"
    task = re.search(r"create task if not exists (\S+)", header, flags=re.IGNORECASE).group(1)
    commands = [command_text(s).lower() for s in statements if isinstance(s, exp.Command)]
    assert f"alter task {task.lower()} resume" in commands
    assert "GRANT EXECUTE TASK ON ACCOUNT TO ROLE LOADER" in [
        sql_of(s) for s in statements if isinstance(s, exp.Grant)
    ]


def test_pattern_selects_exactly_pgcdcs_data_files(fixture_dir):
    """Snowflake applies PATTERN to the file's path (a full match); so does Python's fullmatch."""
    _, copy = body_copy(script("006_pipe.sql"), "pipe")
    pattern = re.compile(copy_pattern(copy))
    stage = fixture_dir / "stage"
    real = [f.relative_to(stage).as_posix() for f in fixture_files(fixture_dir)]
    for path in real:
        assert pattern.fullmatch(path), f"PATTERN misses a file pgcdc wrote: {path}"
    wanted = [
        "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B3750000.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B374D848.part-0001-of-0003.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B374D848.part-0003-of-0003.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B3750000.csv",  # batch.format = "csv"
    ]
    unwanted = [
        "_pgcdc/pgcdc/checkpoint.json",
        "_pgcdc/pgcdc/.write-probe",
        "_pgcdc/pgcdc/spool/00000016B374D848-00000016B3750000.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/00000016B374D848-00000016B3750000.csv.gz.tmp",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/.00000016B374D848-00000016B3750000.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/00000016B374D848-00000016B3750000.csv.gz",
        "public.ecommerce_sales/dt=2024-03-05/hour=17/notes.csv.gz",
    ]
    assert [p for p in wanted if not pattern.fullmatch(p)] == []
    assert [p for p in unwanted if pattern.fullmatch(p)] == []


# --- AWS documents ------------------------------------------------------------------------------


def load_json(name: str) -> dict:
    path = AWS / name
    document = json.loads(path.read_text())
    found = placeholders_in(path.read_text())
    assert found <= PLACEHOLDERS, f"{name}: undocumented placeholders {found - PLACEHOLDERS}"
    return document


def as_list(item) -> list:
    return item if isinstance(item, list) else [item]


def test_iam_policy_reads_only_the_prefix():
    policy = load_json("iam_policy.json")
    assert policy["Version"] == "2012-10-17"
    allowed: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            allowed.setdefault(action, set()).update(as_list(statement["Resource"]))
    assert allowed["s3:GetObject"] == {"arn:aws:s3:::<bucket>/<prefix>/*"}
    assert allowed["s3:GetObjectVersion"] == {"arn:aws:s3:::<bucket>/<prefix>/*"}
    assert allowed["s3:ListBucket"] == {"arn:aws:s3:::<bucket>"}
    listing = next(s for s in policy["Statement"] if "s3:ListBucket" in as_list(s["Action"]))
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["<prefix>/*"]
    # Read-only: nothing that writes or deletes.
    assert not [a for a in allowed if re.search(r"Put|Delete|\*", a)]


def test_trust_policy_names_the_integrations_user_and_external_id():
    trust = load_json("trust_policy.json")
    (statement,) = trust["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {"AWS": "<STORAGE_AWS_IAM_USER_ARN>"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "<STORAGE_AWS_EXTERNAL_ID>"}}


def test_s3_notification_feeds_the_pipe_with_data_files_only():
    notification = load_json("s3_notification.json")
    assert set(notification) == {"QueueConfigurations"}
    (queue,) = notification["QueueConfigurations"]
    assert queue["QueueArn"] == "<notification_channel>"
    assert queue["Events"] == ["s3:ObjectCreated:*"]
    rules = {r["Name"]: r["Value"] for r in queue["Filter"]["Key"]["FilterRules"]}
    # The folder the pipe's COPY reads, below the stage's prefix.
    _, copy = body_copy(script("006_pipe.sql"), "pipe")
    stage_prefix = stage_url().removeprefix("s3://<bucket>/")
    folder = copy_source(copy).split("/", 1)[1]
    assert rules == {"prefix": stage_prefix + folder, "suffix": ".csv.gz"}

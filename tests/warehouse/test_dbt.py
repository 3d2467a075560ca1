"""dbt on DuckDB builds the warehouse models from files pgcdc really wrote, and the current state
it derives equals the source table row for row, value for value.

The fixture (conftest.fixture_dir) holds pgcdc's files and the source table's final state; its
scenario has a snapshot, inserts, updates, deletes, a TRUNCATE, a key change and an update that
left a TOASTed description unchanged. The stage is copied and one file is added again under
another name, as a replayed upload would be, so the dedupe has work to do.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE_DIR = "public.ecommerce_sales"
SOURCE_COLUMNS = [
    "id", "invoice_no", "stock_code", "description", "quantity",
    "invoice_date", "unit_price", "customer_id", "country",
]
CURRENT = "int_ecommerce_sales__current"


def run_dbt(venv_bin, work: Path, stage: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PGCDC_STAGE=str(stage),
        PGCDC_DUCKDB_PATH=str(work / "pgcdc.duckdb"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        NO_COLOR="1",
    )
    command = [
        str(venv_bin("dbt")), *args,
        "--project-dir", "dbt", "--profiles-dir", "dbt", "--target", "local", "--no-use-colors",
        "--target-path", str(work / "target"), "--log-path", str(work / "logs"),
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def read_csv_sql(path: Path, *options: str) -> str:
    # Text first, typed by the caller: "" stays the empty string, an unquoted empty field is NULL.
    return (
        f"read_csv('{path}', header=true, delim=',', quote='\"', escape='\"', "
        f"all_varchar=true, allow_quoted_nulls=false{''.join(', ' + o for o in options)})"
    )


def short(rows):
    """Rows for a failure message, long values (the TOAST description is 6 kB) cut short."""
    cut = lambda v: v[:40] + f"...({len(v)} chars)" if isinstance(v, str) and len(v) > 40 else v
    return [tuple(cut(v) for v in row) for row in rows]


def checksum(rows) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def build(tmp_path_factory, fixture_dir, venv_bin):
    """dbt build + dbt source freshness once for the module, on a fresh DuckDB file."""
    work = tmp_path_factory.mktemp("dbt")
    stage = work / "stage"
    shutil.copytree(fixture_dir / "stage", stage)
    files = sorted((stage / TABLE_DIR).glob("*/*/*.csv*"))
    assert files, f"no change files under {fixture_dir / 'stage' / TABLE_DIR}"
    # A double load: the newest file again under another name that the source's glob still reads
    # (<first>-<last>.replayed.csv.gz), next to the original.
    original = files[-1]
    stem, rest = original.name.split(".", 1)
    replayed = original.with_name(f"{stem}.replayed.{rest}")
    shutil.copyfile(original, replayed)

    started = time.monotonic()
    built = run_dbt(venv_bin, work, stage, "build")
    build_seconds = time.monotonic() - started
    assert built.returncode == 0, f"dbt build failed:\n{built.stdout[-8000:]}\n{built.stderr[-4000:]}"
    run_results = json.loads((work / "target" / "run_results.json").read_text())

    # Freshness is about live data; the fixture may be days old. Keep the error threshold above
    # its age so the check is about the machinery: the right column read, the right newest time.
    newest_commit = con_newest_commit(stage)
    age_hours = (datetime.now(timezone.utc) - newest_commit).total_seconds() / 3600
    error_after = max(24, int(age_hours) + 24)
    fresh = run_dbt(
        venv_bin, work, stage, "source", "freshness",
        "--vars", json.dumps({"pgcdc_freshness_error_after_hours": error_after}),
    )
    assert fresh.returncode == 0, f"dbt source freshness failed:\n{fresh.stdout[-8000:]}\n{fresh.stderr[-4000:]}"
    sources = json.loads((work / "target" / "sources.json").read_text())

    con = duckdb.connect(str(work / "pgcdc.duckdb"), read_only=True)
    yield {
        "con": con, "work": work, "stage": stage, "replayed": replayed,
        "run_results": run_results, "sources": sources, "newest_commit": newest_commit,
        "build_seconds": build_seconds, "fixture_dir": fixture_dir,
    }
    con.close()


def con_newest_commit(stage: Path) -> datetime:
    glob = stage / TABLE_DIR / "*" / "*" / "*.csv*"
    (newest,) = duckdb.connect().execute(f"select max(_commit_ts) from {read_csv_sql(glob)}").fetchone()
    return datetime.strptime(newest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def test_build_ran_models_data_tests_and_unit_tests(build):
    results = build["run_results"]["results"]
    by_kind = {}
    for result in results:
        kind = result["unique_id"].split(".")[0]
        by_kind.setdefault(kind, []).append(result["status"])
    failed = [r["unique_id"] for r in results if r["status"] not in ("success", "pass")]
    assert not failed, f"not passing: {failed}"
    assert len(by_kind.get("model", [])) == 8, by_kind
    assert len(by_kind.get("test", [])) >= 30, by_kind
    assert len(by_kind.get("unit_test", [])) >= 2, by_kind
    print(
        f"dbt build: {len(by_kind['model'])} models, {len(by_kind['test'])} data tests, "
        f"{len(by_kind['unit_test'])} unit tests in {build['build_seconds']:.1f}s"
    )


def test_the_double_load_was_read_and_deduplicated(build):
    con = build["con"]
    glob = build["stage"] / TABLE_DIR / "*" / "*" / "*.csv*"
    files = read_csv_sql(glob, "filename='_file_name'")
    raw, distinct_keys, from_replayed = con.execute(
        "select count(*), count(distinct (_commit_lsn, _seq)), "
        f"count(*) filter (where _file_name = ?) from {files}",
        [str(build["replayed"])],
    ).fetchone()
    (staged,) = con.execute("select count(*) from stg_pgcdc__ecommerce_sales").fetchone()
    assert from_replayed > 0, "the replayed file was not picked up by the glob"
    assert raw == distinct_keys + from_replayed
    assert staged == distinct_keys, f"staging has {staged} rows for {distinct_keys} distinct changes"


def test_fixture_exercises_truncate_toast_and_deletes(build):
    counts = dict(build["con"].execute(
        "select 'T', count(*) from stg_pgcdc__ecommerce_sales where op = 'T' "
        "union all select 'D', count(*) from stg_pgcdc__ecommerce_sales where op = 'D' "
        "union all select 'unchanged', count(*) from stg_pgcdc__ecommerce_sales where description_is_unchanged"
    ).fetchall())
    assert counts["T"] >= 1 and counts["D"] >= 1 and counts["unchanged"] >= 1, (
        f"the fixture lacks the changes this test is about ({counts}); regenerate it with "
        "scripts/fixture.sh"
    )
    # The 100 kB TOASTed description survives updates that did not send it.
    big = build["con"].execute(
        f"select invoice_no, length(description) from {CURRENT} "
        "where invoice_no = '581588' and length(description) > 10000"
    ).fetchall()
    assert big == [("581588", 102400)], big


def test_current_state_equals_the_source_table(build):
    con = build["con"]
    types = dict(con.execute(
        "select column_name, data_type from information_schema.columns where table_name = ?", [CURRENT]
    ).fetchall())
    casts = ", ".join(f"cast({c} as {types[c]}) as {c}" for c in SOURCE_COLUMNS)
    source_csv = build["fixture_dir"] / "ecommerce_sales.csv"
    con.execute(f"create temp table source_table as select {casts} from {read_csv_sql(source_csv)}")
    columns = ", ".join(SOURCE_COLUMNS)
    only_dbt = con.execute(
        f"select * from (select {columns} from {CURRENT} except all select {columns} from source_table) limit 5"
    ).fetchall()
    only_source = con.execute(
        f"select * from (select {columns} from source_table except all select {columns} from {CURRENT}) limit 5"
    ).fetchall()
    assert not only_dbt and not only_source, (
        f"current state differs from the source table:\n only in dbt: {short(only_dbt)}\n"
        f" only in source: {short(only_source)}"
    )
    # Exact Python values too (Decimal, datetime, None vs ''), in id order, plus a checksum.
    current_rows = con.execute(f"select {columns} from {CURRENT} order by id").fetchall()
    source_rows = con.execute(f"select {columns} from source_table order by id").fetchall()
    assert current_rows == source_rows
    assert len(current_rows) > 0
    nulls_and_empties = con.execute(
        f"select count(*) filter (where description is null), count(*) filter (where description = ''), "
        f"count(*) filter (where customer_id is null) from {CURRENT}"
    ).fetchone()
    assert nulls_and_empties == con.execute(
        "select count(*) filter (where description is null), count(*) filter (where description = ''), "
        "count(*) filter (where customer_id is null) from source_table"
    ).fetchone()
    print(f"current state equals the source table: {len(current_rows)} rows, checksum {checksum(current_rows)}")


def test_marts_are_consistent_with_the_current_state(build):
    con = build["con"]
    lines, invoices_n, products_n, amount = con.execute(
        f"select count(*), count(distinct invoice_no), count(distinct stock_code), "
        f"sum(quantity * unit_price) from {CURRENT}"
    ).fetchone()
    invoices = con.execute("select count(*), sum(line_count), sum(total_amount) from invoices").fetchone()
    products = con.execute("select count(*), sum(line_count), sum(revenue) from products").fetchone()
    assert invoices[0] > 0 and products[0] > 0
    assert invoices == (invoices_n, lines, amount)
    assert products == (products_n, lines, amount)
    (bad_cancellations,) = con.execute(
        "select count(*) from invoices where is_cancellation <> starts_with(invoice_no, 'C') "
        "or (is_cancellation and total_amount > 0)"
    ).fetchone()
    assert bad_cancellations == 0


def test_source_freshness_reads_the_newest_commit(build):
    (result,) = build["sources"]["results"]
    assert result["status"] in ("pass", "warn"), result
    max_loaded_at = datetime.fromisoformat(result["max_loaded_at"])
    assert max_loaded_at == build["newest_commit"], (max_loaded_at, build["newest_commit"])

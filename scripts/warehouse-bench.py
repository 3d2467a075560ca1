#!/usr/bin/env python3
"""`make bench-dbt`: the incremental current state against a full refresh, on DuckDB.

Writes a synthetic history of public.ecommerce_sales in pgcdc's file format (gzip CSV files
named by LSN range, a schema file, a checkpoint): ROWS change rows (default 5,000,000: 60%
inserts, 30% updates of earlier rows, a third of them leaving the description unchanged as an
unchanged TOAST value would, 10% deletes) in files of FILE_ROWS; builds the generic dbt package's
state with --full-refresh; then adds NEW (10,000) change rows in one more file, moves the
checkpoint, and runs the incremental model. Prints both times (the state model's own execution
time from dbt's run_results.json, and dbt's wall time) and fails when the incremental run takes
more than 10% of the full refresh, or when it does not give the table a full refresh gives.

    scripts/warehouse-bench.py [--rows 5000000] [--new 10000] [--file-rows 50000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "warehouse"))
from pgcdc_files import copy_dbt_project, write_checkpoint, write_schema  # noqa: E402

TABLE = "public.ecommerce_sales"
COLUMNS = [("id", "bigint"), ("invoice_no", "text"), ("stock_code", "text"), ("description", "text"),
           ("quantity", "integer"), ("invoice_date", "timestamp without time zone"),
           ("unit_price", "numeric(10,2)"), ("customer_id", "integer"), ("country", "text")]
FIRST_LSN = 0x1000000
ROWS_PER_COMMIT = 5


def change_rows_sql(first: int, count: int) -> str:
    """Change rows n = first .. first + count - 1, in pgcdc's columns (all text)."""
    return f"""
    with n as (select range as n from range({first}, {first + count})),
    shaped as (
        select n,
            case when n % 10 < 6 then 'I' when n % 10 < 9 then 'U' else 'D' end as op,
            -- updates hit inserts ending in 0-4 of an earlier block of ten, deletes those ending in 5
            case when n % 10 < 6 then n
                 when n % 10 < 9 then greatest(0, n // 10 - 1 - (n * 31) % 1000) * 10 + n % 5
                 else greatest(0, n // 10 - 1 - (n * 31) % 1000) * 10 + 5 end as id
        from n
    )
    select
        op as _op,
        cast({FIRST_LSN} + n // {ROWS_PER_COMMIT} * 64 as varchar) as _commit_lsn,
        cast(n % {ROWS_PER_COMMIT} as varchar) as _seq,
        cast(1000 + n // {ROWS_PER_COMMIT} as varchar) as _xid,
        strftime(timestamp '2024-01-01' + to_seconds(n // {ROWS_PER_COMMIT}), '%Y-%m-%dT%H:%M:%S.000000Z') as _commit_ts,
        case when op = 'U' and n % 3 = 0 then '["description"]' end as _unchanged,
        cast(id as varchar) as id,
        case when op <> 'D' then cast(500000 + id // 7 as varchar) end as invoice_no,
        case when op <> 'D' then 'SC' || cast(id % 4000 as varchar) end as stock_code,
        case when op = 'I' or (op = 'U' and n % 3 <> 0) then 'PRODUCT DESCRIPTION ' || cast(n % 997 as varchar) end as description,
        case when op <> 'D' then cast(1 + n % 24 as varchar) end as quantity,
        case when op <> 'D' then strftime(timestamp '2010-12-01' + to_minutes(id % 500000), '%Y-%m-%d %H:%M:%S') end as invoice_date,
        case when op <> 'D' then cast(cast((n % 5000) / 100.0 + 0.5 as decimal(10, 2)) as varchar) end as unit_price,
        case when op <> 'D' and n % 5 <> 0 then cast(12000 + id % 5000 as varchar) end as customer_id,
        case when op <> 'D' then 'United Kingdom' end as country
    from shaped
    """


def lsn_of(n: int) -> int:
    return FIRST_LSN + n // ROWS_PER_COMMIT * 64


def write_history(con, stage: Path, first: int, count: int, file_rows: int) -> int:
    files = 0
    for start in range(first, first + count, file_rows):
        size = min(file_rows, first + count - start)
        # Whole commits per file (file_rows is a multiple of ROWS_PER_COMMIT).
        low, high = lsn_of(start), lsn_of(start + size - 1)
        folder = stage / TABLE / "dt=2024-01-01" / f"hour={files % 24:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{low:016X}-{high:016X}.csv.gz"
        con.execute(f"copy ({change_rows_sql(start, size)}) to '{path}' (header, compression gzip, quote '\"')")
        files += 1
    return files


def run_dbt(project: Path, stage: Path, database: Path, *args: str) -> tuple[float, float]:
    """(the state model's execution time, dbt's wall time)."""
    env = dict(os.environ, PGCDC_STAGE=str(stage), PGCDC_DUCKDB_PATH=str(database),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1")
    target = database.parent / "target"
    dbt = Path(sys.executable).parent / "dbt"
    started = time.monotonic()
    done = subprocess.run([str(dbt), "run", *args, "--select", "+int_ecommerce_sales__state",
                           "--project-dir", str(project), "--profiles-dir", str(project),
                           "--target-path", str(target), "--log-path", str(database.parent / "logs")],
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"dbt run failed:\n{done.stdout[-4000:]}")
    results = json.loads((target / "run_results.json").read_text())["results"]
    (state,) = [r for r in results if r["unique_id"].endswith(".int_ecommerce_sales__state")]
    return state["execution_time"], wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--file-rows", type=int, default=50_000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="pgcdc-bench-dbt-"))
    work.mkdir(parents=True, exist_ok=True)
    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        started = time.monotonic()
        con = duckdb.connect()
        write_schema(stage, TABLE, COLUMNS, ["id"], FIRST_LSN)
        files = write_history(con, stage, 0, args.rows, args.file_rows)
        write_checkpoint(stage, lsn_of(args.rows - 1))
        print(f"history: {args.rows:,} change rows in {files} files, written in {time.monotonic() - started:.1f}s")

        shutil.rmtree(work / "dbt", ignore_errors=True)
        project = copy_dbt_project(work, stage, [TABLE], keep_shop_models=True)
        full_db, incremental_db = work / "full" / "pgcdc.duckdb", work / "incremental" / "pgcdc.duckdb"
        for database in (full_db, incremental_db):
            shutil.rmtree(database.parent, ignore_errors=True)
            database.parent.mkdir(parents=True)
        # The incremental database starts from the history, as production would.
        run_dbt(project, stage, incremental_db, "--full-refresh")

        write_history(con, stage, args.rows, args.new, args.new)
        write_checkpoint(stage, lsn_of(args.rows + args.new - 1))
        full_model, full_wall = run_dbt(project, stage, full_db, "--full-refresh")
        incremental_model, incremental_wall = run_dbt(project, stage, incremental_db)

        with duckdb.connect() as check:
            check.execute(f"attach '{full_db}' as f (read_only)")
            check.execute(f"attach '{incremental_db}' as i (read_only)")
            differ = check.execute(
                "select count(*) from ((from f.int_ecommerce_sales__state except all from i.int_ecommerce_sales__state) "
                "union all (from i.int_ecommerce_sales__state except all from f.int_ecommerce_sales__state))"
            ).fetchone()[0]
            live = check.execute("select count(*) from i.int_ecommerce_sales__state where not is_deleted").fetchone()[0]
        ratio = incremental_model / full_model
        print(f"full refresh over {args.rows + args.new:,} change rows: {full_model:.2f}s (dbt wall {full_wall:.1f}s)")
        print(f"incremental, {args.new:,} new change rows:     {incremental_model:.2f}s (dbt wall {incremental_wall:.1f}s)")
        print(f"incremental / full refresh: {ratio:.1%} (limit 10%); {live:,} live rows; "
              f"rows differing between the two: {differ}")
        ok = ratio <= 0.10 and differ == 0
        print("bench-dbt: " + ("PASS" if ok else "FAIL"))
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

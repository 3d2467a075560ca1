"""The generic dbt package's incremental current state, loaded batch by batch.

Two stages are loaded in random batches into a RAW folder (what Snowpipe would have loaded so
far), and after every batch:
  - the incremental state (dbt run) equals a --full-refresh of the same RAW, row for row,
    tombstones and metadata included;
  - the live rows equal the replay (pgcdc_files.replay, written from the format's rules) of
    every file pgcdc wrote, up to the completeness LSN dbt computed: so a completeness LSN past
    a file not yet loaded would show as a difference, not hide it.
At the end, with every file loaded, the state equals the source tables PostgreSQL had.

Stages: hand-made files with the copy markers B/E (pgcdc does not write them yet), key changes,
chains of unchanged TOAST values, truncates and a part set; and the fixture (scripts/fixture.sh):
a real pgcdc run with a seeded random workload on three tables of different shapes
(ecommerce_sales; wh_accounts: composite key, TOAST, key changes, truncates; wh_events: uuid key
and the values a typed RAW dropped files for) and a re-copy (`pgcdc slot reset --yes`).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import duckdb
import pytest

from dbt_runner import Dbt, InProcessDbt, completeness, current_differences, state_differences
from pgcdc_files import (
    METADATA, data_file_path, data_files, encode_rows, file_range, read_rows, replay, write_checkpoint,
    write_schema,
)

STATE_MODELS = "+int_*__state int_*__current"
THINGS = "public.things"
THINGS_COLUMNS = [("id", "integer"), ("name", "text"), ("big", "text"), ("amount", "numeric(10,2)")]


def change(op, lsn, seq, id=None, name=None, big=None, amount=None, unchanged=()):
    ts = "2024-03-05T17:05:00.000001Z"
    return [op, str(lsn), str(seq), None if op in "BER" else "7", ts,
            json.dumps(list(unchanged)) if unchanged else None,
            None if id is None else str(id), name, big, None if amount is None else str(amount)]


def marker(op, lsn, seq):
    return change(op, lsn, seq)


# The hand-made history, as files (name: rows). Comments say what each step must do.
HAND_MADE = {
    # The first copy: B, four copied rows, E.
    "F1": [marker("B", 99, 0)] + [change("R", 99, i, i, f"n{i}", f"big{i}" * 500, i) for i in range(1, 5)]
          + [marker("E", 99, 5)],
    # An insert; an update that leaves the big value unchanged.
    "F2": [change("I", 110, 0, 5, "n5", "big5", 5), change("U", 120, 0, 1, "n1b", None, 1, ["big"])],
    # Key change 2 -> 20 and 20 -> 21, big never sent: 21 has 2's big (until the truncate).
    "F3": [change("D", 130, 0, 2), change("U", 130, 1, 20, "n20", None, 2, ["big"]),
           change("D", 140, 0, 20), change("U", 140, 1, 21, "n21", None, 2, ["big"]),
           change("U", 150, 0, 21, "n21b", None, 3, ["big"])],
    # A truncate, then rows again (3 and 7 in the same commit after it).
    "F4": [change("T", 160, 0), change("I", 160, 1, 6, "n6", "big6", 6), change("I", 160, 2, 7, "n7", "big7", 7),
           change("I", 170, 0, 8, "n8", "big8", 8)],
    # After the truncate: key changes 8 -> 80 -> 81, big never sent: 81 has 8's big.
    "F4b": [change("D", 172, 0, 8), change("U", 172, 1, 80, "n80", None, 8, ["big"]),
            change("D", 174, 0, 80), change("U", 174, 1, 81, "n81", None, 8, ["big"])],
    # A re-copy: B at 180; 6 updated before its R (big from before the B); 81 deleted; 9 inserted;
    # 6 copied; E at 200: 7 had no row after the B, so it is gone.
    "F5": [marker("B", 180, 0), change("U", 185, 0, 6, "n6b", None, 60, ["big"]), change("D", 187, 0, 81),
           change("R", 190, 0, 6, "n6c", "big6c", 61), change("I", 192, 0, 9, "n9", "big9", 9),
           marker("E", 200, 0)],
    # A copy that never ends: changes nothing (9 gets a copied row, nothing is removed).
    "F6": [marker("B", 210, 0), change("R", 215, 0, 9, "n9c", "big9c", 90)],
    # A new copy supersedes it and ends: 9 has no row after this B, so it is gone; 6 stays, and
    # a later update of 6 keeps the copied big.
    "F7": [marker("B", 220, 0), change("R", 225, 0, 6, "n6d", "big6d", 62), marker("E", 230, 0),
           change("U", 240, 0, 6, "n6e", None, 63, ["big"])],
    # One transaction in two parts.
    "F8.1": [change("I", 250, i, 30 + i, f"n{30 + i}", "x", i) for i in range(2)],
    "F8.2": [change("I", 250, i, 30 + i, f"n{30 + i}", "x", i) for i in range(2, 4)],
}
BATCHES = [["F2", "F1"], ["F4"], ["F3", "F4b"], ["F6", "F8.1"], ["F5"], ["F8.2", "F7"]]
# The completeness LSN after each batch: before the first file missing, else the checkpoint.
EXPECTED_COMPLETENESS = [129, 129, 179, 179, 219, 250]


def write_hand_made(stage: Path) -> dict[str, Path]:
    header = METADATA + [name for name, _ in THINGS_COLUMNS]
    write_schema(stage, THINGS, THINGS_COLUMNS, ["id"], 99)
    paths = {}
    for name, rows in HAND_MADE.items():
        lsns = [int(r[1]) for r in rows]
        part = (int(name.split(".")[1]), 2) if "." in name else None
        path = data_file_path(stage, THINGS, min(lsns), max(lsns), part)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_rows(header, rows))
        paths[name] = path
    write_checkpoint(stage, 250)
    return paths


def load(files: list[Path], stage: Path, raw: Path) -> None:
    """What a loader does: the files appear in RAW under the same relative path."""
    for path in files:
        target = raw / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def incremental_database(work: Path) -> Path:
    (work / "incremental").mkdir(exist_ok=True)
    (work / "full").mkdir(exist_ok=True)
    return work / "incremental" / "pgcdc.duckdb"


def check_batch(dbt: InProcessDbt, work: Path, index: int, tables: dict[str, list[str]], stage: Path) -> dict[str, int]:
    # Same file name, other folders: dbt-duckdb names the database after the file, and the
    # manifest parsed once names it too.
    incremental, full = incremental_database(work), work / "full" / "pgcdc.duckdb"
    full.unlink(missing_ok=True)
    # State models and what they need only, in this process (InProcessDbt: no start-up per run).
    dbt.run(incremental, "run", "--select", STATE_MODELS)
    dbt.run(full, "run", "--full-refresh", "--select", STATE_MODELS)
    reached = {}
    for table, keys in tables.items():
        model = table.split(".", 1)[1]
        only_incremental, only_full = state_differences(incremental, full, f"int_{model}__state")
        assert (only_incremental, only_full) == (0, 0), (
            f"batch {index}: {table}: incremental and full refresh differ "
            f"({only_incremental} rows only incremental, {only_full} only full refresh)")
        hi = completeness(incremental, table)
        expected = replay(data_files(stage, table), keys, hi)
        problems = current_differences(incremental, f"int_{model}__current", expected)
        assert not problems, f"batch {index}: {table} at completeness LSN {hi} differs from the replay:\n" + "\n".join(problems)
        reached[table] = hi
    return reached


@pytest.fixture(scope="module")
def dbt_bin(venv_bin):
    return venv_bin("dbt")


def test_hand_made_markers_key_changes_part_sets_and_a_missing_file(tmp_path, dbt_bin):
    from pgcdc_files import copy_dbt_project

    stage, raw = tmp_path / "stage", tmp_path / "raw"
    paths = write_hand_made(stage)
    (raw / "_pgcdc").mkdir(parents=True)
    dbt = Dbt(dbt_bin, copy_dbt_project(tmp_path, stage), stage, raw)
    load([paths["F1"]], stage, raw)  # the parse needs a file to read the source's columns from
    runner = InProcessDbt(dbt, incremental_database(tmp_path))
    reached = []
    for index, batch in enumerate(BATCHES):
        load([paths[name] for name in batch], stage, raw)
        reached.append(check_batch(runner, tmp_path, index, {THINGS: ["id"]}, stage)[THINGS])
        if index == 1:
            # F3 is in the stage, not in RAW: the missing-file test fails once the grace is over.
            database = incremental_database(tmp_path)
            failed = dbt.run(database, "test", "--select", "assert_no_stage_file_missing_from_raw",
                             "--vars", '{"pgcdc_missing_file_grace_minutes": 0}', check=False)
            assert failed.returncode != 0 and "FAIL 7" in failed.stdout, failed.stdout[-3000:]  # F3 and every file after it
            passed = dbt.run(database, "test", "--select", "assert_no_stage_file_missing_from_raw", check=False)
            assert passed.returncode == 0, "within the grace period a late file is not an error"
        if index == 3:
            # Before the re-copy ends (completeness 179): the key-change chain after the truncate.
            with duckdb.connect(str(incremental_database(tmp_path)), read_only=True) as con:
                live = dict(con.execute("select id, big from int_things__current").fetchall())
            assert set(live) == {6, 7, 81} and live[81] == "big8", live
    assert reached == EXPECTED_COMPLETENESS

    # The rules, spelled out (the replay agrees, but it is code too).
    with duckdb.connect(str(incremental_database(tmp_path)), read_only=True) as con:
        live = {r[0]: r[1:] for r in con.execute(
            "select id, name, big, amount, has_unresolved_unchanged_value from int_things__current").fetchall()}
        deleted = {r[0] for r in con.execute("select id from int_things__state where is_deleted").fetchall()}
    assert set(live) == {6, 30, 31, 32, 33}, live.keys()
    assert live[6][:3] == ("n6e", "big6d", 63), "an update after the copy keeps the copied big value"
    assert not any(row[3] for row in live.values())
    assert {1, 3, 4, 5, 21} <= deleted, "the truncate removed the rows before it"
    assert {7, 9} <= deleted, "a finished copy removes the keys it did not copy"
    build = dbt.run(incremental_database(tmp_path), "build")
    assert "ERROR=0" in build.stdout


FIXTURE_TABLES = {
    "public.ecommerce_sales": ["id"],
    "public.wh_accounts": ["region", "account_no"],
    "public.wh_events": ["event_id"],
}


@pytest.fixture(scope="module")
def workload(tmp_path_factory, fixture_dir, dbt_bin):
    """The fixture's files loaded in 10 random batches (seeded; the seed is printed)."""
    from pgcdc_files import copy_dbt_project

    if not (fixture_dir / "wh_accounts.csv").exists():
        pytest.fail("the fixture predates the shapes workload; regenerate it with scripts/fixture.sh", pytrace=False)
    work = tmp_path_factory.mktemp("incremental")
    stage, raw = fixture_dir / "stage", work / "raw"
    (raw / "_pgcdc").mkdir(parents=True)
    dbt = Dbt(dbt_bin, copy_dbt_project(work, stage, list(FIXTURE_TABLES), keep_shop_models=True), stage, raw)
    seed = int((fixture_dir / "seed.txt").read_text()) if (fixture_dir / "seed.txt").exists() else 0
    rng = random.Random(seed)
    # The first batch has a file of every table (DuckDB cannot read an empty folder as a
    # source: in place, a table's folder always has its first file); the rest in random order.
    firsts = [rng.choice(data_files(stage, table)) for table in FIXTURE_TABLES]
    files = [p for table in FIXTURE_TABLES for p in data_files(stage, table) if p not in firsts]
    rng.shuffle(files)
    cuts = sorted(rng.sample(range(1, len(files)), 9))
    batches = [files[a:b] for a, b in zip([0] + cuts, cuts + [len(files)])]
    batches[0] += firsts
    print(f"workload seed {seed}: {len(files)} files in {len(batches)} batches of {[len(b) for b in batches]}")
    load(batches[0], stage, raw)  # the parse needs a file of each table
    runner = InProcessDbt(dbt, incremental_database(work))
    reached = []
    for index, batch in enumerate(batches):
        load(batch, stage, raw)
        reached.append(check_batch(runner, work, index, FIXTURE_TABLES, stage))
    return dict(dbt=dbt, work=work, reached=reached, fixture_dir=fixture_dir, stage=stage)


def test_each_batch_equals_full_refresh_and_replay(workload):
    checkpoint = json.loads((workload["stage"] / "_pgcdc/pgcdc/checkpoint.json").read_text())["commit_lsn"]
    high, low = checkpoint.split("/")
    final = (int(high, 16) << 32) + int(low, 16)
    assert all(r == final for r in workload["reached"][-1].values()), workload["reached"][-1]
    # The completeness LSN only moves forward, and held back at least once (files out of order).
    for table in FIXTURE_TABLES:
        series = [r[table] for r in workload["reached"]]
        assert series == sorted(series), (table, series)
    assert any(r[t] < final for r in workload["reached"][:-1] for t in FIXTURE_TABLES)


def test_final_state_equals_the_source_tables(workload):
    database = incremental_database(workload["work"])
    for table, keys in FIXTURE_TABLES.items():
        name = table.split(".", 1)[1]
        source_csv = workload["fixture_dir"] / f"{name}.csv"
        with duckdb.connect(str(database), read_only=True) as con:
            rows = con.execute(
                f"select * from read_csv('{source_csv}', header=true, all_varchar=true, quote='\"', escape='\"', "
                "allow_quoted_nulls=false)").fetchall()
            columns = [d[0] for d in con.execute(f"select * from read_csv('{source_csv}', header=true) limit 0").description]
        expected = {tuple(r[columns.index(k)] for k in keys): dict(zip(columns, r)) for r in rows}
        problems = current_differences(database, f"int_{name}__current", expected, columns)
        assert not problems, f"{table}: the current state differs from PostgreSQL's table:\n" + "\n".join(problems)


def test_workload_exercised_toast_key_changes_truncates_and_the_recopy(workload):
    stage = workload["stage"]
    ops, unchanged = {}, 0
    for path in data_files(stage, "public.wh_accounts"):
        for row in read_rows(path):
            ops[row["_op"]] = ops.get(row["_op"], 0) + 1
            unchanged += bool(row["_unchanged"])
    assert {"I", "U", "D", "R"} <= set(ops), ops
    assert unchanged > 0, "no update left a TOASTed value unchanged"
    snapshots = {int(row["_commit_lsn"]) for p in data_files(stage, "public.wh_accounts") for row in read_rows(p)
                 if row["_op"] == "R"}
    assert len(snapshots) >= 2, "the re-copy (pgcdc slot reset) wrote no second snapshot"


def test_values_that_used_to_drop_files_load_and_are_counted(workload):
    """NaN, infinities, BC dates, a year past DuckDB's timestamp and a 1 MiB text: every row is
    there; what DuckDB's types cannot hold is NULL and counted by the cast-failure test."""
    dbt, database = workload["dbt"], incremental_database(workload["work"])
    result = dbt.run(database, "build", "--select", "stg_pgcdc__wh_events", check=False)
    run_results = json.loads((database.parent / "pgcdc-dbt/target/run_results.json").read_text())
    (cast_test,) = [r for r in run_results["results"] if "pgcdc_cast_failures" in r["unique_id"]]
    assert cast_test["status"] == "warn", (cast_test["status"], result.stdout[-2000:])
    with duckdb.connect(str(database), read_only=True) as con:
        kinds = {r[0] for r in con.execute("select payload ->> 'kind' from int_wh_events__current").fetchall()}
        big = con.execute("select max(length(body)) from int_wh_events__current").fetchone()[0]
        failures = {r[0]: r[1] for r in con.execute(cast_test["compiled_code"]).fetchall()}
        expected = dict(con.execute(
            "select 'amount', count(*) filter (where amount is null) from stg_pgcdc__wh_events "
            "where op in ('I', 'U', 'R') union all "
            "select 'happened_at', count(*) filter (where happened_at is null) from stg_pgcdc__wh_events "
            "where op in ('I', 'U', 'R')").fetchall())
    assert kinds == {"nan", "inf", "-inf", "bc", "far", "big"}, kinds
    assert big == 1024 * 1024
    # Only NaN (numeric(12,2)) and the year 294276 timestamp fall outside DuckDB's types: every
    # change row carrying one is counted, nothing else is.
    assert failures == expected and all(n > 0 for n in expected.values()), (failures, expected)

"""Running a copy of the dbt project against a stage and a RAW folder, and comparing its tables
with the replay of pgcdc's files (pgcdc_files.replay) and with each other."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pgcdc_files import UNRESOLVED


@dataclass
class Dbt:
    dbt: Path  # the dbt executable
    project: Path
    stage: Path  # what pgcdc wrote (listing + checkpoint)
    raw: Path  # what is "loaded": the folder the sources read

    def environment(self, database: Path) -> dict[str, str]:
        return dict(PGCDC_STAGE=str(self.stage), PGCDC_RAW=str(self.raw), PGCDC_DUCKDB_PATH=str(database),
                    DBT_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1")

    def arguments(self, database: Path, *args: str) -> list[str]:
        work = database.parent / f"{database.stem}-dbt"
        return [*args, "--project-dir", str(self.project), "--profiles-dir", str(self.project), "--target", "local",
                "--no-use-colors", "--target-path", str(work / "target"), "--log-path", str(work / "logs")]

    def run(self, database: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, **self.environment(database))
        command = [str(self.dbt), *self.arguments(database, *args)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if check and done.returncode != 0:
            raise AssertionError(f"dbt {' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
        return done


class InProcessDbt:
    """The same runs inside this process, on a manifest parsed once: a run costs what its models
    cost, not dbt's start-up and parse (the batch loops run dbt twenty times and more). The
    project and the environment variables its parse reads (PGCDC_STAGE, PGCDC_RAW) must not
    change between runs."""

    def __init__(self, dbt: Dbt, database: Path):
        from dbt.cli.main import dbtRunner

        with self._environment(dbt, database):
            parsed = dbtRunner().invoke(dbt.arguments(database, "parse"))
            self._close_database()
        assert parsed.success, parsed.exception
        self.dbt, self.runner = dbt, dbtRunner(manifest=parsed.result)

    @staticmethod
    def _close_database() -> None:
        """dbt-duckdb keeps its database open between runs in one process: close it, so this
        process can open the file (and the next run another one)."""
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager

        with DuckDBConnectionManager._LOCK:
            if DuckDBConnectionManager._ENV is not None:
                DuckDBConnectionManager._ENV.close()
                DuckDBConnectionManager._ENV = None

    @staticmethod
    @contextlib.contextmanager
    def _environment(dbt: Dbt, database: Path):
        saved = {k: os.environ.get(k) for k in dbt.environment(database)}
        os.environ.update(dbt.environment(database))
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(self, database: Path, *args: str) -> None:
        with self._environment(self.dbt, database):
            try:
                result = self.runner.invoke(self.dbt.arguments(database, *args))
            finally:
                self._close_database()
        if not result.success:
            messages = [f"{r.node.name}: {r.message}" for r in getattr(result.result, "results", [])
                        if str(r.status) in ("error", "fail")]
            raise AssertionError(f"dbt {' '.join(args)} failed: {messages or result.exception}")


def completeness(database: Path, table: str) -> int:
    with duckdb.connect(str(database), read_only=True) as con:
        (lsn,) = con.execute(
            "select completeness_lsn from int_pgcdc__completeness where table_name = ?", [table]
        ).fetchone()
    return int(lsn)


def state_differences(a: Path, b: Path, model: str) -> tuple[int, int]:
    """Rows of `model` only in database a, only in b (tombstones and metadata included)."""
    with duckdb.connect() as con:
        con.execute(f"attach '{a}' as a (read_only)")
        con.execute(f"attach '{b}' as b (read_only)")
        only_a = con.execute(f"select count(*) from (from a.{model} except all from b.{model})").fetchone()[0]
        only_b = con.execute(f"select count(*) from (from b.{model} except all from a.{model})").fetchone()[0]
    return only_a, only_b


STATE_METADATA = {"last_op", "last_commit_lsn", "last_seq", "last_committed_at", "is_deleted",
                  "has_unresolved_unchanged_value"}


def current_differences(database: Path, model: str, expected: dict[tuple, dict], columns: list[str] | None = None,
                        limit: int = 3) -> list[str]:
    """Compares the live rows of `model` with a replay ({key: {column: text}}): the replay's text
    goes through the same cast as dbt's column (its DuckDB type), so equal means equal values."""
    with duckdb.connect(str(database), read_only=True) as con:
        types = dict(con.execute(
            "select column_name, data_type from information_schema.columns where table_name = ?", [model]
        ).fetchall())
        columns = columns or [c for c in types if c not in STATE_METADATA]
        unresolved = [(k, c) for k, row in expected.items() for c in columns if row.get(c) is UNRESOLVED]
        assert not unresolved, f"the replay itself has unresolved values: {unresolved[:3]}"
        con.execute(f"create temp table expected ({', '.join(f'{c} varchar' for c in columns)})")
        if expected:
            con.executemany(f"insert into expected values ({', '.join('?' for _ in columns)})",
                            [[row.get(c) for c in columns] for row in expected.values()])
        casts = ", ".join(_cast(c, types[c]) for c in columns)
        names = ", ".join(columns)
        con.execute(f"create temp table typed as select {casts} from expected")
        problems = []
        for title, a, b in (("only in dbt", model, "typed"), ("only in the replay", "typed", model)):
            rows = con.execute(f"select {names} from {a} except all select {names} from {b} limit {limit}").fetchall()
            problems += [f"{title}: {_short(r)}" for r in rows]
        return problems


def _cast(column: str, duckdb_type: str) -> str:
    # What the type mapping does for the types the test tables use (DuckDB reads a BC date as
    # "(BC)" and ignores the suffix on a timestamp).
    bc_date = f"try_cast(split_part({column}, ' ', 1) || ' (BC)' as date)"
    if duckdb_type == "DATE":
        return f"try_cast(replace({column}, ' BC', ' (BC)') as date) as {column}"
    if duckdb_type == "TIMESTAMP":
        return (f"case when ends_with({column}, ' BC') then {bc_date} + try_cast(split_part({column}, ' ', 2) as time) "
                f"else try_cast({column} as timestamp) end as {column}")
    return f"try_cast({column} as {duckdb_type}) as {column}"


def _short(row) -> tuple:
    return tuple(v[:30] + f"...({len(v)})" if isinstance(v, str) and len(v) > 30 else v for v in row)

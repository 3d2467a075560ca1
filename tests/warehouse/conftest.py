"""Shared fixtures for the warehouse tests (dbt on DuckDB, the Snowflake scripts).

Kept small on purpose: each test module owns its own setup; only what several need lives here.
"""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_REGENERATE = (
    "cd {repo} && PGCDC_BIN=$HOME/.cache/pgcdc/target/debug/pgcdc bash scripts/fixture.sh {out}"
)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """pgcdc output to test against: `stage/` (the files) and `ecommerce_sales.csv` (the final
    source table). From $PGCDC_FIXTURE, default /tmp/pgcdc-fixture. Missing is a failure, never a
    skip: a warehouse test that silently does not run proves nothing."""
    path = Path(os.environ.get("PGCDC_FIXTURE", "/tmp/pgcdc-fixture"))
    missing = [p for p in (path / "stage", path / "ecommerce_sales.csv") if not p.exists()]
    if missing:
        pytest.fail(
            f"pgcdc fixture not found: {', '.join(map(str, missing))} missing. Generate it with\n  "
            + _REGENERATE.format(repo=REPO, out=path)
            + "\nor point PGCDC_FIXTURE at an existing one.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def venv_bin():
    """`venv_bin(name)` -> Path of a tool (dbt, python, fakesnow, ...) in pgcdc's Python venv:
    $PGCDC_VENV, else the venv running pytest, else ~/.cache/pgcdc/venv. Fails if it is missing."""

    def find(name: str) -> Path:
        candidates = []
        if os.environ.get("PGCDC_VENV"):
            candidates.append(Path(os.environ["PGCDC_VENV"]) / "bin" / name)
        candidates.append(Path(sys.executable).parent / name)
        candidates.append(Path.home() / ".cache/pgcdc/venv/bin" / name)
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        pytest.fail(
            f"{name} not found in pgcdc's venv (looked at {', '.join(map(str, candidates))}); "
            "run `make deps`",
            pytrace=False,
        )

    return find

"""scripts/dbt-generate.py: the dbt files of every table come from pgcdc's schema files; renames
and type changes follow them, and files of a table that is gone are removed (hand-written ones
never)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from pgcdc_files import REPO, write_schema


def generate(stage: Path, project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", str(REPO / "scripts/dbt-generate.py"), str(stage), "--project", str(project)],
                          capture_output=True, text=True, check=True)


def tables_of(project: Path) -> dict:
    text = (project / "macros/generated/pgcdc_tables.sql").read_text()
    body = re.search(r"return\((.*)\) \}\}", text, flags=re.S).group(1)
    return json.loads(body.replace(": True", ": true").replace(": False", ": false"))


def test_renames_and_type_changes_follow_the_schema_files(tmp_path):
    stage, project = tmp_path / "stage", tmp_path / "dbt"
    write_schema(stage, "public.renamed", [("id", "integer"), ("name", "text"), ("amount", "integer")], ["id"], 100)
    write_schema(stage, "public.renamed", [("id", "integer"), ("title", "text"), ("amount", "numeric(10,2)")],
                 ["id"], 200)
    write_schema(stage, "sales.orders", [("region", "text"), ("no", "bigint"), ("note", "text")], ["region", "no"], 100)
    generate(stage, project)
    tables = tables_of(project)
    renamed = tables["public.renamed"]
    assert [(c["name"], c["type"], c["aliases"]) for c in renamed["columns"]] == [
        ("id", "integer", []), ("title", "text", ["name"]), ("amount", "numeric(10,2)", [])]
    assert len(renamed["versions"]) == 2
    orders = tables["sales.orders"]
    assert orders["id"] == "sales_orders" and orders["key_columns"] == ["region", "no"]
    for name in ("staging/stg_pgcdc__renamed.sql", "staging/stg_pgcdc__sales_orders.yml",
                 "intermediate/int_sales_orders__state.sql", "intermediate/int_sales_orders__markers.sql",
                 "intermediate/int_sales_orders__current.sql"):
        assert (project / "models" / name).exists(), name
    assert "pgcdc_state('sales.orders')" in (project / "models/intermediate/int_sales_orders__state.sql").read_text()
    sources = (project / "models/staging/__sources.yml").read_text()
    assert "name: renamed_changes" in sources and "/sales.orders/*/*/*.csv*" in sources

    # A table that is gone takes its generated files with it; a hand-written model stays.
    hand_written = project / "models/marts/mine.sql"
    hand_written.parent.mkdir(parents=True)
    hand_written.write_text("select 1 as one\n")
    for path in (stage / "sales.orders" / "_schema").iterdir():
        path.unlink()
    (stage / "sales.orders" / "_schema").rmdir()
    generate(stage, project)
    assert "sales.orders" not in tables_of(project)
    assert not (project / "models/intermediate/int_sales_orders__state.sql").exists()
    assert hand_written.exists()

"""pgcdc's file format from Python, for the warehouse tests and the dbt benchmark: write change
files, schema files and a checkpoint the way pgcdc lays them out (README.md, "The file format"),
read them back, and replay them into a table: the reference the dbt models are compared with.

The replay is written from the format's rules, independently of the SQL in dbt/macros/pgcdc/:
apply rows in (commit_lsn, seq) order; I/R/U upsert by key, D removes, T empties the table, a
copy begin B followed by its end E removes every key without a row after the B; a value named in
_unchanged is the row's previous value (through a key change: pgcdc writes D of the old key and U
of the new one at consecutive seq of one commit).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

METADATA = ["_op", "_commit_lsn", "_seq", "_xid", "_commit_ts", "_unchanged"]
DATA_FILE = re.compile(
    r"(?P<table>[^/]+)/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/(?P<first>[0-9A-F]{16})-(?P<last>[0-9A-F]{16})"
    r"(?:[.]part-\d{4,}-of-\d{4,})?[.]csv(?:[.]gz)?$"
)
REPO = Path(__file__).resolve().parents[2]
UNRESOLVED = object()  # a value no earlier change carried


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def encode_field(value: str | None) -> str:
    """NULL is an unquoted empty field, '' is "", anything with , " CR LF is quoted."""
    if value is None:
        return ""
    if value == "" or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def encode_rows(header: list[str], rows: list[list[str | None]]) -> bytes:
    lines = [",".join(header)] + [",".join(encode_field(v) for v in row) for row in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)


def data_file_path(stage: Path, table: str, first: int, last: int, part: tuple[int, int] | None = None,
                   when: datetime | None = None) -> Path:
    when = when or datetime(2024, 3, 5, 17, tzinfo=timezone.utc)
    suffix = f".part-{part[0]:04d}-of-{part[1]:04d}" if part else ""
    return stage / table / f"dt={when:%Y-%m-%d}" / f"hour={when:%H}" / f"{first:016X}-{last:016X}{suffix}.csv.gz"


def write_schema(stage: Path, table: str, columns: list[tuple[str, str]], keys: list[str], first_lsn: int,
                 seq: int = 0) -> None:
    """A schema document as pgcdc writes it (only the fields dbt-generate reads are meaningful)."""
    schema, name = table.split(".", 1)
    version = f"{first_lsn:016X}-{seq:08X}-{abs(hash(tuple(columns))) % 16**16:016x}"
    document = {
        "table": table, "schema": schema, "name": name, "version": version,
        "first_commit_lsn": lsn_text(first_lsn), "metadata_columns": METADATA,
        "columns": [
            {"name": n, "position": i + 1, "type": t, "type_oid": abs(hash(t)) % 100000, "type_modifier": -1,
             "key": n in keys}
            for i, (n, t) in enumerate(columns)
        ],
        "key_columns": keys,
    }
    path = stage / table / "_schema" / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def write_checkpoint(stage: Path, commit_lsn: int, slot: str = "pgcdc") -> None:
    path = stage / "_pgcdc" / slot / "checkpoint.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"slot": slot, "commit_lsn": lsn_text(commit_lsn), "snapshot": "done"}))


def data_files(stage: Path, table: str | None = None) -> list[Path]:
    files = [p for p in stage.glob("*/dt=*/hour=*/*.csv*") if DATA_FILE.search(p.relative_to(stage).as_posix())]
    return sorted(p for p in files if table is None or p.relative_to(stage).parts[0] == table)


def file_range(path: Path) -> tuple[int, int]:
    match = DATA_FILE.search(path.as_posix())
    return int(match["first"], 16), int(match["last"], 16)


_FIELD = re.compile(r'(?:"((?:[^"]|"")*)"|([^,\n"]*))(,|\n)')


def parse_csv(text: str) -> list[list[str | None]]:
    """RFC 4180 records; an unquoted empty field is None (NULL), a quoted one ''."""
    records, record, position = [], [], 0
    for match in _FIELD.finditer(text):
        assert match.start() == position, f"malformed CSV at offset {position}: {text[position:position + 40]!r}"
        position = match.end()
        quoted, bare, end = match.groups()
        record.append(quoted.replace('""', '"') if quoted is not None else (bare or None))
        if end == "\n":
            records.append(record)
            record = []
    assert position == len(text) and not record, "a file must end with a line break"
    return records


@functools.lru_cache(maxsize=256)
def read_rows(path: Path) -> list[dict[str, str | None]]:
    """A change file's rows by header name; an unquoted empty field is None, a quoted one ''."""
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    header, *records = parse_csv(text)
    return [dict(zip(header, record)) for record in records]


def replay(files: list[Path], keys: list[str], up_to_lsn: int) -> dict[tuple, dict]:
    """The table as of `up_to_lsn` from these files: {key tuple: {column: text or None}}."""
    changes = {}
    for path in files:
        for row in read_rows(path):
            position = (int(row["_commit_lsn"]), int(row["_seq"]))
            if position[0] <= up_to_lsn:
                changes.setdefault(position, row)
    state: dict[tuple, dict] = {}  # key -> {"values", "alive", "last"}
    removed_by: dict[tuple, dict | None] = {}  # position of a D -> the values it removed
    open_copy = None
    for position in sorted(changes):
        row = changes[position]
        op = row["_op"]
        if op == "T":
            for entry in state.values():
                entry["alive"] = False
            continue
        if op == "B":
            open_copy = position
            continue
        if op == "E":
            if open_copy is not None:
                for entry in state.values():
                    if entry["last"] < open_copy:
                        entry["alive"] = False
                open_copy = None
            continue
        key = tuple(row[k] for k in keys)
        entry = state.get(key)
        if op == "D":
            removed_by[position] = entry["values"] if entry else None
            state[key] = {"values": entry["values"] if entry else None, "alive": False, "last": position}
            continue
        unchanged = set(json.loads(row["_unchanged"])) if row["_unchanged"] else set()
        before = entry["values"] if entry and entry["alive"] else None
        previous = (position[0], position[1] - 1)
        if (op == "U" and previous in removed_by and (entry is None or not entry["alive"])
                and tuple(changes[previous][k] for k in keys) != key):
            before = removed_by[previous]  # a key change: the old key's row
        values = {}
        for column, value in row.items():
            if column in METADATA or column == "_file_name":
                continue
            if column in unchanged:
                values[column] = before.get(column, UNRESOLVED) if before else UNRESOLVED
            else:
                values[column] = value
        state[key] = {"values": values, "alive": True, "last": position}
    return {key: entry["values"] for key, entry in state.items() if entry["alive"]}


def copy_dbt_project(destination: Path, stage: Path, tables: list[str] | None = None,
                     keep_shop_models: bool = False) -> Path:
    """dbt/ copied to `destination`, its per-table files generated for `stage`'s tables. Without
    the shop (ecommerce_sales), its marts and singular tests are left out."""
    project = destination / "dbt"
    shutil.copytree(REPO / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    command = ["python3", str(REPO / "scripts/dbt-generate.py"), str(stage), "--project", str(project)]
    for table in tables or []:
        command += ["--table", table]
    subprocess.run(command, check=True, capture_output=True, text=True)
    if not keep_shop_models:
        shutil.rmtree(project / "models" / "marts")
        for test in (project / "tests").glob("*.sql"):
            if any(name in test.read_text() for name in ("ecommerce_sales", "invoices", "products")):
                test.unlink()
    return project

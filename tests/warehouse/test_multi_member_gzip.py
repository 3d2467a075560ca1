"""A change file may hold several gzip members (RFC 1952, section 2.2): pgcdc parks the files of a
window beyond `batch.open_files`, ending the member it was writing, and the next row starts a new
one in the same file. Every reader of pgcdc's files must read the concatenation as one text:

  * DuckDB's read_csv, with exactly the options dbt's pgcdc_batch_source macro passes
    (dbt/macros/pgcdc/files.sql), on a file cut into members at row boundaries (how pgcdc cuts
    them) and inside a row and a quoted field (the decoder must not care);
  * Python's gzip module, which the warehouse tests and scripts/ read files with.

Snowflake's file format reads COMPRESSION = GZIP (or AUTO, from the .gz suffix) files; its
documentation (https://docs.snowflake.com/en/sql-reference/sql/create-file-format) names gzip
without restricting it to one member, and the gzip format defines a file as a series of members.
No Snowflake runs here, so that half is the documentation's word, not a test (README.md, "Files
with several gzip members", says how to avoid members altogether).
"""

import gzip
from pathlib import Path

import duckdb

HEADER = "_op,_commit_lsn,_seq,_xid,_commit_ts,_unchanged,id,note\n"
ROWS = [
    'I,100,0,7,2024-03-05T17:00:00.000000Z,,1,plain\n',
    'I,100,1,7,2024-03-05T17:00:00.000000Z,,2,"quoted, with a comma"\n',
    'U,200,0,8,2024-03-05T17:00:01.000000Z,,1,\n',
    'I,200,1,8,2024-03-05T17:00:01.000000Z,,3,""\n',
    'D,300,0,9,2024-03-05T17:00:02.000000Z,,2,\n',
]
# The dbt macro's read_csv options, verbatim apart from the file list.
READ_CSV = (
    "read_csv(['{path}'], header=true, delim=',', quote='\"', escape='\"', all_varchar=true, "
    "allow_quoted_nulls=false, union_by_name=true, hive_partitioning=false, filename='_file_name')"
)


def write_members(path: Path, pieces: list[str]) -> None:
    path.write_bytes(b"".join(gzip.compress(p.encode(), compresslevel=1) for p in pieces))


def duckdb_rows(path: Path) -> list[tuple]:
    query = f"select _op, _commit_lsn, _seq, id, note from {READ_CSV.format(path=path)} order by _commit_lsn, _seq"
    return duckdb.sql(query).fetchall()


EXPECTED = [
    ("I", "100", "0", "1", "plain"),
    ("I", "100", "1", "2", "quoted, with a comma"),
    ("U", "200", "0", "1", None),
    ("I", "200", "1", "3", ""),
    ("D", "300", "0", "2", None),
]


def test_duckdb_reads_every_member_at_row_boundaries(tmp_path):
    path = tmp_path / "0000000000000064-000000000000012C.csv.gz"
    # As pgcdc writes them: the header with the first rows, then one member per later stretch.
    write_members(path, [HEADER + ROWS[0], ROWS[1], ROWS[2] + ROWS[3], ROWS[4]])
    assert len(path.read_bytes()) > 0
    assert duckdb_rows(path) == EXPECTED


def test_duckdb_reads_members_cut_inside_a_row_and_a_quoted_field(tmp_path):
    path = tmp_path / "0000000000000064-000000000000012C.csv.gz"
    text = HEADER + "".join(ROWS)
    cut_in_quotes = text.index("with a comma")
    pieces = [text[:10], text[10:cut_in_quotes], text[cut_in_quotes:-5], text[-5:]]
    write_members(path, pieces)
    assert duckdb_rows(path) == EXPECTED


def test_python_gzip_reads_every_member(tmp_path):
    path = tmp_path / "f.csv.gz"
    write_members(path, [HEADER, *ROWS])
    assert gzip.decompress(path.read_bytes()).decode() == HEADER + "".join(ROWS)
    with gzip.open(path, "rt") as f:
        assert f.read() == HEADER + "".join(ROWS)

#!/usr/bin/env bash
# The warehouse half of the demo: dbt (local DuckDB target) builds the models from the files pgcdc
# wrote, runs its tests and checks source freshness; then the top invoices and products, and
# whether dbt's current state equals the source table.
#
#   bash scripts/warehouse-demo.sh STAGE_DIR SOURCE_TABLE_CSV
#
# STAGE_DIR holds public.ecommerce_sales/dt=.../hour=.../*.csv.gz (pgcdc's file sink, or a sync of
# its S3 prefix); SOURCE_TABLE_CSV is the source table exported with a header (psql \copy ... csv
# header). The DuckDB database and dbt's target/ go to a temporary folder, removed on exit
# (PGCDC_WAREHOUSE_KEEP=1 keeps it; PGCDC_DBT_EXCLUDE leaves dbt nodes out of the build). Python tools come from $PGCDC_VENV (~/.cache/pgcdc/venv).
# Exit 0 when dbt build passed and the state matches, 1 otherwise (stale freshness is reported,
# not fatal: an old stage is stale by definition).
set -euo pipefail

usage() { echo "usage: $0 STAGE_DIR SOURCE_TABLE_CSV" >&2; exit 2; }
(($# == 2)) || usage
stage=$(cd "$1" 2>/dev/null && pwd) || { echo "error: stage folder $1 not found" >&2; exit 1; }
source_csv=$(realpath -e "$2" 2>/dev/null) || { echo "error: source table CSV $2 not found" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}
for tool in dbt python; do
    [[ -x "$venv/bin/$tool" ]] || { echo "error: $venv/bin/$tool missing; run make deps" >&2; exit 1; }
done
compgen -G "$stage/public.ecommerce_sales/*/*/*.csv*" >/dev/null \
    || { echo "error: no change files under $stage/public.ecommerce_sales" >&2; exit 1; }

if [[ -t 1 ]]; then bold=$'\e[1m' red=$'\e[31m' green=$'\e[32m' reset=$'\e[0m'; else bold='' red='' green='' reset=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pgcdc-warehouse.XXXXXX")
if [[ "${PGCDC_WAREHOUSE_KEEP:-}" == 1 ]]; then
    trap 'echo "kept $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
export PGCDC_STAGE=$stage PGCDC_DUCKDB_PATH=$work/pgcdc.duckdb DBT_SEND_ANONYMOUS_USAGE_STATS=false
dbt() {
    (cd "$repo" && "$venv/bin/dbt" "$@" --project-dir dbt --profiles-dir dbt --target local \
        --target-path "$work/target" --log-path "$work/logs")
}

# A stage copied without pgcdc's bookkeeping (the torture suite exports the table's folder only)
# has no checkpoint: then every file present counts as complete.
checkpoint_vars=()
if ! compgen -G "$stage/_pgcdc/*/checkpoint.json" >/dev/null; then
    checkpoint_vars=(--vars '{pgcdc_checkpoint: none}')
fi

step "dbt build (models, data tests, unit tests) on $stage"
started=$SECONDS
# PGCDC_DBT_EXCLUDE: space-separated nodes to leave out (the torture suite's random data does not
# follow the shop's business rules, which two data tests check).
# shellcheck disable=SC2086
if ! dbt build "${checkpoint_vars[@]}" ${PGCDC_DBT_EXCLUDE:+--exclude $PGCDC_DBT_EXCLUDE} >"$work/build.log" 2>&1; then
    grep -E 'ERROR|FAIL|Failure|Error' "$work/build.log" | head -n 40 || true
    tail -n 5 "$work/build.log"
    echo "${red}dbt build failed${reset} (full log: $work/build.log)"
    trap - EXIT
    echo "dbt current state equals the source table: NO (dbt build failed)"
    exit 1
fi
build_seconds=$((SECONDS - started))

step "dbt source freshness"
freshness_ok=1
dbt source freshness >"$work/freshness.log" 2>&1 || freshness_ok=0

step "Results"
"$venv/bin/python" - "$work" "$source_csv" "$build_seconds" "$freshness_ok" <<'EOF'
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import duckdb

work, source_csv, build_seconds, freshness_ok = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
con = duckdb.connect(str(work / "pgcdc.duckdb"), read_only=True)


def table(title, sql):
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    rows = [["" if v is None else str(v) for v in row] for row in cursor.fetchall()]
    widths = [max(len(n), *(len(r[i]) for r in rows)) if rows else len(n) for i, n in enumerate(names)]
    numeric = [str(d[1]).split("(")[0] in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DECIMAL", "DOUBLE")
               for d in cursor.description]
    line = lambda cells: "  ".join(
        c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()
    print(f"\n{title}")
    print("  " + line(names))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + line(row))


table("Top 5 invoices by total", """
    select invoice_no, customer_id, country, cast(invoice_date as date) as invoice_date,
           line_count as lines, total_amount as total_gbp
    from invoices order by total_amount desc, invoice_no limit 5""")
table("Top 5 products by revenue", """
    select stock_code, description, units_sold, revenue as revenue_gbp,
           cast(last_sold_at as date) as last_sold
    from products order by revenue desc, stock_code limit 5""")

results = json.loads((work / "target" / "run_results.json").read_text())["results"]
kinds = {"model": "models", "test": "data tests", "unit_test": "unit tests"}
summary = Counter((r["unique_id"].split(".")[0], r["status"]) for r in results)
print("\ndbt build results")
for kind, label in kinds.items():
    statuses = ", ".join(f"{n} {status}" for (k, status), n in sorted(summary.items()) if k == kind)
    print(f"  {label:<11} {statuses or 'none'}")
print(f"  took {build_seconds}s")

print("\nSource freshness")
sources_json = work / "target" / "sources.json"
if sources_json.exists():
    for r in json.loads(sources_json.read_text())["results"]:
        name = r["unique_id"].split(".", 2)[2]
        if r["status"] == "runtime error":
            print(f"  {name}: runtime error")
            continue
        crit = r["criteria"]
        print(f"  {name}: {r['status'].upper()}  newest change {r['max_loaded_at']}, "
              f"{r['max_loaded_at_time_ago_in_s'] / 60:.0f} min ago "
              f"(warn after {crit['warn_after']['count']}{crit['warn_after']['period'][0]}, "
              f"error after {crit['error_after']['count']}{crit['error_after']['period'][0]})")
else:
    print("  no result (see freshness.log)")

# The current state against the source table: same rows, same values (NULL is not ''), both ways.
columns = [r[0] for r in con.execute(
    "select column_name from information_schema.columns where table_name = 'int_ecommerce_sales__current' "
    "order by ordinal_position").fetchall()]
header = con.execute(
    f"select * from read_csv('{source_csv}', header=true, all_varchar=true) limit 0").description
source_columns = [d[0] for d in header]
types = dict(con.execute(
    "select column_name, data_type from information_schema.columns "
    "where table_name = 'int_ecommerce_sales__current'").fetchall())
missing = [c for c in source_columns if c not in types]
if missing:
    print(f"\nthe source table has columns the current state lacks: {missing}")
    print("dbt current state equals the source table: NO")
    sys.exit(1)
casts = ", ".join(f"cast({c} as {types[c]}) as {c}" for c in source_columns)
con.execute(f"""create temp table source_table as select {casts}
    from read_csv('{source_csv}', header=true, delim=',', quote='"', escape='"',
                  all_varchar=true, allow_quoted_nulls=false)""")
cols = ", ".join(source_columns)
only_dbt = con.execute(f"select count(*) from (select {cols} from int_ecommerce_sales__current "
                       f"except all select {cols} from source_table)").fetchone()[0]
only_source = con.execute(f"select count(*) from (select {cols} from source_table "
                          f"except all select {cols} from int_ecommerce_sales__current)").fetchone()[0]
rows = con.execute(f"select {cols} from int_ecommerce_sales__current order by {source_columns[0]}").fetchall()
digest = hashlib.sha256()
for row in rows:
    digest.update(repr(tuple(row)).encode())
failed = [r["unique_id"] for r in results if r["status"] not in ("success", "pass")]
equal = only_dbt == 0 and only_source == 0
print()
if failed:
    print(f"not passing: {', '.join(failed)}")
if not freshness_ok:
    # Freshness is about live data (an old stage is stale by definition): reported, not fatal.
    print("source freshness: ERROR, the newest change is older than the error threshold")
if equal:
    print(f"dbt current state equals the source table: YES ({len(rows)} rows, checksum {digest.hexdigest()[:16]})")
else:
    print(f"dbt current state equals the source table: NO ({only_dbt} rows only in dbt, "
          f"{only_source} only in the source table)")
    for side, a, b in (("only in dbt", "int_ecommerce_sales__current", "source_table"),
                       ("only in the source table", "source_table", "int_ecommerce_sales__current")):
        for row in con.execute(f"select {cols} from {a} except all select {cols} from {b} limit 3").fetchall():
            row = tuple(v[:40] + f"...({len(v)} chars)" if isinstance(v, str) and len(v) > 40 else v for v in row)
            print(f"  {side}: {row}")
sys.exit(0 if equal and not failed else 1)
EOF

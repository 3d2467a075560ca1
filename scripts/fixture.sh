#!/usr/bin/env bash
# The warehouse tests' fixture: change files from a real pgcdc run over the demo shop, and the
# source table they must rebuild. scripts/warehouse-test.sh runs it; tests/warehouse reads it.
#
#   scripts/fixture.sh <out-dir>
#
# Writes <out-dir>/stage (the files, as pgcdc's local sink left them, spool removed),
# <out-dir>/ecommerce_sales.csv (the final table) and PostgreSQL's own values of the type zoo:
# type_zoo_text.csv (the text every column prints under pgcdc's session settings) and
# type_zoo_expected.csv (the canonical forms of the view type_zoo_canonical).
#
# What it covers beyond the demo's workload: the initial snapshot, a truncate, a reload, a key
# change and an unchanged-TOAST update (replication_setup/fixture_changes.sql), and the type zoo
# (replication_setup/type_zoo.sql), half before pgcdc starts (copied by the snapshot), half while
# it streams. Whether the files rebuild the table is what the warehouse tests check (dbt on DuckDB).
#
# Then a seeded random workload on two more shapes (tests/warehouse/workload.py: composite key,
# TOAST, key changes, truncates; uuid key and the values that used to drop files), a re-copy
# (`pgcdc slot reset --yes`, then pgcdc again) and more workload; wh_accounts.csv, wh_events.csv
# are those tables at the end, seed.txt the seed.
#
# Knobs: FIXTURE_SEED (random), FIXTURE_ROWS (2000), FIXTURE_WORKLOAD_SECONDS (5), FIXTURE_KEEP=1 (keep the temp dir and
# print its path), PGCDC_BIN (default $CARGO_TARGET_DIR/debug/pgcdc: the build `make test` uses),
# PGCDC_PG_BINDIR (see scripts/lib/cluster.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/cluster.sh"
source "$here/lib/pgcdc.sh"

out=${1:?usage: scripts/fixture.sh <out-dir>}
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/pgcdc/target}
pgcdc_bin=${PGCDC_BIN:-$target_dir/debug/pgcdc}
rows=${FIXTURE_ROWS:-2000}
workload_seconds=${FIXTURE_WORKLOAD_SECONDS:-5}
workload_seed=${FIXTURE_SEED:-$RANDOM}
die() { printf 'fixture: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "$(cluster_scratch_base)/pgcdc-fixture-XXXXXX")
chmod 0711 "$work"
stage=$work/stage
cleanup() {
    local status=$?
    pgcdc_cleanup
    if ((status != 0)); then
        [[ ! -s "$work/pgcdc.log" ]] || { printf '\n--- last lines of the pgcdc log ---\n' >&2; tail -n 40 "$work/pgcdc.log" >&2; }
        [[ ! -s "$PG_DIR/postgres.log" ]] || { printf '\n--- last lines of the PostgreSQL log ---\n' >&2; tail -n 20 "$PG_DIR/postgres.log" >&2; }
    fi
    cluster_cleanup
    if [[ "${FIXTURE_KEEP:-0}" == 1 ]]; then printf '\nkept %s\n' "$work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "A throwaway PostgreSQL in $work/pg"
cluster_start "$work/pg"
cluster_bootstrap
info "$(pg_run "$PG_BINDIR" postgres --version) on 127.0.0.1:$PG_PORT"
shop_setup "$rows"
step "Two more table shapes for the generic dbt package (tests/warehouse/workload.py setup)"
python3 "$SHOP_REPO/tests/warehouse/workload.py" setup | sql -q >/dev/null
step "The type zoo, before pgcdc starts (replication_setup/type_zoo.sql, phase=snapshot)"
sql -v phase=snapshot -f "$SHOP_REPO/replication_setup/type_zoo.sql"

pgcdc_write_config "$work/pgcdc.toml" "url = \"file://$stage\""
# Small files: the random workload below spreads over many files and its big transactions over
# part sets, for the warehouse tests to load in random batches.
sed -i -e 's/^max_file_bytes = .*/max_file_bytes = "256KiB"/' -e 's/^window = .*/window = "1s"/' "$work/pgcdc.toml"
pgcdc_start "$pgcdc_bin" "$work/pgcdc.toml" "$work/pgcdc.log"

step "The shop workload for ${workload_seconds}s (replication_setup/workload.sql)"
start=$SECONDS
while ((SECONDS - start < workload_seconds)); do
    pgcdc_alive
    sql -v txns=20 -f "$SHOP_REPO/replication_setup/workload.sql" >/dev/null
done
step "Truncate, reload, a key change and an unchanged-TOAST update (replication_setup/fixture_changes.sql)"
sql -v rows=500 -f "$SHOP_REPO/replication_setup/fixture_changes.sql" >/dev/null
sql -v txns=40 -f "$SHOP_REPO/replication_setup/workload.sql" >/dev/null
step "The type zoo while pgcdc streams: the same rows again, updates, deletes (phase=stream)"
sql -v phase=stream -f "$SHOP_REPO/replication_setup/type_zoo.sql"

step "A seeded random workload on the other shapes (seed $workload_seed)"
read_checkpoint() { cat "$stage/_pgcdc/$PGCDC_SLOT/checkpoint.json" 2>/dev/null; }
# In 8 chunks, each made durable before the next: at least that many files per table.
for chunk in 1 2 3 4 5 6 7 8; do
    python3 "$SHOP_REPO/tests/warehouse/workload.py" txns --seed "$((workload_seed * 10 + chunk))" --count 20 | sql -q >/dev/null
    pgcdc_wait_durable read_checkpoint >/dev/null
done
pgcdc_stop

step "A re-copy: pgcdc slot reset --yes, then pgcdc again (a fresh snapshot of every table), more workload"
"$pgcdc_bin" slot reset --yes --config "$work/pgcdc.toml" >>"$work/pgcdc.log" 2>&1
pgcdc_start "$pgcdc_bin" "$work/pgcdc.toml" "$work/pgcdc.log"
python3 "$SHOP_REPO/tests/warehouse/workload.py" txns --seed "$((workload_seed + 1))" --count 50 | sql -q >/dev/null
sql -v txns=10 -f "$SHOP_REPO/replication_setup/workload.sql" >/dev/null
pgcdc_wait_durable read_checkpoint
pgcdc_stop

step "Saving the files and the final tables to $out"
mkdir -p "$out"
rm -rf "$out/stage"
cp -a "$stage" "$out/stage"
rm -rf "$out/stage/_pgcdc/$PGCDC_SLOT/spool"
sql -c "\\copy (select * from $SHOP_TABLE order by $SHOP_KEY) to '$out/$SHOP_TABLE.csv' with (format csv, header true)"
for shape in wh_accounts wh_events; do
    sql -c "\\copy (select * from public.$shape) to '$out/$shape.csv' with (format csv, header true)"
done
sql <<SQL
set client_encoding = 'UTF8'; set datestyle = 'ISO'; set timezone = 'UTC'; set intervalstyle = 'postgres';
set extra_float_digits = 3; set bytea_output = 'hex'; set lc_monetary = 'C';
\\copy (select * from public.type_zoo order by id) to '$out/type_zoo_text.csv' with (format csv, header true)
\\copy (select * from public.type_zoo_canonical order by id) to '$out/type_zoo_expected.csv' with (format csv, header true)
SQL
echo "$workload_seed" >"$out/seed.txt"
files=$(change_files "$out/stage" | wc -l)
((files > 0)) || die "pgcdc wrote no change files"
info "fixture: seed $workload_seed; $files change files; $SHOP_TABLE has $(sql -At -c "select count(*) from $SHOP_TABLE") rows, type_zoo $(sql -At -c 'select count(*) from public.type_zoo')"

#!/usr/bin/env bash
# pgcdc end to end on a laptop: a throwaway PostgreSQL cluster with ecommerce_sales and sample
# data, a local S3 server (moto), pgcdc streaming the table into 2-second gzip CSV windows in an
# S3 bucket while a shop workload runs, a clean SIGTERM, and then the proof: the files, rows per
# operation, and whether replaying the files gives exactly the table.
#
#   make demo                      (installs deps, builds pgcdc, runs this)
#   DEMO_SETUP_ONLY=1 scripts/demo.sh    cluster + schema + sample data only, then clean up
#
# Knobs: DEMO_SINK (s3 | file: a local directory instead of the S3 server), DEMO_ROWS (2000),
# DEMO_WORKLOAD_SECONDS (10), DEMO_KEEP=1 (keep the temp dir and print its path),
# DEMO_EXTRA_SQL=<file> (run it in `shop` after the sample data), DEMO_OUT=<dir> (keep the files
# and the final table there), DEMO_WAREHOUSE=0 (skip dbt at the end), PGCDC_BIN (default
# $CARGO_TARGET_DIR/debug/pgcdc: the build `make test` uses too), PGCDC_PG_BINDIR.
# DEMO_SCENARIO=fixture is the warehouse tests' fixture, now scripts/fixture.sh: it runs that
# (into DEMO_OUT) instead.
#
# The cluster, pgcdc's run and the shop are the helpers' (scripts/lib/cluster.sh: initdb into a
# temp dir, a free port on 127.0.0.1, wal_level=logical, run as the `postgres` user when we are
# root; scripts/lib/pgcdc.sh). The system cluster is never touched. Everything is removed on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ "${DEMO_SCENARIO:-}" == fixture ]]; then
    FIXTURE_ROWS=${DEMO_ROWS:-2000} FIXTURE_WORKLOAD_SECONDS=${DEMO_WORKLOAD_SECONDS:-5} \
        FIXTURE_KEEP=${DEMO_KEEP:-0} exec bash "$here/fixture.sh" "${DEMO_OUT:?DEMO_SCENARIO=fixture needs DEMO_OUT}"
fi
source "$here/lib/cluster.sh"
source "$here/lib/pgcdc.sh"
repo=$SHOP_REPO
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/pgcdc/target}
pgcdc_bin=${PGCDC_BIN:-$target_dir/debug/pgcdc}
rows=${DEMO_ROWS:-2000}
workload_seconds=${DEMO_WORKLOAD_SECONDS:-10}
setup_only=${DEMO_SETUP_ONLY:-0}
sink_kind=${DEMO_SINK:-s3}
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}
bucket=pgcdc-demo
prefix=shop
slot=$PGCDC_SLOT
table=$SHOP_TABLE
key=$SHOP_KEY

die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "$(cluster_scratch_base)/pgcdc-demo-XXXXXX")
chmod 0711 "$work"
pgdir=$work/pg
stage=$work/stage
config=$work/pgcdc.toml
pgcdc_log=$work/pgcdc.log
moto_pid=

cleanup() {
    local status=$?
    pgcdc_cleanup
    if ((status != 0)); then
        if [[ -s "$pgcdc_log" ]]; then
            printf '\n--- last lines of the pgcdc log ---\n' >&2
            tail -n 40 "$pgcdc_log" >&2 || true
        fi
        if [[ -s "$pgdir/postgres.log" ]]; then
            printf '\n--- last lines of the PostgreSQL log ---\n' >&2
            tail -n 20 "$pgdir/postgres.log" >&2 || true
        fi
    fi
    if [[ -n "$moto_pid" ]]; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
    fi
    cluster_cleanup
    if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
        printf '\nkept %s\n' "$work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the cluster --------------------------------------------------------------------------------
step "Starting a throwaway PostgreSQL in $pgdir"
cluster_start "$pgdir"
info "$(pg_run "$PG_BINDIR" postgres --version), listening on 127.0.0.1:$PG_PORT"
# The same roles and database as the test harness.
cluster_bootstrap

# --- schema and sample data ---------------------------------------------------------------------
shop_setup "$rows"
sql -P footer=off <<'EOF'
select count(*) as rows,
       count(distinct invoice_no) as invoices,
       round(100.0 * count(*) filter (where invoice_no like 'C%') / count(*), 1) as cancelled_pct,
       round(100.0 * count(*) filter (where customer_id is null) / count(*), 1) as no_customer_pct,
       count(distinct country) as countries,
       min(invoice_date)::date as first_day,
       max(invoice_date)::date as last_day,
       min(unit_price) as min_price,
       max(unit_price) as max_price,
       left(md5(string_agg(s::text, '|' order by id)), 12) as fingerprint
from ecommerce_sales as s;
select country, count(*) as rows from ecommerce_sales group by 1 order by 2 desc, 1 limit 5;
select * from ecommerce_sales order by id limit 5;
EOF

[[ -z "${DEMO_EXTRA_SQL:-}" ]] || sql -f "$DEMO_EXTRA_SQL"
if [[ "$setup_only" == 1 ]]; then
    step "DEMO_SETUP_ONLY=1: stopping before pgcdc"
    exit 0
fi

# --- pgcdc --------------------------------------------------------------------------------------
case "$sink_kind" in
    s3)
        [[ -x "$venv/bin/moto_server" ]] || die "no moto_server in $venv (run scripts/install-deps.sh)"
        s3_port=$(free_port)
        s3_endpoint=http://127.0.0.1:$s3_port
        step "Starting a local S3 server (moto) on $s3_endpoint"
        MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=65536 "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" \
            >"$work/moto.log" 2>&1 </dev/null &
        moto_pid=$!
        export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_REGION=us-east-1
        export AWS_EC2_METADATA_DISABLED=true
        s3() { "$venv/bin/python" "$repo/scripts/s3util.py" "$s3_endpoint" "$@"; }
        moto_up() { s3 mkbucket "$bucket" >/dev/null 2>&1; }
        wait_for "the S3 server to accept requests" 30 moto_up
        info "bucket s3://$bucket created"
        sink_section="url = \"s3://$bucket/$prefix\"
endpoint = \"$s3_endpoint\"
force_path_style = true
spool_dir = \"$work/spool\""
        read_checkpoint() { s3 get "$bucket" "$prefix/_pgcdc/$slot/checkpoint.json"; }
        ;;
    file)
        sink_section="url = \"file://$stage\""
        read_checkpoint() { cat "$stage/_pgcdc/$slot/checkpoint.json" 2>/dev/null; }
        ;;
    *) die "DEMO_SINK must be s3 or file" ;;
esac
pgcdc_write_config "$config" "$sink_section"
pgcdc_start "$pgcdc_bin" "$config" "$pgcdc_log"

# --- the workload -------------------------------------------------------------------------------
step "Running the shop workload for ${workload_seconds}s (replication_setup/workload.sql)"
start=$SECONDS
rounds=0
while ((SECONDS - start < workload_seconds)); do
    pgcdc_alive
    sql -v txns=20 -f "$repo/replication_setup/workload.sql" >/dev/null
    rounds=$((rounds + 1))
done
info "$((rounds * 20)) transactions; the table now has $(sql -At -c "select count(*) from $table") rows"

pgcdc_wait_durable read_checkpoint

if command -v curl >/dev/null 2>&1; then
    step "A few of pgcdc's metrics (http://127.0.0.1:$PGCDC_METRICS_PORT/metrics)"
    curl -fsS "http://127.0.0.1:$PGCDC_METRICS_PORT/metrics" 2>/dev/null | grep '^pgcdc_' | head -n 15 | sed 's/^/    /' || info "(no metrics endpoint answered)"
fi

pgcdc_stop

# --- what landed --------------------------------------------------------------------------------
if [[ "$sink_kind" == s3 ]]; then
    step "Downloading s3://$bucket/$prefix/ to $stage"
    info "$(s3 sync "$bucket" "$prefix" "$stage") objects"
fi
step "Files in $stage"
mapfile -t files < <(change_files "$stage")
((${#files[@]} > 0)) || die "pgcdc wrote no change files"
printf '%s\n' "${files[@]}" | head -n 30 | sed 's/^/    /'
((${#files[@]} <= 30)) || info "... and $((${#files[@]} - 30)) more"
info "bookkeeping: $(cd "$stage" && find _pgcdc -type f 2>/dev/null | sort | tr '\n' ' ')"
printf '%s\n' "${files[@]}" | cut -d/ -f1 | sort | uniq -c | while read -r count dir; do
    info "$dir: $count files, $(du -sh "$stage/$dir" | cut -f1)"
done

# Load every file of $table into a scratch table with COPY: PostgreSQL's CSV reader, like pgcdc's
# writer, tells an unquoted empty field (NULL) from "" (the empty string). HEADER MATCH checks each
# file's header against the columns.
step "Replaying the files in PostgreSQL"
mapfile -t table_files < <(printf '%s\n' "${files[@]}" | grep -F "public.$table/")
((${#table_files[@]} > 0)) || die "pgcdc wrote no change files for public.$table"
# Files written after an ALTER TABLE have another header: the replay table gets every column any
# file has, and each file is loaded by its own header's names (as dbt and Snowflake match them).
declare -A seen_column=()
all_columns=()
{
    for file in "${table_files[@]}"; do
        file_header=$(gzip -dcf "$stage/$file" | head -n 1) || true
        file_header=${file_header%$'\r'}
        for column in $(tr ',' '\n' <<<"$file_header"); do
            if [[ -z "${seen_column[$column]:-}" ]]; then
                seen_column[$column]=1
                all_columns+=("$column")
            fi
        done
        list=$(tr ',' '\n' <<<"$file_header" | sed 's/.*/"&"/' | paste -sd, -)
        if [[ "$file" == *.gz ]]; then
            printf "\\\\copy demo_changes (%s) from program 'gzip -dc %s' with (format csv, header true)\n" "$list" "$stage/$file"
        else
            printf "\\\\copy demo_changes (%s) from '%s' with (format csv, header true)\n" "$list" "$stage/$file"
        fi
    done
} >"$work/load.sql"
header=$(IFS=,; echo "${all_columns[*]}")
columns=$(tr ',' '\n' <<<"$header" | sed 's/.*/"&" text/' | paste -sd, -)
sql -c "create table demo_changes ($columns)"
sql -f "$work/load.sql"
# An unchanged TOAST value was not sent: take it from the key's previous change that had it.
for column in $(tr ',' '\n' <<<"$header" | grep -v '^_'); do
    sql -q <<EOF
update demo_changes as c
set "$column" = (select p."$column" from demo_changes as p
                 where p.$key = c.$key
                   and (p._commit_lsn::numeric, p._seq::bigint) < (c._commit_lsn::numeric, c._seq::bigint)
                   and not coalesce(nullif(p._unchanged, '')::jsonb ? '$column', false)
                 order by p._commit_lsn::numeric desc, p._seq::bigint desc
                 limit 1)
where coalesce(nullif(c._unchanged, '')::jsonb ? '$column', false);
EOF
done

sql -P footer=off <<'EOF'
select _op, count(*) as rows from demo_changes group by 1 order by 1;
select count(*) as change_rows,
       count(*) - count(distinct (_commit_lsn, _seq)) as duplicate_keys,
       count(distinct _commit_lsn) as transactions,
       count(*) filter (where _unchanged is not null and _unchanged not in ('', '[]')) as rows_with_unchanged
from demo_changes;
EOF

# The table's columns with their types, to cast the replayed text back for an exact comparison.
typed=$(sql -At -c "select string_agg(format('%I::%s', attname, format_type(atttypid, atttypmod)), ', ' order by attnum)
                    from pg_attribute where attrelid = '$table'::regclass and attnum > 0 and not attisdropped")
sql <<EOF
create view demo_replayed as
with ordered as (
    select *, _commit_lsn::numeric as lsn, _seq::bigint as seq from demo_changes
),
last_truncate as (
    select lsn, seq from ordered where _op = 'T'
    union all select -1, -1
    order by lsn desc, seq desc
    limit 1
),
latest as (
    -- The last change per key after the last truncate (dbt's int_<table>__current does the same).
    select distinct on ($key::bigint) o.*
    from ordered as o, last_truncate as t
    where o._op in ('I', 'U', 'D', 'R') and (o.lsn, o.seq) > (t.lsn, t.seq)
    order by $key::bigint, o.lsn desc, o.seq desc
)
select $typed from latest where _op <> 'D';
EOF
read -r only_files only_table replayed table_rows < <(sql -At -F ' ' <<EOF
select (select count(*) from (select * from demo_replayed except all select * from $table) as a),
       (select count(*) from (select * from $table except all select * from demo_replayed) as b),
       (select count(*) from demo_replayed),
       (select count(*) from $table);
EOF
)
info "replayed rows: $replayed, table rows: $table_rows"
if [[ -n "${DEMO_OUT:-}" ]]; then
    step "Saving the files and the final table to $DEMO_OUT"
    mkdir -p "$DEMO_OUT"
    rm -rf "$DEMO_OUT/stage"
    cp -a "$stage" "$DEMO_OUT/stage"
    rm -rf "$DEMO_OUT/stage/_pgcdc/$slot/spool"
    sql -c "\\copy (select * from $table order by $key) to '$DEMO_OUT/$table.csv' with (format csv, header true)"
    info "$DEMO_OUT/stage and $DEMO_OUT/$table.csv"
fi
if ((only_files == 0 && only_table == 0)); then
    step "Replay of the files equals the table: YES"
else
    step "Replay of the files equals the table: NO ($only_files rows only in the files, $only_table only in the table)"
    sql <<EOF
(select 'only in files' as side, * from (select * from demo_replayed except all select * from $table) as a limit 5)
union all
(select 'only in table', * from (select * from $table except all select * from demo_replayed) as b limit 5);
EOF
    exit 1
fi

# --- the warehouse: dbt on DuckDB over the same files -------------------------------------------
if [[ "${DEMO_WAREHOUSE:-1}" != 0 ]]; then
    step "dbt: staging -> current state -> invoices and products, on DuckDB (scripts/warehouse-demo.sh)"
    sql -c "\\copy (select * from $table order by $key) to '$work/$table.csv' with (format csv, header true)"
    bash "$repo/scripts/warehouse-demo.sh" "$stage" "$work/$table.csv"
fi

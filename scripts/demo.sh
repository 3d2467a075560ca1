#!/usr/bin/env bash
# pgcdc end to end on a laptop: a throwaway PostgreSQL cluster with ecommerce_sales and sample
# data, a local S3 server (moto), pgcdc streaming the table into 2-second gzip CSV windows in an
# S3 bucket while a shop workload runs, a clean SIGTERM, and then the proof: the files, rows per
# operation, and whether replaying the files gives exactly the table.
#
#   make demo                      (installs deps, builds pgcdc, runs this)
#   DEMO_SETUP_ONLY=1 scripts/demo.sh    cluster + schema + sample data only, then clean up
#
# Knobs: DEMO_SCENARIO=fixture (adds a truncate, a reload, a key change and an unchanged-TOAST
# update, and the type zoo: replication_setup/type_zoo.sql, half before pgcdc starts, half while it
# streams), DEMO_OUT=<dir> (keep the files and the final table there, for the warehouse tests; with
# the zoo also PostgreSQL's own values of it: type_zoo_text.csv, type_zoo_expected.csv),
# DEMO_SINK (s3 | file: a local directory instead of the S3 server), DEMO_ROWS (2000), DEMO_WORKLOAD_SECONDS (10), DEMO_KEEP=1 (keep the temp dir and print
# its path), DEMO_EXTRA_SQL=<file> (run it in `shop` after the sample data), PGCDC_BIN (default
# $CARGO_TARGET_DIR/debug/pgcdc: the build `make test` uses too), PGCDC_PG_BINDIR.
#
# The cluster is started the way the test harness does it (tests/common/cluster.rs): initdb into
# a temp dir, a free port on 127.0.0.1, wal_level=logical, run as the `postgres` user when we are
# root. The system cluster is never touched. Everything is removed on exit.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/pgcdc/target}
pgcdc_bin=${PGCDC_BIN:-$target_dir/debug/pgcdc}
rows=${DEMO_ROWS:-2000}
workload_seconds=${DEMO_WORKLOAD_SECONDS:-10}
setup_only=${DEMO_SETUP_ONLY:-0}
sink_kind=${DEMO_SINK:-s3}
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}
bucket=pgcdc-demo
prefix=shop
slot=pgcdc
publication=pgcdc_pub
table=ecommerce_sales
key=id
user=pgcdc_scram
password=secret-pw-$user

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- the server binaries: PGCDC_PG_BINDIR, pg_config --bindir, newest /usr/lib/postgresql/*/bin
find_bindir() {
    local dir
    if [[ -n "${PGCDC_PG_BINDIR:-}" ]]; then
        [[ -x "$PGCDC_PG_BINDIR/initdb" ]] || die "PGCDC_PG_BINDIR=$PGCDC_PG_BINDIR has no initdb"
        echo "$PGCDC_PG_BINDIR"
        return
    fi
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then
        echo "$dir"
        return
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n -r); do
        if [[ -x "$dir/initdb" ]]; then
            echo "$dir"
            return
        fi
    done
    die "no PostgreSQL server binaries (initdb); run scripts/install-deps.sh"
}

# A port on 127.0.0.1 that nobody listens on right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if [[ -z $(ss -Htan "sport = :$port" 2>/dev/null) ]]; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# Polls a command until it succeeds, up to a deadline in seconds; never a fixed sleep.
wait_for() {
    local what=$1 deadline=$2
    shift 2
    local start=$SECONDS
    until "$@"; do
        if ((SECONDS - start >= deadline)); then
            die "timed out after ${deadline}s waiting for $what"
        fi
        sleep 0.1
    done
}

bindir=$(find_bindir)
if [[ $(id -u) -eq 0 ]]; then
    # initdb and postgres refuse to run as root.
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user; run scripts/install-deps.sh"
    as_pg=(runuser -u postgres --)
    base=/tmp # postgres must be able to enter it ($TMPDIR may be under /root)
else
    as_pg=()
    base=${TMPDIR:-/tmp}
fi

work=$(mktemp -d "$base/pgcdc-demo-XXXXXX")
chmod 0711 "$work"
pgdir=$work/pg
mkdir -m 0700 "$pgdir"
[[ ${#as_pg[@]} -eq 0 ]] || chown postgres: "$pgdir"
stage=$work/stage
config=$work/pgcdc.toml
pgcdc_log=$work/pgcdc.log
pg_started=0
pgcdc_pid=
moto_pid=

cleanup() {
    local status=$?
    if [[ -n "$pgcdc_pid" ]] && kill -0 "$pgcdc_pid" 2>/dev/null; then
        kill -KILL "$pgcdc_pid" 2>/dev/null || true
        wait "$pgcdc_pid" 2>/dev/null || true
    fi
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
    if ((pg_started)); then
        "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$pgdir/data" -m immediate -w -s >/dev/null 2>&1 || true
    fi
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
step "Starting a throwaway PostgreSQL ($("$bindir/postgres" --version)) in $pgdir"
(cd "$pgdir" && "${as_pg[@]}" "$bindir/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync >"$work/initdb.log" 2>&1) || { cat "$work/initdb.log" >&2; die "initdb failed"; }
port=$(free_port)
"${as_pg[@]}" tee "$pgdir/data/pgcdc_demo.conf" >/dev/null <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pgdir'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
wal_sender_timeout = '60s'
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
log_replication_commands = on
EOF
echo "include 'pgcdc_demo.conf'" | "${as_pg[@]}" tee -a "$pgdir/data/postgresql.conf" >/dev/null
"${as_pg[@]}" tee "$pgdir/data/pg_hba.conf" >/dev/null <<'EOF'
host all         pgcdc_scram 127.0.0.1/32 scram-sha-256
host replication pgcdc_scram 127.0.0.1/32 scram-sha-256
host all         pgcdc_md5   127.0.0.1/32 md5
host replication pgcdc_md5   127.0.0.1/32 md5
host all         pgcdc_clear 127.0.0.1/32 password
host replication pgcdc_clear 127.0.0.1/32 password
host  all         all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
local all         all              trust
local replication all              trust
EOF
pg_started=1
(cd "$pgdir" && "${as_pg[@]}" "$bindir/pg_ctl" start -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 -s) ||
    die "PostgreSQL did not start"

psql_cmd=("$bindir/psql" -X -q -v ON_ERROR_STOP=1)
# psql as the superuser (trusted on 127.0.0.1) in database $1.
sql_in() {
    local db=$1
    shift
    "${psql_cmd[@]}" "host=127.0.0.1 port=$port user=postgres dbname=$db connect_timeout=5" "$@"
}
sql() { sql_in shop "$@"; }
pg_ready() { sql_in postgres -c 'select 1' >/dev/null 2>&1; }
wait_for "PostgreSQL on port $port to accept connections" 60 pg_ready
info "listening on 127.0.0.1:$port"

# The same roles and database as the test harness.
sql_in postgres <<EOF
set password_encryption = 'scram-sha-256';
create role pgcdc_scram login replication password 'secret-pw-pgcdc_scram';
set password_encryption = 'md5';
create role pgcdc_md5 login replication password 'secret-pw-pgcdc_md5';
set password_encryption = 'scram-sha-256';
create role pgcdc_clear login replication password 'secret-pw-pgcdc_clear';
EOF
sql_in postgres -c 'create database shop owner postgres'
sql <<'EOF'
grant usage on schema public to pgcdc_scram, pgcdc_md5, pgcdc_clear;
alter default privileges for role postgres in schema public
    grant select on tables to pgcdc_scram, pgcdc_md5, pgcdc_clear;
EOF

# --- schema and sample data ---------------------------------------------------------------------
step "Applying replication_setup/"
for file in "$repo"/replication_setup/[0-9]*.sql; do
    info "${file#"$repo"/}"
    sql -f "$file"
done
# Idempotent: applying them twice must work (quietly: "already exists, skipping").
for file in "$repo"/replication_setup/[0-9]*.sql; do
    PGOPTIONS='-c client_min_messages=warning' sql -f "$file"
done

step "Loading $rows sample rows (replication_setup/sample_data.sql)"
sql -v rows="$rows" -f "$repo/replication_setup/sample_data.sql"
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
if [[ "${DEMO_SCENARIO:-}" == fixture ]]; then
    # Half of the type zoo exists before pgcdc starts, so it comes through the initial snapshot
    # (COPY); the other half is written while pgcdc streams (pgoutput), further down.
    step "The type zoo, before pgcdc starts (replication_setup/type_zoo.sql, phase=snapshot)"
    sql -v phase=snapshot -f "$repo/replication_setup/type_zoo.sql"
    info "public.type_zoo: $(sql -At -c 'select count(*) from public.type_zoo') rows, in publication $publication"
fi
if [[ "$setup_only" == 1 ]]; then
    step "DEMO_SETUP_ONLY=1: stopping before pgcdc"
    exit 0
fi

# --- pgcdc --------------------------------------------------------------------------------------
[[ -x "$pgcdc_bin" ]] || die "no pgcdc binary at $pgcdc_bin (run 'make build' or set PGCDC_BIN)"
metrics_port=$(free_port)
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
cat >"$config" <<EOF
[source]
url = "postgres://$user:$password@127.0.0.1:$port/shop"
slot = "$slot"
publication = "$publication"

[sink]
$sink_section

[batch]
window = "2s"
max_file_bytes = "128MiB"
format = "csv.gz"

[metrics]
listen = "127.0.0.1:$metrics_port"
EOF
step "Starting pgcdc ($pgcdc_bin)"
info "config $config:"
sed 's/^/      /' "$config"
"$pgcdc_bin" run --config "$config" >"$pgcdc_log" 2>&1 </dev/null &
pgcdc_pid=$!

pgcdc_alive() {
    kill -0 "$pgcdc_pid" 2>/dev/null || die "pgcdc exited early (see its log below)"
}
slot_active() {
    pgcdc_alive
    [[ $(sql -At -c "select active from pg_replication_slots where slot_name = '$slot'") == t ]]
}
wait_for "pgcdc to create slot $slot and stream from it" 60 slot_active
info "slot $slot is active"

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
if [[ "${DEMO_SCENARIO:-}" == fixture ]]; then
    step "Truncate, reload, a key change and an unchanged-TOAST update (replication_setup/fixture_changes.sql)"
    sql -v rows=500 -f "$repo/replication_setup/fixture_changes.sql" >/dev/null
    sql -v txns=40 -f "$repo/replication_setup/workload.sql" >/dev/null
    info "the table now has $(sql -At -c "select count(*) from $table") rows"
    step "The type zoo while pgcdc streams: the same rows again, updates, deletes (phase=stream)"
    sql -v phase=stream -f "$repo/replication_setup/type_zoo.sql"
    info "public.type_zoo: $(sql -At -c 'select count(*) from public.type_zoo') rows"
fi

# The last transaction touches the table and notes an LSN taken before its commit record: once
# pgcdc's checkpoint commit_lsn reaches it, every transaction of the workload is in the files.
target=$(sql -At <<EOF
begin;
update $table set quantity = quantity where $key = (select min($key) from $table);
select pg_current_wal_insert_lsn();
commit;
EOF
)
info "waiting for the checkpoint to reach $target (pg_current_wal_lsn $(sql -At -c 'select pg_current_wal_lsn()'))"
checkpoint_lsn() {
    local text value
    text=$(read_checkpoint) || return 1
    value=$(grep -o '"commit_lsn"[[:space:]]*:[[:space:]]*"\?[0-9A-Fa-f/]*' <<<"$text" | grep -o '[0-9A-Fa-f/]*$' | head -n 1) || return 1
    if [[ "$value" == */* ]]; then
        echo "$value"
    else
        # A plain integer: turn it into X/Y.
        sql -At -c "select '0/0'::pg_lsn + $value::numeric"
    fi
}
checkpoint_reached() {
    pgcdc_alive
    local lsn
    lsn=$(checkpoint_lsn) || return 1
    [[ $(sql -At -c "select '$lsn'::pg_lsn >= '$target'::pg_lsn") == t ]]
}
wait_for "the checkpoint's commit_lsn >= $target" 120 checkpoint_reached
info "checkpoint: $(read_checkpoint | tr -d '\n')"

if command -v curl >/dev/null 2>&1; then
    step "A few of pgcdc's metrics (http://127.0.0.1:$metrics_port/metrics)"
    curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep '^pgcdc_' | head -n 15 | sed 's/^/    /' || info "(no metrics endpoint answered)"
fi

step "SIGTERM to pgcdc (pid $pgcdc_pid)"
kill -TERM "$pgcdc_pid"
pgcdc_exited() { ! kill -0 "$pgcdc_pid" 2>/dev/null; }
wait_for "pgcdc to exit after SIGTERM" 60 pgcdc_exited
status=0
wait "$pgcdc_pid" || status=$?
pgcdc_pid=
((status == 0)) || die "pgcdc exited with status $status after SIGTERM (expected 0)"
info "pgcdc exited 0"

# --- what landed --------------------------------------------------------------------------------
if [[ "$sink_kind" == s3 ]]; then
    step "Downloading s3://$bucket/$prefix/ to $stage"
    info "$(s3 sync "$bucket" "$prefix" "$stage") objects"
fi
step "Files in $stage"
mapfile -t files < <(cd "$stage" && find . -path ./_pgcdc -prune -o -type f \
    \( -name '*.csv' -o -name '*.csv.gz' \) ! -name '.*' -print | sed 's|^\./||' | sort)
((${#files[@]} > 0)) || die "pgcdc wrote no change files"
printf '%s\n' "${files[@]}" | head -n 30 | sed 's/^/    /'
((${#files[@]} <= 30)) || info "... and $((${#files[@]} - 30)) more"
info "bookkeeping: $(cd "$stage" && find _pgcdc -type f 2>/dev/null | sort | tr '\n' ' ')"
printf '%s\n' "${files[@]}" | cut -d/ -f1 | sort | uniq -c | while read -r count dir; do
    info "$dir: $count files, $(du -sh "$stage/$dir" | cut -f1)"
done

# Load every file of $table into a scratch table with COPY: PostgreSQL's CSV reader, like pgcdc's
# writer, tells an unquoted empty field (NULL) from "" (the empty string). HEADER MATCH checks each
# file's header against the columns. (The fixture's type zoo is checked by the warehouse tests.)
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
    if [[ $(sql -At -c "select to_regclass('public.type_zoo') is not null") == t ]]; then
        # PostgreSQL's own values of the zoo, for tests/warehouse/test_type_zoo.py: the text every
        # column prints under pgcdc's session settings, and the canonical forms of the view
        # type_zoo_canonical (replication_setup/type_zoo.sql).
        sql <<EOF
set client_encoding = 'UTF8'; set datestyle = 'ISO'; set timezone = 'UTC'; set intervalstyle = 'postgres';
set extra_float_digits = 3; set bytea_output = 'hex'; set lc_monetary = 'C';
\\copy (select * from public.type_zoo order by id) to '$DEMO_OUT/type_zoo_text.csv' with (format csv, header true)
\\copy (select * from public.type_zoo_canonical order by id) to '$DEMO_OUT/type_zoo_expected.csv' with (format csv, header true)
EOF
        info "$DEMO_OUT/type_zoo_text.csv and $DEMO_OUT/type_zoo_expected.csv"
    fi
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

#!/usr/bin/env bash
# pgcdc against its natural ceiling, in one run on one throwaway cluster: two slots on the same
# publication are created before the load, then one is drained by pg_recvlogical (which only
# writes the raw pgoutput bytes to a file) and the other by pgcdc (decoding, CSV, gzip, durable
# files, checkpoint). Prints both drain times, rows/s, the ratio, pgcdc's peak RSS and CPU
# seconds, and appends one JSON line per scenario to benches/results.jsonl.
#
#   make bench                                  (release build, default scenarios)
#   benches/bench.sh --rows 1000000 --rows-per-txn 1000000
#   benches/bench.sh --rows 200000 --rows-per-txn 10 --width 200
#
# Each scenario is measured twice, once with each drain first, and averaged.
# The breadth phase: 10, 500 and 5,000 tables of 20 rows (BENCH_BREADTH_TABLES), their first copy
# and then one transaction updating two rows in every table, into S3 (moto): peak RSS and time
# to durable of each.
# Drain time for pgcdc runs until its checkpoint covers the last transaction (a marker row after
# the load), with a 200 ms window, so it includes making the files durable.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/pgcdc/target}
pgcdc_bin=${PGCDC_BIN:-$target_dir/release/pgcdc}
results=${BENCH_RESULTS:-$repo/benches/results.jsonl}
scenarios=()
rows=""
per_txn=""
width=0
while (($#)); do
    case "$1" in
        --rows) rows=$2; shift 2 ;;
        --rows-per-txn) per_txn=$2; shift 2 ;;
        --width) width=$2; shift 2 ;;
        *) echo "usage: $0 [--rows N] [--rows-per-txn N] [--width EXTRA_BYTES]" >&2; exit 2 ;;
    esac
done
if [[ -n "$rows" ]]; then
    scenarios=("$rows:${per_txn:-$rows}:$width")
else
    scenarios=("1000000:1000000:$width" "200000:10:$width")
fi

say() { printf '%s\n' "$*" >&2; }
# BENCH_ONLY=scenarios|latency|snapshot|toast|breadth runs one phase (default: all).
want() { [[ -z "${BENCH_ONLY:-}" || "${BENCH_ONLY}" == "$1" ]]; }
die() { say "bench: $*"; exit 1; }
[[ -x "$pgcdc_bin" ]] || die "no pgcdc binary at $pgcdc_bin (make build-release)"
# The throwaway cluster and its server binaries: scripts/lib/cluster.sh, as the demo's.
source "$repo/scripts/lib/cluster.sh"
bindir=$(pg_bindir) || die "no PostgreSQL server binaries (scripts/install-deps.sh)"
[[ -x "$bindir/pg_recvlogical" ]] || die "no pg_recvlogical in $bindir (scripts/install-deps.sh)"
# pg_recvlogical asks for what pgcdc negotiates (src/source/slot.rs): protocol 2 with streaming
# on PostgreSQL 14+, so both drains make the walsender do the same work.
if (($("$bindir/postgres" -V | grep -o '[0-9]*' | head -n 1) >= 14)); then
    recv_protocol=(-o proto_version=2 -o streaming=on)
else
    recv_protocol=(-o proto_version=1)
fi

work=$(mktemp -d "$(cluster_scratch_base)/pgcdc-bench-XXXXXX")
chmod 0711 "$work"
pgcdc_pid=
cleanup() {
    [[ -z "$pgcdc_pid" ]] || kill -KILL "$pgcdc_pid" 2>/dev/null || true
    cluster_cleanup
    rm -rf "$work"
}
trap cleanup EXIT

# The helper's settings with the benchmark's own on top: durable commits and full-page writes as
# on a real server (only fsync stays off), and room for million-row transactions.
# (The lock table must hold the breadth phase's one transaction over 5,000 tables and indexes.)
cluster_start "$work/pg" "synchronous_commit = on" "full_page_writes = on" \
    "shared_buffers = '256MB'" "max_wal_size = '4GB'" "max_locks_per_transaction = 256"
port=$PG_PORT
sql() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
sql -d postgres -c 'create database shop'
sql -d shop -f "$repo/replication_setup/001_ecommerce_sales.sql" >/dev/null
sql -d shop -c 'create publication pgcdc_pub for table ecommerce_sales'

now() { date +%s.%N; }
# Commits a one-row marker transaction and prints an LSN noted inside it: once a checkpoint's
# commit_lsn reaches it, everything committed before the marker is durable (idle
# acknowledgement, which is rate limited, plays no part in the timing).
insert_marker() {
    sql -d shop -At <<EOF
begin;
insert into ecommerce_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
values ('999999', 'MARK', '$1', 1, timestamp '2011-12-09 12:50:00', 0, null, 'United Kingdom');
select pg_current_wal_insert_lsn();
commit;
EOF
}
# Whether the checkpoint JSON on stdin has a commit_lsn at or past the LSN $1.
covers() {
    local lsn
    lsn=$(python3 -c "import json, sys; print(json.load(sys.stdin)['commit_lsn'])" 2>/dev/null) || return 1
    [[ $(sql -d shop -At -c "select '$lsn'::pg_lsn >= '$1'::pg_lsn") == t ]]
}
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hwm_of() { awk '/VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

printf '\n%-10s %-8s %-6s %-6s | %-22s | %-22s | %-6s | %-9s %-8s\n' rows per_txn width sink "pg_recvlogical s (rows/s)" "pgcdc s (rows/s)" ratio "RSS MiB" "CPU s" >&2
# The local S3 server (moto, from the project venv) for the S3 rows of the table.
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}
[[ -x "$venv/bin/moto_server" ]] || die "no moto_server in $venv (scripts/install-deps.sh)"
s3_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=65536 "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 </dev/null &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; cleanup' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 100); do
    "$venv/bin/python" "$repo/scripts/s3util.py" "http://127.0.0.1:$s3_port" mkbucket bench 2>/dev/null && break
    sleep 0.1
done

if want scenarios; then
for scenario in "${scenarios[@]}"; do
  IFS=: read -r n per w <<<"$scenario"
  for sink in local s3; do
    case "$sink" in
        local) sink_section="url = \"file://$work/stage\"" ;;
        s3) sink_section="url = \"s3://bench/run\"
endpoint = \"http://127.0.0.1:$s3_port\"
force_path_style = true
spool_dir = \"$work/spool\"" ;;
    esac
    # One measurement: load, then drain both slots in the given order.
    measure() {
    sql -d shop -q -c 'truncate ecommerce_sales' >/dev/null
    for slot in bench_recv bench_pgcdc; do
        sql -d shop -At -c "select pg_drop_replication_slot('$slot') from pg_replication_slots where slot_name = '$slot'" >/dev/null
        sql -d shop -At -c "select pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
    done
    # The load: n rows in transactions of `per` rows.
    sql -d shop <<EOF >/dev/null
do \$\$
declare done_rows bigint := 0;
begin
    while done_rows < $n loop
        insert into ecommerce_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
        select (536365 + (done_rows + g) / 5)::text, '85123A',
               'WHITE HANGING HEART T-LIGHT HOLDER' || repeat('x', $w),
               (g % 12) + 1, timestamp '2010-12-01 08:26:00' + (done_rows + g) * interval '1 minute',
               2.55, 17850, 'United Kingdom'
        from generate_series(1, least($per, $n - done_rows)) g;
        done_rows := done_rows + least($per, $n - done_rows);
        commit;
    end loop;
end \$\$;
EOF
    marker=$(insert_marker 'bench marker')
    target=$(sql -d shop -At -c 'select pg_current_wal_insert_lsn()')

    run_recvlogical() {
    # pg_recvlogical: the ceiling.
    start=$(now)
    "$bindir/pg_recvlogical" -d "host=127.0.0.1 port=$port user=postgres dbname=shop" -S bench_recv --start \
        -E "$target" --no-loop "${recv_protocol[@]}" -o publication_names=pgcdc_pub -f "$work/recv.out" 2>/dev/null
    recv_s=$(echo "$(now) - $start" | bc)
    rm -f "$work/recv.out"

    }
    run_pgcdc() {
    # pgcdc to a local sink.
    rm -rf "$work/stage" "$work/spool"
    "$venv/bin/python" - "http://127.0.0.1:$s3_port" <<'PY' 2>/dev/null || true
import sys, boto3
from botocore.config import Config
s3 = boto3.resource("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}))
s3.Bucket("bench").objects.all().delete()
PY
    cat >"$work/pgcdc.toml" <<EOF
[source]
url = "postgres://postgres@127.0.0.1:$port/shop"
slot = "bench_pgcdc"
publication = "pgcdc_pub"
status_interval = "1s"
[sink]
$sink_section
[batch]
window = "200ms"
max_file_bytes = "128MiB"
format = "csv.gz"
[metrics]
listen = "127.0.0.1:0"
EOF
    start=$(now)
    PGCDC_LOG=${BENCH_LOG:-warn} "$pgcdc_bin" run --config "$work/pgcdc.toml" 2>"$work/pgcdc.log" &
    pgcdc_pid=$!
    if [[ "$sink" == s3 ]]; then
        read_checkpoint() { "$venv/bin/python" "$repo/scripts/s3util.py" "http://127.0.0.1:$s3_port" get bench run/_pgcdc/bench_pgcdc/checkpoint.json; }
    else
        read_checkpoint() { cat "$work/stage/_pgcdc/bench_pgcdc/checkpoint.json" 2>/dev/null; }
    fi
    cpu=0 hwm=0
    until read_checkpoint | covers "$marker"; do
        kill -0 "$pgcdc_pid" 2>/dev/null || { cat "$work/pgcdc.log" >&2; die "pgcdc exited"; }
        cpu=$(cpu_of "$pgcdc_pid"); hwm=$(hwm_of "$pgcdc_pid")
        sleep 0.02
    done
    pgcdc_s=$(echo "$(now) - $start" | bc)
    cpu=$(cpu_of "$pgcdc_pid"); hwm=$(hwm_of "$pgcdc_pid")
    kill -TERM "$pgcdc_pid"; wait "$pgcdc_pid" || true; pgcdc_pid=
    [[ -z "${BENCH_KEEP_LOG:-}" ]] || cp "$work/pgcdc.log" "$BENCH_KEEP_LOG"

    }
    # Which drain goes first is a knob (BENCH_PGCDC_FIRST=1): the second reads WAL the first
    # already pulled into the page cache.
    if [[ "$1" == pgcdc_first ]]; then run_pgcdc; run_recvlogical; else run_recvlogical; run_pgcdc; fi
    }
    # The second drain of the same WAL is slower than the first (measured: the order alone
    # moved the ratio from 0.98 to 1.7), so each scenario runs in both orders and averages.
    measure recv_first; recv_a=$recv_s; pgcdc_a=$pgcdc_s; cpu_a=$cpu; hwm_a=$hwm
    measure pgcdc_first
    recv_s=$(echo "scale=3; ($recv_a + $recv_s) / 2" | bc)
    pgcdc_s=$(echo "scale=3; ($pgcdc_a + $pgcdc_s) / 2" | bc)
    cpu=$(echo "scale=2; ($cpu_a + $cpu) / 2" | bc)
    hwm=$((hwm_a > hwm ? hwm_a : hwm))
    recv_rate=$(echo "$n / $recv_s" | bc)
    pgcdc_rate=$(echo "$n / $pgcdc_s" | bc)
    ratio=$(echo "scale=2; $pgcdc_s / $recv_s" | bc)
    rss_mib=$(echo "scale=1; $hwm / 1024" | bc)
    printf '%-10s %-8s %-6s %-6s | %8.2f (%9s)   | %8.2f (%9s)   | %-6s | %-9s %-8s\n' \
        "$n" "$per" "$w" "$sink" "$recv_s" "$recv_rate" "$pgcdc_s" "$pgcdc_rate" "$ratio" "$rss_mib" "$cpu" >&2
    printf '{"date":"%s","host":"%s","cores":%s,"rows":%s,"rows_per_txn":%s,"width":%s,"sink":"%s","method":"both_orders_mean","recvlogical_s":%.3f,"pgcdc_s":%.3f,"ratio":%.3f,"pgcdc_peak_rss_kib":%s,"pgcdc_cpu_s":%.2f}\n' \
        "$(date -u +%FT%TZ)" "$(hostname)" "$(nproc)" "$n" "$per" "$w" "$sink" "$recv_s" "$pgcdc_s" "$ratio" "$hwm" "$cpu" >>"$results"
  done
done
fi

if want latency; then
# --- Latency: commit -> durable file at a steady rate, read from pgcdc's own histogram --------
rate=${BENCH_TPS:-1000}
seconds=${BENCH_LATENCY_SECONDS:-20}
window=${BENCH_WINDOW:-5s}
sql -d shop -At -c "select pg_create_logical_replication_slot('bench_lat', 'pgoutput')" >/dev/null
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$work/stage-lat"
cat >"$work/lat.toml" <<EOF
[source]
url = "postgres://postgres@127.0.0.1:$port/shop"
slot = "bench_lat"
publication = "pgcdc_pub"
[sink]
url = "file://$work/stage-lat"
[batch]
window = "$window"
format = "csv.gz"
[metrics]
listen = "127.0.0.1:$metrics_port"
EOF
PGCDC_LOG=warn "$pgcdc_bin" run --config "$work/lat.toml" 2>"$work/lat.log" &
pgcdc_pid=$!
cat >"$work/one.sql" <<'EOF'
insert into ecommerce_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
values ('570000', '22423', 'REGENCY CAKESTAND 3 TIER', 1, timestamp '2011-10-01 10:00:00', 12.75, 13089, 'United Kingdom');
EOF
"$bindir/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -f "$work/one.sql" -R "$rate" -T "$seconds" -c 4 -j 2 shop >"$work/pgbench.log" 2>&1 \
    || { cat "$work/pgbench.log" >&2; die "pgbench failed"; }
achieved=$(awk '/^tps = / { print int($3) }' "$work/pgbench.log")
lat_marker=$(insert_marker 'latency marker')
lat_checkpoint=$work/stage-lat/_pgcdc/bench_lat/checkpoint.json
until covers "$lat_marker" <"$lat_checkpoint" 2>/dev/null; do
    kill -0 "$pgcdc_pid" 2>/dev/null || { cat "$work/lat.log" >&2; die "pgcdc exited"; }
    sleep 0.1
done
read -r p50 p99 count < <(python3 - "$metrics_port" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
buckets = []
for line in text.splitlines():
    if line.startswith("pgcdc_commit_to_durable_seconds_bucket"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
total = buckets[-1][1] if buckets else 0
def quantile(q):
    # Upper bound of the bucket holding the q-th observation (conservative).
    for le, n in buckets:
        if n >= q * total:
            return le
    return float("nan")
print(quantile(0.5), quantile(0.99), int(total))
EOF
)
kill -TERM "$pgcdc_pid"; wait "$pgcdc_pid" || true; pgcdc_pid=
say ""
say "latency: $achieved tx/s for ${seconds}s, window $window: commit -> durable p50 <= ${p50}s, p99 <= ${p99}s over $count transactions (histogram bucket bounds)"
printf '{"date":"%s","host":"%s","cores":%s,"scenario":"latency","tps":%s,"seconds":%s,"window":"%s","p50_le_s":%s,"p99_le_s":%s,"transactions":%s}\n' \
    "$(date -u +%FT%TZ)" "$(hostname)" "$(nproc)" "${achieved:-0}" "$seconds" "$window" "$p50" "$p99" "$count" >>"$results"
fi

if want snapshot; then
# --- Snapshot: pgcdc's initial copy (COPY text -> CSV.gz, durable) against a bare COPY -------
snap_rows=${BENCH_SNAPSHOT_ROWS:-5000000}
sql -d shop -q -c 'truncate ecommerce_sales' >/dev/null
sql -d shop -q <<EOF >/dev/null
insert into ecommerce_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
select (536365 + g / 5)::text, '85123A', 'WHITE HANGING HEART T-LIGHT HOLDER', (g % 12) + 1,
       timestamp '2010-12-01 08:26:00' + g * interval '1 minute', 2.55, 17850, 'United Kingdom'
from generate_series(1, $snap_rows) g;
EOF
# Best of three for both sides: on a shared 2-core VM single runs vary by a third.
runs=${BENCH_SNAPSHOT_RUNS:-2}
min() { echo "if ($1 < $2) $1 else $2" | bc; }
copy_s=999999
for ((run = 1; run <= runs; run++)); do
    start=$(now)
    sql -d shop -c 'copy ecommerce_sales to stdout' >/dev/null
    copy_s=$(min "$(echo "$(now) - $start" | bc)" "$copy_s")
done
# The copy is chunked beside the stream: timed from the start of the copy to its `E` row being
# durable (the log line "Copy of the table complete"), with 1, 2 and 4 workers.
for workers in ${BENCH_SNAPSHOT_WORKERS:-1 2 4}; do
snap_s=999999
for ((run = 1; run <= runs; run++)); do
    rm -rf "$work/stage-snap"
    sql -d shop -q -c "select pg_drop_replication_slot('bench_snap') from pg_replication_slots where slot_name = 'bench_snap'" >/dev/null
    cat >"$work/snap.toml" <<EOF
[source]
url = "postgres://postgres@127.0.0.1:$port/shop"
slot = "bench_snap"
publication = "pgcdc_pub"
[sink]
url = "file://$work/stage-snap"
[batch]
format = "csv.gz"
[snapshot]
workers = $workers
[metrics]
listen = "127.0.0.1:0"
EOF
    PGCDC_LOG=info ${BENCH_WRAP:-} "$pgcdc_bin" run --config "$work/snap.toml" 2>"$work/snap.log" &
    pgcdc_pid=$!
    until grep -q 'Copy of the table complete' "$work/snap.log"; do
        kill -0 "$pgcdc_pid" 2>/dev/null || { cat "$work/snap.log" >&2; die "pgcdc exited"; }
        sleep 0.05
    done
    # pgcdc's own CPU time (user + system, clock ticks in /proc/PID/stat), read before it stops:
    # what a machine with more cores can divide among workers.
    ticks=$(awk '{print $14 + $15}' "/proc/$pgcdc_pid/stat")
    kill -TERM "$pgcdc_pid"; wait "$pgcdc_pid" || true; pgcdc_pid=
    snap_ms=$(grep 'Copy of the table complete' "$work/snap.log" | grep -o 'elapsed_ms=[0-9]*' | head -n 1 | cut -d= -f2)
    this_s=$(echo "scale=3; $snap_ms / 1000" | bc)
    if [ "$(echo "$this_s < $snap_s" | bc)" = 1 ]; then
        snap_s=$this_s
        cpu_per_m=$(echo "scale=2; $ticks / $(getconf CLK_TCK) * 1000000 / $snap_rows" | bc)
    fi
done
speed=$(echo "scale=3; $copy_s / $snap_s" | bc)
rate=$(echo "$snap_rows / $snap_s" | bc)
copy_rate=$(echo "$snap_rows / $copy_s" | bc)
say "snapshot: $snap_rows rows, best of $runs: COPY to /dev/null ${copy_s}s ($copy_rate rows/s); pgcdc chunked copy, $workers worker(s), to durable csv.gz ${snap_s}s ($rate rows/s, pgcdc ${cpu_per_m} CPU s per million rows): $speed x COPY"
printf '{"date":"%s","host":"%s","cores":%s,"scenario":"snapshot","workers":%s,"rows":%s,"copy_s":%.3f,"snapshot_s":%.3f,"speed_vs_copy":%.3f,"pgcdc_cpu_s_per_million_rows":%.2f}\n' \
    "$(date -u +%FT%TZ)" "$(hostname)" "$(nproc)" "$workers" "$snap_rows" "$copy_s" "$snap_s" "$speed" "$cpu_per_m" >>"$results"
done

fi
if want toast; then
# --- A copy under steady updates that leave a TOASTed value unchanged --------------------------
# Each such update has its key read again between watermarks, never the chunks around it: the
# copy ends while the writer goes on. Timed from the copy's start to its `E` row being durable,
# quiet and under pgbench updating rows with an out-of-line value (one in 50).
toast_rows=${BENCH_TOAST_ROWS:-1000000}
sql -d shop -q <<EOF >/dev/null
drop publication if exists bench_toast_pub;
drop table if exists bench_toast;
create table bench_toast (id int primary key, status int not null, body text);
alter table bench_toast alter column body set storage external;
insert into bench_toast
select g, 0, case when g % 50 = 0 then repeat(md5(g::text), 90) end from generate_series(1, $toast_rows) g;
analyze bench_toast;
create publication bench_toast_pub for table bench_toast;
EOF
printf '\\set k random(1, %d) * 50\nupdate bench_toast set status = status + 1 where id = :k;\n' \
    "$((toast_rows / 50))" >"$work/toast.sql"
declare -A toast_s
for mode in quiet writer; do
    rm -rf "$work/stage-toast"
    sql -d shop -q -c "select pg_drop_replication_slot('bench_toast') from pg_replication_slots where slot_name = 'bench_toast'" >/dev/null
    cat >"$work/toast.toml" <<EOF
[source]
url = "postgres://postgres@127.0.0.1:$port/shop"
slot = "bench_toast"
publication = "bench_toast_pub"
[sink]
url = "file://$work/stage-toast"
[batch]
format = "csv.gz"
[snapshot]
workers = 2
chunk_size = "4MiB"
[metrics]
listen = "127.0.0.1:0"
EOF
    writer_pid=
    if [ "$mode" = writer ]; then
        "$bindir/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -f "$work/toast.sql" -c 2 -j 1 -T 600 shop \
            >"$work/pgbench-toast.log" 2>&1 &
        writer_pid=$!
    fi
    PGCDC_LOG=info ${BENCH_WRAP:-} "$pgcdc_bin" run --config "$work/toast.toml" 2>"$work/toast.log" &
    pgcdc_pid=$!
    until grep -q 'Copy of the table complete' "$work/toast.log"; do
        kill -0 "$pgcdc_pid" 2>/dev/null || { cat "$work/toast.log" >&2; die "pgcdc exited"; }
        sleep 0.05
    done
    if [ -n "$writer_pid" ]; then kill -INT "$writer_pid"; wait "$writer_pid" || true; fi
    kill -TERM "$pgcdc_pid"; wait "$pgcdc_pid" || true; pgcdc_pid=
    ms=$(grep 'Copy of the table complete' "$work/toast.log" | grep -o 'elapsed_ms=[0-9]*' | head -n 1 | cut -d= -f2)
    toast_s[$mode]=$(echo "scale=3; $ms / 1000" | bc)
    redone=$(grep -c 'Reading a chunk again' "$work/toast.log" || true)
    say "toast: $toast_rows rows, copy $mode: ${toast_s[$mode]}s, chunks read again: $redone"
done
sql -d shop -q -c "select pg_drop_replication_slot('bench_toast') from pg_replication_slots where slot_name = 'bench_toast'" >/dev/null
ratio=$(echo "scale=2; ${toast_s[writer]} / ${toast_s[quiet]}" | bc)
say "toast: the copy under steady unchanged-TOAST updates took ${ratio}x its quiet time"
printf '{"date":"%s","host":"%s","cores":%s,"scenario":"toast","rows":%s,"quiet_s":%s,"writer_s":%s,"ratio":%s}\n' \
    "$(date -u +%FT%TZ)" "$(hostname)" "$(nproc)" "$toast_rows" "${toast_s[quiet]}" "${toast_s[writer]}" "$ratio" >>"$results"
fi
if want breadth; then
# --- Breadth: many tables in one window, and their first copy -------------------------------
# A publication FOR ALL TABLES over N tables of 20 rows, into S3 (moto). Copy: from pgcdc's
# start until every table's copy is durable (its "Copy of the table complete" line), peak RSS
# meanwhile. Window: one transaction updating two rows in every table, from its commit until the
# checkpoint covers a marker committed after it; peak RSS from the copy's end on (the high-water
# mark is reset through /proc/PID/clear_refs, proc(5)).
say ""
read_breadth_checkpoint() { "$venv/bin/python" "$repo/scripts/s3util.py" "http://127.0.0.1:$s3_port" get bench breadth/_pgcdc/breadth/checkpoint.json; }
for tables in ${BENCH_BREADTH_TABLES:-10 500 5000}; do
    db=breadth_$tables
    sql -d postgres -q -c "drop database if exists $db" >/dev/null
    sql -d postgres -q -c "create database $db" >/dev/null
    # Created in batches: one transaction over 5,000 tables would outgrow the lock table.
    sql -d "$db" -q <<SQL >/dev/null
do \$\$
begin
    for i in 0..$tables - 1 loop
        execute format('create table public.b%s (id bigint primary key, v text)', i);
        execute format('insert into public.b%s select g, ''row '' || g from generate_series(1, 20) g', i);
        if i % 200 = 199 then commit; end if;
    end loop;
end \$\$;
create publication breadth_pub for all tables;
SQL
    "$venv/bin/python" - "http://127.0.0.1:$s3_port" <<'PY' 2>/dev/null || true
import sys, boto3
from botocore.config import Config
s3 = boto3.resource("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}))
s3.Bucket("bench").objects.filter(Prefix="breadth/").delete()
PY
    rm -rf "$work/spool-breadth"
    cat >"$work/breadth.toml" <<TOML
[source]
url = "postgres://postgres@127.0.0.1:$port/$db"
slot = "breadth"
publication = "breadth_pub"
status_interval = "1s"
[sink]
url = "s3://bench/breadth"
endpoint = "http://127.0.0.1:$s3_port"
force_path_style = true
spool_dir = "$work/spool-breadth"
[batch]
window = "200ms"
format = "csv.gz"
[metrics]
listen = "127.0.0.1:0"
TOML
    start=$(now)
    PGCDC_LOG=info "$pgcdc_bin" run --config "$work/breadth.toml" 2>"$work/breadth.log" &
    pgcdc_pid=$!
    copy_hwm=0
    until (($(grep -c 'Copy of the table complete' "$work/breadth.log") >= tables)); do
        kill -0 "$pgcdc_pid" 2>/dev/null || { tail -n 50 "$work/breadth.log" >&2; die "pgcdc exited"; }
        copy_hwm=$(hwm_of "$pgcdc_pid")
        sleep 0.05
    done
    copy_s=$(echo "$(now) - $start" | bc)
    copy_hwm=$(hwm_of "$pgcdc_pid")
    echo 5 >"/proc/$pgcdc_pid/clear_refs"
    sql -d "$db" -q <<SQL >/dev/null
do \$\$
begin
    for i in 0..$tables - 1 loop
        execute format('update public.b%s set v = v || '' updated'' where id in (1, 2)', i);
    end loop;
end \$\$;
SQL
    committed=$(now)
    window_marker=$(sql -d "$db" -At <<SQL
begin;
insert into public.b0 values (1000000, 'marker');
select pg_current_wal_insert_lsn();
commit;
SQL
)
    until read_breadth_checkpoint | covers "$window_marker"; do
        kill -0 "$pgcdc_pid" 2>/dev/null || { tail -n 50 "$work/breadth.log" >&2; die "pgcdc exited"; }
        sleep 0.02
    done
    window_s=$(echo "$(now) - $committed" | bc)
    window_hwm=$(hwm_of "$pgcdc_pid")
    kill -TERM "$pgcdc_pid"; wait "$pgcdc_pid" || true; pgcdc_pid=
    [[ -z "${BENCH_KEEP_LOG:-}" ]] || cp "$work/breadth.log" "$BENCH_KEEP_LOG.breadth-$tables"
    sql -d "$db" -At -c "select pg_drop_replication_slot('breadth')" >/dev/null
    sql -d postgres -q -c "drop database $db" >/dev/null
    say "breadth: $tables tables of 20 rows to S3 (moto): first copy durable in ${copy_s}s, peak RSS $(echo "scale=1; $copy_hwm / 1024" | bc) MiB; one transaction over every table durable ${window_s}s after its commit, peak RSS $(echo "scale=1; $window_hwm / 1024" | bc) MiB"
    printf '{"date":"%s","host":"%s","cores":%s,"scenario":"breadth","tables":%s,"rows_per_table":20,"sink":"s3","copy_s":%.3f,"copy_peak_rss_kib":%s,"window_s":%.3f,"window_peak_rss_kib":%s,"binary":"%s"}\n' \
        "$(date -u +%FT%TZ)" "$(hostname)" "$(nproc)" "$tables" "$copy_s" "$copy_hwm" "$window_s" "$window_hwm" \
        "${BENCH_LABEL:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}" >>"$results"
done
fi

say ""
say "appended to $results"

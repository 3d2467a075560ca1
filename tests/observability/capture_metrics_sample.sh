#!/usr/bin/env bash
# Regenerates tests/observability/metrics_sample.txt from a real pgcdc: runs scripts/demo.sh
# (throwaway PostgreSQL cluster, a local-directory sink, the shop workload) in the background,
# finds the metrics port in the demo's config, and saves one /metrics scrape taken after the
# checkpoint moved (so rows, files, latencies and slot figures are populated). The demo then
# sends SIGTERM and cleans up as usual.
#
#   bash tests/observability/capture_metrics_sample.sh            (uses $PGCDC_BIN, else the
#                                                                  release binary, as demo.sh does)
#
# The error counters are there at 0 in a healthy run (pgcdc creates every kind at start-up). The
# server limits the slot (max_slot_wal_keep_size, set by DEMO_EXTRA_SQL) and pgcdc polls the slot
# every second, so safe_wal_size and the invalidation forecast are in the sample too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here/metrics_sample.txt}
log=$(mktemp)
limit_sql=$(mktemp)
trap 'rm -f "$log" "$limit_sql"' EXIT
cat >"$limit_sql" <<'SQL'
alter system set max_slot_wal_keep_size = '1GB';
select pg_reload_conf();
SQL

before=$(ls -d /tmp/pgcdc-demo-* "${TMPDIR:-/tmp}"/pgcdc-demo-* 2>/dev/null | sort -u || true)
DEMO_EXTRA_SQL=$limit_sql PGCDC_METRICS_POLL_INTERVAL=1s DEMO_SINK=file DEMO_WAREHOUSE=0 DEMO_WORKLOAD_SECONDS=${DEMO_WORKLOAD_SECONDS:-15} \
    bash "$repo/scripts/demo.sh" >"$log" 2>&1 </dev/null &
demo=$!

# The demo's work dir is new; its config names the metrics listener.
config=
for _ in $(seq 600); do
    for dir in $(ls -d /tmp/pgcdc-demo-* "${TMPDIR:-/tmp}"/pgcdc-demo-* 2>/dev/null | sort -u); do
        grep -qx "$dir" <<<"$before" && continue
        [[ -s "$dir/pgcdc.toml" ]] && config=$dir/pgcdc.toml
    done
    [[ -n "$config" ]] && break
    kill -0 "$demo" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$config" ]] || { cat "$log" >&2; echo "capture: the demo never wrote its config" >&2; exit 1; }
listen=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$config")

# Scrape every 0.2 s while pgcdc runs and keep the newest scrape that already shows written
# files; the demo stops pgcdc (SIGTERM) right after its checkpoint reached the workload's end.
got=0
while kill -0 "$demo" 2>/dev/null && ! grep -q 'SIGTERM to pgcdc' "$log"; do
    if curl -fsS --max-time 2 "http://$listen/metrics" >"$out.scrape" 2>/dev/null &&
        grep -q '^pgcdc_files_written_total{.*} [1-9]' "$out.scrape" &&
        grep -q '^pgcdc_slot_invalidation_eta_seconds{' "$out.scrape"; then
        mv "$out.scrape" "$out.tmp"
        got=1
    fi
    sleep 0.2
done
rm -f "$out.scrape"
wait "$demo" || { cat "$log" >&2; echo "capture: the demo failed" >&2; exit 1; }
((got)) || { echo "capture: no scrape showed written files and the invalidation forecast" >&2; exit 1; }
mv "$out.tmp" "$out"
echo "capture: $(grep -c '^pgcdc_' "$out") samples from http://$listen/metrics -> $out"

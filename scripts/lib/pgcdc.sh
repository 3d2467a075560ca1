# shellcheck shell=bash
# A pgcdc run over the demo shop, shared by scripts/demo.sh and scripts/fixture.sh (source
# scripts/lib/cluster.sh first, and start the cluster):
#
#   shop_setup 2000                        # replication_setup/ (twice: it is idempotent) + sample rows
#   pgcdc_write_config "$config" "$sink_section"          # TOML: the shop's slot and publication
#   pgcdc_start "$pgcdc_bin" "$config" "$log"             # and wait until it streams from its slot
#   pgcdc_wait_durable read_checkpoint                    # every commit so far is in the files
#   pgcdc_stop                                            # SIGTERM; it must exit 0
#   pgcdc_cleanup                                         # kill it if it still runs (EXIT trap)
#
# The shop: table ecommerce_sales (key id) in database shop, slot pgcdc, publication pgcdc_pub;
# pgcdc connects as the SCRAM role the cluster helper creates.

SHOP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHOP_TABLE=ecommerce_sales
SHOP_KEY=id
PGCDC_SLOT=pgcdc
PGCDC_PUBLICATION=pgcdc_pub
PGCDC_PID=

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }

# psql in `shop` as superuser.
sql() { cluster_sql shop "$@"; }

# The shop's schema (replication_setup/, applied twice: it must be idempotent) and $1 sample rows.
shop_setup() {
    local rows=$1 file
    step "Applying replication_setup/"
    for file in "$SHOP_REPO"/replication_setup/[0-9]*.sql; do
        info "${file#"$SHOP_REPO"/}"
        sql -f "$file"
    done
    # Quietly the second time: "already exists, skipping".
    for file in "$SHOP_REPO"/replication_setup/[0-9]*.sql; do
        PGOPTIONS='-c client_min_messages=warning' sql -f "$file"
    done
    step "Loading $rows sample rows (replication_setup/sample_data.sql)"
    sql -v rows="$rows" -f "$SHOP_REPO/replication_setup/sample_data.sql"
}

# Writes pgcdc's config to $1: the shop's source as the SCRAM role, [sink] from $2 (TOML lines),
# 2-second csv.gz windows, metrics on a free port (PGCDC_METRICS_PORT).
pgcdc_write_config() {
    local config=$1 sink_section=$2
    PGCDC_METRICS_PORT=$(free_port)
    cat >"$config" <<TOML
[source]
url = "postgres://pgcdc_scram:secret-pw-pgcdc_scram@127.0.0.1:$PG_PORT/shop"
slot = "$PGCDC_SLOT"
publication = "$PGCDC_PUBLICATION"

[sink]
$sink_section

[batch]
window = "2s"
max_file_bytes = "128MiB"
format = "csv.gz"

[metrics]
listen = "127.0.0.1:$PGCDC_METRICS_PORT"
TOML
}

# `pgcdc run --config $2` ($1 is the binary) with its output in $3, in the background; returns
# once it streams from its slot.
pgcdc_start() {
    local bin=$1 config=$2 log=$3
    [[ -x "$bin" ]] || { echo "no pgcdc binary at $bin (run 'make build' or set PGCDC_BIN)" >&2; return 1; }
    step "Starting pgcdc ($bin)"
    info "config $config:"
    sed 's/^/      /' "$config"
    "$bin" run --config "$config" >"$log" 2>&1 </dev/null &
    PGCDC_PID=$!
    wait_for "pgcdc to create slot $PGCDC_SLOT and stream from it" 60 _pgcdc_slot_active
    info "slot $PGCDC_SLOT is active"
}

# Exits the script when pgcdc is gone (its log is printed by the caller's cleanup).
pgcdc_alive() {
    kill -0 "$PGCDC_PID" 2>/dev/null && return 0
    echo "pgcdc exited early (see its log below)" >&2
    exit 1
}

_pgcdc_slot_active() {
    pgcdc_alive
    [[ $(sql -At -c "select active from pg_replication_slots where slot_name = '$PGCDC_SLOT'") == t ]]
}

# Waits until pgcdc's checkpoint covers every transaction committed so far: a last transaction
# touches the table and notes an LSN taken before its commit record; once the checkpoint's
# commit_lsn reaches it, all of the workload is in the files. $1 prints the checkpoint JSON.
pgcdc_wait_durable() {
    _pgcdc_read_checkpoint=$1
    _pgcdc_target=$(sql -At <<SQL
begin;
update $SHOP_TABLE set quantity = quantity where $SHOP_KEY = (select min($SHOP_KEY) from $SHOP_TABLE);
select pg_current_wal_insert_lsn();
commit;
SQL
)
    info "waiting for the checkpoint to reach $_pgcdc_target (pg_current_wal_lsn $(sql -At -c 'select pg_current_wal_lsn()'))"
    wait_for "the checkpoint's commit_lsn >= $_pgcdc_target" 120 _pgcdc_checkpoint_reached
    info "checkpoint: $("$_pgcdc_read_checkpoint" | tr -d '\n')"
}

_pgcdc_checkpoint_lsn() {
    local text value
    text=$("$_pgcdc_read_checkpoint") || return 1
    value=$(grep -o '"commit_lsn"[[:space:]]*:[[:space:]]*"\?[0-9A-Fa-f/]*' <<<"$text" | grep -o '[0-9A-Fa-f/]*$' | head -n 1) || return 1
    if [[ "$value" == */* ]]; then
        echo "$value"
    else
        # A plain integer: turn it into X/Y.
        sql -At -c "select '0/0'::pg_lsn + $value::numeric"
    fi
}

_pgcdc_checkpoint_reached() {
    pgcdc_alive
    local lsn
    lsn=$(_pgcdc_checkpoint_lsn) || return 1
    [[ $(sql -At -c "select '$lsn'::pg_lsn >= '$_pgcdc_target'::pg_lsn") == t ]]
}

# SIGTERM: pgcdc finishes its window, uploads, checkpoints and must exit 0.
pgcdc_stop() {
    step "SIGTERM to pgcdc (pid $PGCDC_PID)"
    kill -TERM "$PGCDC_PID"
    wait_for "pgcdc to exit after SIGTERM" 60 _pgcdc_exited
    local status=0
    wait "$PGCDC_PID" || status=$?
    PGCDC_PID=
    if ((status != 0)); then
        echo "pgcdc exited with status $status after SIGTERM (expected 0)" >&2
        return 1
    fi
    info "pgcdc exited 0"
}

_pgcdc_exited() { ! kill -0 "$PGCDC_PID" 2>/dev/null; }

pgcdc_cleanup() {
    if [[ -n "$PGCDC_PID" ]] && kill -0 "$PGCDC_PID" 2>/dev/null; then
        kill -KILL "$PGCDC_PID" 2>/dev/null || true
        wait "$PGCDC_PID" 2>/dev/null || true
    fi
    PGCDC_PID=
}

# The change files of the sink directory $1 (not bookkeeping, not spool files), one per line.
change_files() {
    (cd "$1" && find . -path ./_pgcdc -prune -o -type f \( -name '*.csv' -o -name '*.csv.gz' \) \
        ! -name '.*' -print | sed 's|^\./||' | sort)
}

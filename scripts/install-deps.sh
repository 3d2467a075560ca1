#!/usr/bin/env bash
# Installs what the tests and the demo need beyond the Rust toolchain: the PostgreSQL server
# binaries (initdb, pg_ctl, postgres) and psql. Idempotent: does nothing when they are present.
#
# It never starts, stops or configures a system cluster. If the Debian package starts its own
# `main` cluster, that one is left alone: the tests and the demo start throwaway clusters in temp
# dirs on free ports (see tests/common/cluster.rs and scripts/demo.sh).
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }

# Where a server's initdb is, or nothing: PGCDC_PG_BINDIR, pg_config --bindir, then the newest
# /usr/lib/postgresql/*/bin (the same order as the test harness).
find_initdb() {
    local dir
    if [[ -n "${PGCDC_PG_BINDIR:-}" && -x "$PGCDC_PG_BINDIR/initdb" ]]; then
        echo "$PGCDC_PG_BINDIR/initdb"
        return 0
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n "$dir" && -x "$dir/initdb" ]]; then
            echo "$dir/initdb"
            return 0
        fi
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n -r); do
        if [[ -x "$dir/initdb" ]]; then
            echo "$dir/initdb"
            return 0
        fi
    done
    return 1
}

if initdb=$(find_initdb); then
    say "PostgreSQL server binaries present: $initdb ($("$initdb" --version))"
else
    say "no PostgreSQL server binaries (initdb) found: installing Debian's postgresql package"
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        say "not root and no sudo: install the 'postgresql' package yourself" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install the PostgreSQL server (initdb, pg_ctl, postgres) yourself," >&2
        say "or point PGCDC_PG_BINDIR at a directory that has them" >&2
        exit 1
    fi
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
    "${sudo[@]}" apt-get update
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y postgresql"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql </dev/null
    initdb=$(find_initdb) || { say "postgresql installed but initdb still not found" >&2; exit 1; }
    say "installed: $initdb ($("$initdb" --version))"
fi

bindir=$(dirname "$initdb")
for tool in pg_ctl postgres psql; do
    if [[ ! -x "$bindir/$tool" ]] && ! command -v "$tool" >/dev/null 2>&1; then
        say "missing $tool next to $initdb" >&2
        exit 1
    fi
done

# As root the clusters run as the `postgres` system user (initdb refuses root); the package
# creates it.
if [[ $(id -u) -eq 0 ]]; then
    if id postgres >/dev/null 2>&1; then
        say "running as root: clusters will run as the 'postgres' user (uid $(id -u postgres))"
    else
        say "running as root but there is no 'postgres' user; install the postgresql package" >&2
        exit 1
    fi
    command -v runuser >/dev/null 2>&1 || { say "runuser (util-linux) is missing" >&2; exit 1; }
fi
# The Python venv (moto's S3 server for the tests; dbt later), outside the clone so CI reuses it.
# Reinstalled only when requirements.txt changes.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PGCDC_VENV:-$HOME/.cache/pgcdc/venv}
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    say "Python venv up to date: $venv"
else
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        say "python3 venv support missing: installing python3-venv"
        if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python3-pip </dev/null
    fi
    say "creating Python venv $venv from requirements.txt"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/requirements.txt"
    echo "$want" > "$stamp"
    say "Python venv ready: $venv"
fi
say "ok"

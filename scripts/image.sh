#!/usr/bin/env bash
# Builds pgcdc's container image with whichever builder this machine has: `docker build` when a
# Docker daemon answers, else `buildah bud`, else `podman build`.
#
#   scripts/image.sh TAG            the Dockerfile at the root (`make image`): builds pgcdc in a
#                                   rust:bookworm stage on a distroless runtime; pulls both base
#                                   images, so it needs a registry
#   scripts/image.sh --local TAG    deploy/Dockerfile.local (`make image-local`): FROM scratch,
#                                   with a pgcdc binary already built on this machine (PGCDC_BIN,
#                                   else $CARGO_TARGET_DIR/release/pgcdc, else .../debug/pgcdc),
#                                   the shared libraries ldd lists for it, the CA bundle and a
#                                   passwd entry; pulls nothing
set -euo pipefail

cd "$(dirname "$0")/.."

local_image=false
if [[ ${1:-} == --local ]]; then
    local_image=true
    shift
fi
tag=${1:?usage: scripts/image.sh [--local] TAG}

builder=()
if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
    builder=(docker build)
elif command -v buildah >/dev/null; then
    builder=(buildah bud --layers)
elif command -v podman >/dev/null; then
    builder=(podman build)
else
    if command -v docker >/dev/null; then
        why="docker is installed but no daemon answers (docker info failed; start dockerd or set DOCKER_HOST)"
    else
        why="docker is not installed"
    fi
    echo "image: no container builder: $why, and neither buildah nor podman is installed (Debian/Ubuntu: apt-get install buildah)" >&2
    exit 1
fi

if ! $local_image; then
    echo "image: ${builder[*]} -t $tag ." >&2
    exec "${builder[@]}" -t "$tag" -f Dockerfile .
fi

target=${CARGO_TARGET_DIR:-target}
bin=${PGCDC_BIN:-}
if [[ -z $bin ]]; then
    for candidate in "$target/release/pgcdc" "$target/debug/pgcdc"; do
        if [[ -x $candidate ]]; then
            bin=$candidate
            break
        fi
    done
fi
if [[ -z $bin || ! -x $bin ]]; then
    echo "image-local: no pgcdc binary in $target/{release,debug}: run 'make build-release' (or 'make build'), or set PGCDC_BIN" >&2
    exit 1
fi
if [[ ! -r /etc/ssl/certs/ca-certificates.crt ]]; then
    echo "image-local: /etc/ssl/certs/ca-certificates.crt is missing (apt-get install ca-certificates)" >&2
    exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/pgcdc"
# Every library the dynamic loader resolves, and the loader itself (the absolute path in the
# ELF interpreter field, e.g. /lib64/ld-linux-x86-64.so.2), copied as files under their paths.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
# The same numeric user as the distroless image and the Kubernetes manifest.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
cp deploy/Dockerfile.local "$ctx/Dockerfile"

echo "image-local: $bin ($(du -h "$bin" | cut -f1)), libraries:" \
    "$(cd "$root" && find lib* usr/lib* -type f 2>/dev/null | tr '\n' ' ')" >&2
echo "image-local: ${builder[*]} -t $tag" >&2
"${builder[@]}" -t "$tag" -f "$ctx/Dockerfile" "$ctx"

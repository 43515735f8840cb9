#!/usr/bin/env bash
# build-local-images.sh: build the stevedore worker image without a registry.
#
# With access to Docker Hub, use the Dockerfile instead (`docker compose build`, or
# `docker build --target worker -t stevedore-worker:dev .`). This script is for machines
# that cannot pull base images: it builds the example worker on the host, puts the binary
# and the shared libraries `ldd` lists into an otherwise empty root filesystem, and imports
# that as an image, laid out like the Dockerfile's (binary at
# /usr/local/bin/stevedore-worker, user 10001, entrypoint the worker).
#
# Usage: deploy/build-local-images.sh [--debug] [--binary PATH] [--tag NAME]
#   --debug        build with the dev profile (much faster to compile, slower to run)
#   --binary PATH  use this worker binary instead of building one
#   --tag NAME     image name (default stevedore-worker:dev; podman stores it as
#                  localhost/stevedore-worker:dev)
# Environment: ENGINE=podman|docker (default: podman if installed, else docker).
#
# The `stevedore` CLI (`stevedore serve`, the admin server) is not built yet; once it
# exists it gets an image the same way (see build_image below).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
binary=""
built_from=""
tag=stevedore-worker:dev
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --binary) binary="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "build-local-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then engine=podman; else engine=docker; fi
fi
command -v "$engine" >/dev/null 2>&1 || die "$engine not found (set ENGINE=podman or docker)"

if [ -z "$binary" ]; then
  flags=(--locked --example worker)
  [ "$profile" = release ] && flags+=(--release)
  log "cargo build ${flags[*]}"
  cargo build "${flags[@]}"
  binary="target/$profile/examples/worker"
  built_from=" ($profile build)"
fi
[ -x "$binary" ] || die "no executable at $binary"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# build_image BINARY NAME_IN_IMAGE TAG [--change ...]: imports a root filesystem holding
# BINARY at /usr/local/bin/NAME_IN_IMAGE and every library it links.
build_image() {
  local bin="$1" name="$2" image="$3"
  shift 3
  local root="$work/rootfs-$name"
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$bin" "$root/usr/local/bin/$name"
  # Debug info is most of a debug build's size and is of no use in the image.
  if command -v strip >/dev/null 2>&1; then strip --strip-debug "$root/usr/local/bin/$name"; fi
  # ldd lines: "libx.so => /path/libx.so (0x..)" or "/lib64/ld-linux-x86-64.so.2 (0x..)"
  local lib real
  while read -r lib; do
    [ -e "$lib" ] || die "missing $lib"
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    real="$(readlink -f "$lib")"
    if [ "$real" != "$lib" ]; then
      mkdir -p "$root$(dirname "$real")"
      cp -L "$real" "$root$real"
    fi
  done < <(ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u)
  # A user to run as, name resolution (glibc >= 2.34 has files/dns built in), and CA
  # certificates for TLS connections when the host has them.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nstevedore:x:10001:10001::/tmp:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nstevedore:x:10001:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  tar -C "$root" -cf "$work/$name.tar" .
  log "importing $image with $engine ($(du -h "$work/$name.tar" | cut -f1))"
  "$engine" import \
    --change "ENTRYPOINT [\"/usr/local/bin/$name\"]" \
    --change 'USER 10001' \
    --change 'WORKDIR /tmp' \
    --change 'ENV RUST_LOG=info' \
    "$@" \
    "$work/$name.tar" "$image" >/dev/null 2>"$work/import.log" \
    || { cat "$work/import.log" >&2; die "$engine import failed"; }
}

build_image "$binary" stevedore-worker "$tag" --change 'EXPOSE 9464'
log "built $tag from $binary$built_from"
echo "$tag"

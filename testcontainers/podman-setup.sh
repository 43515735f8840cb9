#!/usr/bin/env bash
# podman-setup.sh: prepare podman as a Docker-API engine with an offline `redis:7`
# image, so that stevedore-testcontainers' container path can run on a Debian 12
# machine that has no Docker engine and no access to an image registry.
#
# YOU PROBABLY DON'T NEED THIS. On a machine with Docker (or any engine that
# serves the Docker API) and access to Docker Hub, testcontainers pulls the
# official `redis:7` image by itself; nothing here is required.
#
# What it does (idempotent; run as root):
#   1. installs podman + runc from Debian (only if podman is missing);
#   2. writes /etc/containers/containers.conf with runtime "runc" (crun fails
#      with "cgroups in hybrid mode not supported" here) and lowered
#      default_ulimits (podman's defaults exceed this sandbox's hard limits);
#      an existing file that already sets both keys is left alone;
#   3. builds an image from the host's /usr/bin/redis-server plus every library
#      `ldd` lists, imports it as localhost/redis:7 and tags it
#      docker.io/library/redis:7 (skipped when that image already exists);
#   4. starts `podman system service` on unix:///run/stevedore-podman.sock (unless a
#      service there already starts containers), waits for /_ping and starts a container;
#   5. prints `export DOCKER_HOST=unix:///run/stevedore-podman.sock` as the
#      last line on stdout. Everything else goes to stderr, so use:
#
#        eval "$(testcontainers/podman-setup.sh | tail -1)"
set -euo pipefail

SOCK_PATH=/run/stevedore-podman.sock
SOCK_URL="unix://${SOCK_PATH}"
SERVICE_LOG=/var/log/stevedore-podman-service.log
CONF=/etc/containers/containers.conf
IMAGE_LOCAL=localhost/redis:7
IMAGE_QUALIFIED=docker.io/library/redis:7
REDIS_BIN=/usr/bin/redis-server

log() { echo "podman-setup: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# 1. podman + runc
if ! command -v podman >/dev/null 2>&1; then
  apt_install podman runc
elif ! command -v runc >/dev/null 2>&1; then
  apt_install runc
else
  log "podman already installed: $(podman --version)"
fi
command -v curl >/dev/null 2>&1 || apt_install curl
[ -x "$REDIS_BIN" ] || apt_install redis-server

# 2. containers.conf
if [ -f "$CONF" ] && grep -Eq '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$CONF" \
   && grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=' "$CONF"; then
  log "$CONF already sets runtime=runc and default_ulimits"
else
  if [ -f "$CONF" ]; then
    backup="${CONF}.bak.$(date +%s)"
    log "$CONF lacks runtime=runc or default_ulimits; saving it as $backup"
    cp -a "$CONF" "$backup"
  fi
  log "writing $CONF"
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<'EOF'
# Written by stevedore testcontainers/podman-setup.sh.
# crun fails here ("cgroups in hybrid mode not supported"): use runc.
# podman's default rlimits exceed this sandbox's hard limits: lower them.
[containers]
default_ulimits = ["nofile=10000:10000", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
fi

# 3. the offline redis:7 image
if podman image exists "$IMAGE_QUALIFIED"; then
  log "image $IMAGE_QUALIFIED already exists"
else
  if ! podman image exists "$IMAGE_LOCAL"; then
    [ -x "$REDIS_BIN" ] || die "$REDIS_BIN not found"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    root="$work/rootfs"
    mkdir -p "$root"
    log "building a rootfs from $REDIS_BIN and its libraries"
    files=("$REDIS_BIN")
    # ldd lines: "libx.so => /path/libx.so (0x..)" or "/lib64/ld-linux-x86-64.so.2 (0x..)"
    while read -r lib; do
      files+=("$lib")
    done < <(ldd "$REDIS_BIN" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u)
    for f in "${files[@]}"; do
      [ -e "$f" ] || die "missing $f"
      mkdir -p "$root$(dirname "$f")"
      cp -L "$f" "$root$f"
      # keep the resolved target too, in case something refers to it by that name
      real="$(readlink -f "$f")"
      if [ "$real" != "$f" ]; then
        mkdir -p "$root$(dirname "$real")"
        cp -L "$real" "$root$real"
      fi
    done
    mkdir -p "$root/tmp" "$root/data"
    chmod 1777 "$root/tmp"
    tar -C "$root" -cf "$work/rootfs.tar" .
    log "importing $IMAGE_LOCAL"
    podman import \
      --change 'CMD ["/usr/bin/redis-server","--protected-mode","no"]' \
      --change 'EXPOSE 6379' \
      --change 'WORKDIR /data' \
      "$work/rootfs.tar" "$IMAGE_LOCAL" >&2
  fi
  log "tagging $IMAGE_LOCAL as $IMAGE_QUALIFIED"
  podman tag "$IMAGE_LOCAL" "$IMAGE_QUALIFIED"
fi

# 4. the Docker-API service. A service left running by an earlier run is reused only when
# it really starts a container: one can answer /_ping and still fail every container start
# ("write child: broken pipe"), and then it is replaced.
ping_ok() { [ "$(curl -s --max-time 2 --unix-socket "$SOCK_PATH" http://d/_ping 2>/dev/null)" = "OK" ]; }
starts_containers() {
  ping_ok && timeout 30 podman --remote --url "$SOCK_URL" run --rm "$IMAGE_QUALIFIED" \
    /usr/bin/redis-server --version >/dev/null 2>&1
}
if starts_containers; then
  log "service already answers on $SOCK_URL and starts containers"
else
  if pkill -f "podman system service --time=0 $SOCK_URL" 2>/dev/null; then
    log "replacing a service on $SOCK_URL that does not start containers"
    sleep 1
  fi
  [ -S "$SOCK_PATH" ] && rm -f "$SOCK_PATH"
  log "starting podman system service on $SOCK_URL (log: $SERVICE_LOG)"
  nohup podman system service --time=0 "$SOCK_URL" >>"$SERVICE_LOG" 2>&1 </dev/null &
  disown || true
  for _ in $(seq 1 100); do
    ping_ok && break
    sleep 0.1
  done
  ping_ok || die "service did not answer on $SOCK_URL within 10 s; see $SERVICE_LOG"
  starts_containers || die "service on $SOCK_URL does not start $IMAGE_QUALIFIED; see $SERVICE_LOG"
  log "service answers on $SOCK_URL and starts containers"
fi

# 5. the line callers eval
echo "export DOCKER_HOST=${SOCK_URL}"

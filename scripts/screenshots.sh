#!/usr/bin/env bash
# Regenerates the screenshots in docs/images/, each of what runs here:
#
#   web-*.png       the web app (README, tutorial): the browser tests take them in
#                   headless Chromium and, with EASYNOTE_SCREENSHOTS set, write them
#   rnacos-*.png    rnacos's console (tutorial steps 3 and 4b): the services from
#                   the release build registered in an rnacos of this run's own,
#                   two note-service instances, one with the metadata lane=canary
#   prometheus-*.png  Prometheus in docker-compose.yml (tutorial step 5b), brought up
#                   by the engine smoke test (deploy/engine/run.sh; as root, with a
#                   Docker engine): the instances it discovers from the registry.
#                   Its Prometheus is Debian's 2.42 standing in for prom/prometheus:v3.5.0
#
#   scripts/screenshots.sh              the web app's and the console's
#   scripts/screenshots.sh registry     only the console's (needs the release build)
#   scripts/screenshots.sh prometheus   only Prometheus's (needs the engine)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_chromium

# One page in headless Chromium, after its scripts have run.
shoot() {
  local url="$1" out="$2" size="$3" profile
  profile="$(mktemp -d)"
  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --virtual-time-budget=8000 \
    --window-size="$size" --screenshot="$out" "$url" >/dev/null 2>&1
  rm -rf "$profile"
  echo "wrote $out"
}

# Waits up to 60 s for a command to succeed; else shows the logs of $work and fails.
await() {
  local what="$1"
  shift
  for _ in $(seq 1 300); do
    "$@" && return
    sleep 0.2
  done
  echo "timed out waiting for $what" >&2
  tail -n 3 "$work"/*.log >&2
  exit 1
}

registry() {
  ensure_rnacos
  local release=target/release work pids=() http
  [[ -x "$release/note-service" ]] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' RETURN
  # rnacos as the tests start it, its console open without a login.
  RNACOS_BIN="$RNACOS_BIN" "$release/rnacos-fixture" --open-console >"$work/rnacos.log" 2>&1 &
  pids+=($!)
  await rnacos grep -q "^listening on" "$work/rnacos.log"
  http="$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/rnacos.log")"
  export EASYNOTE_REGISTRY=nacos NACOS_SERVER_ADDR="127.0.0.1:$http"
  EASYNOTE_DATABASE_URL="sqlite://$work/user.db" EASYNOTE_GRPC_ADDR=127.0.0.1:18889 \
    "$release/user-service" >"$work/user.log" 2>&1 &
  pids+=($!)
  EASYNOTE_DATABASE_URL="sqlite://$work/note.db" EASYNOTE_GRPC_ADDR=127.0.0.1:18888 \
    "$release/note-service" >"$work/note1.log" 2>&1 &
  pids+=($!)
  EASYNOTE_DATABASE_URL="sqlite://$work/note.db" EASYNOTE_GRPC_ADDR=127.0.0.1:18898 \
    EASYNOTE_INSTANCE_METADATA=lane=canary "$release/note-service" >"$work/note2.log" 2>&1 &
  pids+=($!)
  EASYNOTE_HTTP_ADDR=127.0.0.1:18080 EASYNOTE_JWT_SECRET="$(head -c 32 /dev/urandom | base64)" \
    "$release/api-gateway" >"$work/gateway.log" 2>&1 &
  pids+=($!)
  registered() {
    [[ "$(curl -s "http://127.0.0.1:$http/nacos/v1/ns/instance/list?serviceName=easy-note-note" |
      grep -o '"port"' | wc -l)" -eq 2 ]] && curl -sf -o /dev/null http://127.0.0.1:18080/readyz
  }
  await "both note-service instances registered and the gateway ready" registered
  local console="http://127.0.0.1:$http/rnacos/manage/service"
  shoot "$console" docs/images/rnacos-services.png 1280,560
  shoot "$console/instance?namespaceId=public&groupName=DEFAULT_GROUP&serviceName=easy-note-note" \
    docs/images/rnacos-instances.png 1280,520
}

prometheus() {
  # Up with Compose v2, the walkthrough run; left up for the pictures, then down.
  bash deploy/engine/run.sh --compose v2 --keep
  trap 'docker compose -p easy-note-engine down -v >/dev/null 2>&1' RETURN
  local query='prometheus_sd_discovered_targets{config=~"nacos/.*"}'
  # Discovery refreshes every 10 s (prometheus.yml): wait for all four instances.
  for _ in $(seq 1 60); do
    curl -s "http://127.0.0.1:9090/api/v1/query" --data-urlencode "query=sum($query)" |
      grep -q '"4"' && break
    sleep 1
  done
  shoot "http://127.0.0.1:9090/graph?g0.expr=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")&g0.tab=1" \
    docs/images/prometheus-discovered.png 1280,520
}

case "${1:-all}" in
  registry) registry ;;
  prometheus) prometheus ;;
  all)
    EASYNOTE_SCREENSHOTS="$PWD/docs/images" \
      cargo nextest run --locked -p easy-note --test api web_app::
    registry
    ;;
  *) echo "usage: $0 [registry]" >&2; exit 2 ;;
esac
ls -l docs/images/*.png

#!/usr/bin/env bash
# The engine smoke test from nothing, as CI runs it (as root, on Debian 12):
#
#   deploy/engine/run.sh [deploy/engine-smoke.py options, e.g. --drills]
#   deploy/engine/run.sh --prepare     steps 1 and the images that need no build
#
# 1. a Docker engine: Debian's docker.io (engine 20.10), Compose 1.29
#    (docker-compose) and debootstrap, installed when missing; Compose v2
#    (`docker compose`), which Debian 12 lacks, from Debian 13's
#    docker-compose package (a plugin binary that needs only libc); dockerd
#    started with overlay2 when no engine answers;
# 2. the images (deploy/engine/images.sh; kept while their recipes hold);
# 3. deploy/engine-smoke.py.
# Needs the release build (cargo build --release --locked --workspace).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
step() { printf '==> [%d:%02d] %s\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$*"; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}

compose_v2() {
  local plugins=/usr/local/lib/docker/cli-plugins tmp
  docker compose version >/dev/null 2>&1 && return
  step "installing Compose v2 (Debian 13's docker-compose package, its plugin only)"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/lists/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$tmp/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/lists" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$tmp" && apt-get "${opts[@]}" download -qq docker-compose)
  dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/root"
  mkdir -p "$plugins"
  install -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugins/docker-compose"
  rm -rf "$tmp"
  docker compose version
}

ensure_engine() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    step "installing ${missing[*]} (Debian)"
    apt_install "${missing[@]}"
  fi
  compose_v2
  if ! docker info >/dev/null 2>&1; then
    step "starting dockerd (overlay2)"
    nohup dockerd --storage-driver=overlay2 >/var/log/easy-note-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/easy-note-dockerd.log >&2; exit 1; }
  fi
}

ensure_engine
if [[ "${1:-}" == --prepare ]]; then
  # CI, in the background while it compiles: the engine and the images
  # that need no build output.
  step "images (deploy/engine/images.sh --early)"
  bash deploy/engine/images.sh --early
  exit 0
fi
step "images (deploy/engine/images.sh)"
bash deploy/engine/images.sh
step "deploy/engine-smoke.py $*"
scripts/py deploy/engine-smoke.py "$@"
step "done"

#!/usr/bin/env bash
# Builds, on a Docker engine with no image registry, every image that
# docker-compose.yml and deploy/Dockerfile name, under those same names, so
# the committed compose file runs unmodified (deploy/engine-smoke.py):
#
#   debian:12.12-slim          Debian 12 by debootstrap from the machine's apt mirror
#   mysql, nacos, prometheus,  stand-ins from deploy/engine/<dir>/Dockerfile, each
#   otel-collector, jaeger,    saying there what it proves and what it cannot
#   grafana
#   easy-note:<tag>            deploy/Dockerfile's runtime stage over the binaries of
#                              `cargo build --release --locked --workspace` (CI's build)
#
#   deploy/engine/images.sh               all of the above
#   deploy/engine/images.sh --early       only the base and the stand-ins that need no
#                                         build output (CI, while it compiles)
#   deploy/engine/images.sh --full-build  the suite's image from the whole Dockerfile
#                                         instead (its Rust stages in a local
#                                         rust:<version> image made of this machine's
#                                         toolchain; about 10 minutes on 2 cores)
#
# Each image carries a label with the hash of its recipe (its directory
# and the binaries copied in); one whose recipe has not changed is kept,
# so a warm machine rebuilds only what changed. Needs root (debootstrap)
# and a running engine. Prints each image's time.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=deploy/engine
LABEL=easy-note.engine.recipe
RELEASE="${CARGO_TARGET_DIR:-target}/release"

full_build=false early=false
case "${1:-}" in
  "") ;;
  --full-build) full_build=true ;;
  --early) early=true ;;
  *) echo "usage: $0 [--full-build | --early]" >&2; exit 2 ;;
esac

# The image a compose service or a Dockerfile ARG names.
compose_image() {
  awk -v svc="  $1:" '$0 == svc { found = 1; next }
    found && /^  [^ ]/ { exit }
    found && $1 == "image:" { print $2; exit }' docker-compose.yml
}
dockerfile_arg() { sed -n "s/^ARG $1=//p" deploy/Dockerfile; }

# Hash of files and directories (names and contents).
recipe_hash() {
  find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

current() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

# Runs a step quietly, printing its time, or its output if it fails.
timed() {
  local what="$1" t0=$SECONDS out
  shift
  out="$(mktemp)"
  if ! "$@" >"$out" 2>&1; then
    tail -40 "$out" >&2
    echo "failed: $what" >&2
    exit 1
  fi
  rm -f "$out"
  printf '  %-48s %4ds\n' "$what" $((SECONDS - t0))
}

# A BuildKit build, which skips the stages the target does not use: buildx
# where installed, else Debian's client (engine 20.10), which has it built
# in (newer clients without buildx refuse DOCKER_BUILDKIT=1).
buildkit() {
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load "$@"
  elif [[ -x /usr/bin/docker ]]; then
    DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
  else
    DOCKER_BUILDKIT=1 docker build "$@"
  fi
}

# A stand-in: its directory is the build context, with extra files copied in.
standin() {
  local dir="$1" image="$2"
  shift 2
  local ctx hash
  hash="$(recipe_hash "$ENGINE/$dir" "$@")"
  if [[ "$(current "$image")" == "$hash" ]]; then
    printf '  %-48s kept\n' "$image"
    return
  fi
  ctx="$(mktemp -d)"
  cp -r "$ENGINE/$dir/." "$ctx/"
  for file in "$@"; do cp "$file" "$ctx/"; done
  timed "$image" docker build --label "$LABEL=$hash" -t "$image" "$ctx"
  rm -rf "$ctx"
}

# Debian 12 from the Debian mirror the machine's apt uses for bookworm.
base_image() {
  local image="$1" hash mirror root
  hash="$(printf 'debootstrap minbase bookworm v1' | sha256sum | cut -c1-16)"
  if [[ "$(current "$image")" == "$hash" ]]; then
    printf '  %-48s kept\n' "$image"
    return
  fi
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  mirror="$(apt-cache policy 2>/dev/null | awk '$3 ~ /^bookworm\// && $2 ~ /\/debian\/?$/ { print $2; exit }')"
  root="$(mktemp -d)"
  timed "debootstrap bookworm (${mirror:=http://deb.debian.org/debian})" \
    debootstrap --variant=minbase bookworm "$root" "$mirror"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # What the slim image does: no documentation, no recommends.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/99norecommends"
  timed "$image (import)" sh -c "tar -C '$root' -c . | docker import -c 'LABEL $LABEL=$hash' -c 'CMD [\"bash\"]' - '$image'"
  rm -rf "$root"
}

# rust:<version>-slim-bookworm: the base image with this machine's Rust
# toolchain, its gcc, and the host's CA bundle (crates.io is reached
# through a proxy only the host trusts).
rust_image() {
  local image="$1" sysroot ctx hash
  sysroot="$(rustc --print sysroot)"
  hash="$( (rustc -V; cat "$ENGINE/rust/Dockerfile") | sha256sum | cut -c1-16)"
  if [[ "$(current "$image")" == "$hash" ]]; then
    printf '  %-48s kept\n' "$image"
    return
  fi
  ctx="$(mktemp -d)"
  cp -a "$sysroot" "$ctx/toolchain"
  cp "$(command -v rustup)" "$ctx/rustup"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cp "$ENGINE/rust/Dockerfile" "$ctx/"
  timed "$image" docker build --label "$LABEL=$hash" \
    --build-arg TOOLCHAIN="$(basename "$sysroot")" -t "$image" "$ctx"
  rm -rf "$ctx"
}

# easy-note:<tag> from the Dockerfile's runtime stage over CI's release
# binaries (an image holding them in /out, as the builder stage would).
suite_image() {
  local image="$1" ctx bins=(easy-note api-gateway user-service note-service)
  ctx="$(mktemp -d)"
  mkdir "$ctx/out"
  for bin in "${bins[@]}"; do
    [[ -x "$RELEASE/$bin" ]] || { echo "$RELEASE/$bin missing: cargo build --release --locked --workspace" >&2; exit 1; }
    cp "$RELEASE/$bin" "$ctx/out/"
  done
  printf 'FROM scratch\nCOPY out/ /out/\n' >"$ctx/Dockerfile"
  timed "easy-note-engine/binaries:local" docker build -t easy-note-engine/binaries:local "$ctx"
  rm -rf "$ctx"
  timed "$image (runtime stage over those binaries)" buildkit \
    -f deploy/Dockerfile --target runtime --build-arg BINARIES=easy-note-engine/binaries:local \
    -t "$image" .
}

docker info >/dev/null 2>&1 || { echo "no Docker engine answers (start dockerd)" >&2; exit 1; }
echo "images for docker-compose.yml:"
base_image "$(dockerfile_arg RUNTIME_IMAGE)"

standin mysql "$(compose_image mysql)"
standin prometheus "$(compose_image prometheus)"
standin jaeger "$(compose_image jaeger)"
standin grafana "$(compose_image grafana)"
# --early (CI, while it compiles): only what needs no build output.
if $early; then
  docker image prune -f >/dev/null
  exit 0
fi

# rnacos, as the tests find or install it; the receiver of the release build.
source scripts/tools.sh
ensure_rnacos >/dev/null
standin nacos "$(compose_image nacos)" "$RNACOS_BIN"
[[ -x "$RELEASE/otlp-receiver" ]] || { echo "$RELEASE/otlp-receiver missing: cargo build --release --locked --workspace" >&2; exit 1; }
standin collector "$(compose_image otel-collector)" "$RELEASE/otlp-receiver"

if $full_build; then
  rust_image "$(dockerfile_arg RUST_IMAGE)"
  timed "$(compose_image api-gateway) (the whole Dockerfile)" buildkit -f deploy/Dockerfile \
    -t "$(compose_image api-gateway)" .
else
  suite_image "$(compose_image api-gateway)"
fi

# Layers the rebuilds above replaced.
docker image prune -f >/dev/null
# Every image the compose file names is here now.
for image in $(awk '$1 == "image:" { print $2 }' docker-compose.yml | sort -u); do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "missing image $image" >&2; exit 1; }
done

# Sourced by scripts/test.sh, scripts/coverage.sh, bench/run.sh and .ci/run:
# the one place that finds, or installs, the tools the tests need.
#
#   ensure_rnacos      exports RNACOS_BIN: RNACOS_BIN if set, else rnacos on
#                      PATH, else ~/.cargo/bin/rnacos, else installs it
#   ensure_tarpaulin   installs cargo-tarpaulin $TARPAULIN_VERSION if missing
#   ensure_chromium    exports CHROMEDRIVER: CHROMEDRIVER if set, else
#                      chromedriver on PATH, else installs Debian's chromium
#                      and chromium-driver (the web app's browser tests)
#
# Installs build at opt-level 1: rnacos at the default opt-level 3 took
# 18 minutes on 2 cores, which no test needs (they start it a few times
# and register a handful of instances).

TARPAULIN_VERSION="0.37.5"

_cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

# `cargo install --locked` of $@, optimised enough for a test tool.
_install_tool() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install --locked "$@"
}

ensure_rnacos() {
  if [[ -z "${RNACOS_BIN:-}" ]]; then
    if command -v rnacos >/dev/null 2>&1; then
      RNACOS_BIN="$(command -v rnacos)"
    elif [[ -x "$_cargo_bin/rnacos" ]]; then
      RNACOS_BIN="$_cargo_bin/rnacos"
    else
      echo "note: rnacos not found; installing it with 'cargo install --locked rnacos' (minutes, once)." >&2
      _install_tool rnacos
      RNACOS_BIN="$_cargo_bin/rnacos"
    fi
  fi
  export RNACOS_BIN
}

ensure_tarpaulin() {
  if ! cargo tarpaulin --version 2>/dev/null | grep -q "$TARPAULIN_VERSION"; then
    echo "note: installing cargo-tarpaulin $TARPAULIN_VERSION (minutes, once)." >&2
    _install_tool cargo-tarpaulin --version "$TARPAULIN_VERSION"
  fi
}

# Installs Debian packages (as root, or with sudo), updating the package
# lists only when the first try fails.
_apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get to install $*: install them, or point the tests at them" >&2
    return 1
  fi
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null; }
}

ensure_chromium() {
  if [[ -z "${CHROMEDRIVER:-}" ]]; then
    if ! command -v chromedriver >/dev/null 2>&1; then
      echo "note: chromedriver not found; installing Debian's chromium and chromium-driver (a minute, once)." >&2
      _apt_install chromium chromium-driver
    fi
    CHROMEDRIVER="$(command -v chromedriver)"
  fi
  export CHROMEDRIVER
}

# redis-server for the tests that start a Redis of their own (cluster-wide
# rate limits, stopped and frozen mid-test): REDIS_SERVER_BIN, else PATH,
# else Debian's redis-server.
ensure_redis_server() {
  if [[ -z "${REDIS_SERVER_BIN:-}" ]] && ! command -v redis-server >/dev/null 2>&1; then
    echo "note: redis-server not found; installing Debian's redis-server (once)." >&2
    _apt_install redis-server
  fi
}

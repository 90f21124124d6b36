#!/usr/bin/env bash
# The test command of the README and of CI: runs every test of the workspace.
#
# Tests talk to real servers. SQLite needs nothing; the MySQL tests run when
# EASYNOTE_TEST_MYSQL_URL names a server where the user may create databases
# (CI always sets it). The registry tests (tests/registry) start their own
# rnacos, a Nacos-compatible server: it is taken from RNACOS_BIN or PATH, and
# installed with `cargo install --locked rnacos` when missing. The shared
# login-throttle tests use the Redis at EASYNOTE_TEST_REDIS_URL (default
# redis://127.0.0.1:6379; .ci/run starts one); the cluster-quota tests
# start a redis-server of their own (installed when missing). Extra arguments
# go to the test runner, e.g.
#   ./scripts/test.sh -p note-service
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${EASYNOTE_TEST_MYSQL_URL:-}" ]]; then
  echo "note: EASYNOTE_TEST_MYSQL_URL is not set; MySQL tests are skipped (SQLite only)." >&2
fi

# rnacos for the registry tests: RNACOS_BIN, else PATH, else ~/.cargo/bin,
# else install it (scripts/tools.sh; minutes, once).
source scripts/tools.sh
ensure_rnacos
ensure_chromium
ensure_redis_server

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "note: cargo-nextest not found; using cargo test." >&2
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi

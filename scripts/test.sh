#!/usr/bin/env bash
# The test command of the README and of CI: runs every test of the workspace.
#
# Tests talk to real servers. SQLite needs nothing; the MySQL tests run when
# EASYNOTE_TEST_MYSQL_URL names a server where the user may create databases
# (CI always sets it). Extra arguments go to the test runner, e.g.
#   ./scripts/test.sh -p note-service
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${EASYNOTE_TEST_MYSQL_URL:-}" ]]; then
  echo "note: EASYNOTE_TEST_MYSQL_URL is not set; MySQL tests are skipped (SQLite only)." >&2
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "note: cargo-nextest not found; using cargo test." >&2
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi

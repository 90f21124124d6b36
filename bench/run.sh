#!/usr/bin/env bash
# Reruns every benchmark scenario (bench/run.py) and regenerates
# docs/benchmarks.md's tables and docs/benchmarks.svg
# (bench/render_docs.py):           bench/run.sh
# CI's smoke (every scenario briefly, at low load, docs untouched):
#                                   bench/run.sh --smoke
# Builds what it runs the way the images are built (release, --locked).
# Needs rnacos for the Nacos scenario (RNACOS_BIN, PATH or ~/.cargo/bin;
# installed with `cargo install --locked rnacos` when missing) and a
# MySQL-compatible server for the MySQL one (EASYNOTE_BENCH_MYSQL_URL,
# default mysql://root@127.0.0.1:3306/test; its user creates databases).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --workspace
cargo build --release --locked --example otlp-receiver

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ -z "${RNACOS_BIN:-}" ]] && ! command -v rnacos >/dev/null 2>&1 && [[ ! -x "$cargo_bin/rnacos" ]]; then
  echo "note: rnacos not found; installing it with 'cargo install --locked rnacos'." >&2
  cargo install --locked rnacos
fi
export PATH="$PATH:$cargo_bin"

exec python3 bench/run.py "$@"

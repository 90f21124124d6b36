#!/usr/bin/env bash
# Reruns every benchmark scenario (bench/run.py) and regenerates
# docs/benchmarks.md's tables and docs/benchmarks.svg
# (bench/render_docs.py):           bench/run.sh
# CI's smoke (every scenario briefly, at low load, docs untouched):
#                                   bench/run.sh --smoke
# Builds what it runs the way the images are built (release, --locked).
# Needs rnacos for the Nacos scenario (found or installed by
# scripts/tools.sh) and a
# MySQL-compatible server for the MySQL one (EASYNOTE_BENCH_MYSQL_URL,
# default mysql://root@127.0.0.1:3306/test; its user creates databases).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --workspace

source scripts/tools.sh
ensure_rnacos

exec scripts/py bench/run.py "$@"

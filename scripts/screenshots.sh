#!/usr/bin/env bash
# Regenerates the web app's screenshots in docs/images/ (shown by the README
# and the tutorial): the browser tests take them in headless Chromium and,
# with EASYNOTE_SCREENSHOTS set, write them there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_chromium
EASYNOTE_SCREENSHOTS="$PWD/docs/images" \
  cargo nextest run --locked -p easy-note --test api web_app::
ls -l docs/images/web-*.png

#!/usr/bin/env bash
# Render a sweep's report.html with headless Chromium into a PNG, to check by eye that every figure and table
# shows (the HTML is self-contained: figures are inlined, so nothing is fetched). Not run by CI.
#
# Usage: scripts/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#   e.g. scripts/screenshot_report.sh runs/demo/report/report.html /tmp/report.png 1200x4000
# Needs Debian's `chromium`; when it is missing the script installs it with apt-get (root, network) or says how.
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]" >&2
  exit 2
fi
html=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=${2:-${html%.html}.png}
size=${3:-1200x4000}

browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    browser=$(command -v chromium)
  else
    echo "$0: chromium not found; install it (Debian/Ubuntu: sudo apt-get install chromium)" >&2
    exit 1
  fi
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# A throwaway profile and no background services: the render touches nothing outside this run.
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${size/x/,}" --screenshot="$out" "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "$0: no screenshot written to $out" >&2; exit 1; }
echo "$out"

#!/usr/bin/env bash
# Builds (once) and prints the path of radscale's virtualenv.
# The venv lives outside the clone, keyed by the dependency set, so CI and repeated runs reuse it;
# a fresh machine builds it from scratch with the same command.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${RADSCALE_PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
# Bump RECIPE when the install steps below change; the key then names a new venv.
RECIPE=1
key=$( (echo "$RECIPE"; cat "$here/requirements.txt") | sha256sum | cut -c1-12)
venv=${RADSCALE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/radscale/venv-$key}
if [ ! -f "$venv/.complete" ]; then
  echo "radscale: building virtualenv $venv (first run only, ~10 min)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  # This machine's pip config names local indexes that are absent on others; drop that noise, keep errors.
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2; }
  pip="$venv/bin/python -m pip install --quiet --disable-pip-version-check"
  quiet $pip --upgrade pip setuptools wheel
  # torch first: deepspeed's sdist imports it at build time.
  quiet $pip $(grep -E '^(torch|torchvision)==' "$here/requirements.txt")
  DS_BUILD_OPS=0 quiet $pip --no-build-isolation $(grep -E '^deepspeed==' "$here/requirements.txt")
  quiet $pip -r "$here/requirements.txt"
  touch "$venv/.complete"
fi
# The package itself is installed editable from this clone (fast, no deps) so `radscale` is on PATH.
if ! (cd / && "$venv/bin/python" -I - "$here" <<'PY') >/dev/null 2>&1
import sys, pathlib, radscale
sys.exit(0 if pathlib.Path(radscale.__file__).resolve().parents[1] == pathlib.Path(sys.argv[1]).resolve() else 1)
PY
then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$here" >&2
fi
echo "$venv"

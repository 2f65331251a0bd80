#!/usr/bin/env bash
# Install everything the project needs into ./.venv and ./node_modules (idempotent).
# Python 3.11+, Node 20+ and npm must be on PATH; only the package registries are used.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "setup: Python >= 3.11 is required" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
command -v node >/dev/null || { echo "setup: Node.js 20+ is required (node not on PATH)" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup: npm is required" >&2; exit 1; }

# Debian's chromium for the browser tests (tests/browser), installed with apt when it is missing
# and apt is usable (root, or password-less sudo); otherwise one clear line and the browser
# tests skip. SKIP_CHROMIUM_INSTALL=1 leaves the system alone. Playwright (a Python package)
# drives this Chromium through executable_path: never `playwright install`.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
ensure_chromium() {
  if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    return 0
  fi
  if [ "${SKIP_CHROMIUM_INSTALL:-0}" = 1 ]; then
    echo "setup: no chromium on PATH (SKIP_CHROMIUM_INSTALL=1): the browser tests will be skipped" >&2
    return 0
  fi
  local sudo=()
  if ! command -v apt-get >/dev/null; then
    echo "setup: no chromium on PATH and no apt-get to install it: the browser tests will be skipped (install Chromium, or set CHROMIUM=/path/to/chromium)" >&2
    return 0
  elif [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "setup: no chromium on PATH and apt-get needs root: the browser tests will be skipped (run: sudo apt-get install -y chromium)" >&2
      return 0
    fi
  fi
  echo "setup: installing Debian's chromium with apt-get (for the browser tests)"
  local log start=$SECONDS
  log=$(mktemp)
  if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1 \
     && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >>"$log" 2>&1; then
    echo "setup: chromium installed in $((SECONDS - start)) s ($(command -v chromium))"
  else
    tail -n 20 "$log" >&2
    echo "setup: apt-get could not install chromium: the browser tests will be skipped" >&2
  fi
  rm -f "$log"
}
ensure_chromium

# The web app's scripts (offchain/api/web → offchain/api/static/dist, esbuild; about a second),
# rebuilt on every run so the served bundle always matches the sources.
build_web() {
  node scripts/build_web.mjs
}

stamp=$(cat pyproject.toml package.json package-lock.json | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ -d node_modules ] && [ "$(cat .setup-stamp 2>/dev/null)" = "$stamp" ]; then
  build_web
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch requirement (traker's) would pull a CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[all]"
# Exactly the lock (which records anvil's optional binary of every platform, so no install
# rewrites it and the tree stays clean); regenerate it with `npm install` after editing
# package.json, from an empty node_modules and no lock.
# node_modules also holds the emoji art of the `emoji` dataset (emoji-datasource-google and
# -twitter, openmoji: about 140 MB of tarballs, 220 MB unpacked), read by offchain/data/emoji.py.
npm ci --no-audit --no-fund --loglevel=error
build_web
echo "$stamp" > .setup-stamp
echo "setup: done (.venv, node_modules, offchain/api/static/dist)"

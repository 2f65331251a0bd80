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

stamp=$(cat pyproject.toml package.json package-lock.json | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ -d node_modules ] && [ "$(cat .setup-stamp 2>/dev/null)" = "$stamp" ]; then
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
echo "$stamp" > .setup-stamp
echo "setup: done (.venv, node_modules)"

#!/usr/bin/env bash
# README command 2: set everything up, then run the default (fast) test suite.
# Extra arguments go to pytest (e.g. `-m slow` for the long ML tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"

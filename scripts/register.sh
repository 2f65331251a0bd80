#!/usr/bin/env bash
# `offchain register-holder` (see README, "Command line"); arguments go to the command, e.g.
# bash scripts/register.sh --images ./my_images --name alice --price-wei 0 --dev-index 3 --api http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m offchain register-holder "$@"

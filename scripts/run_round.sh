#!/usr/bin/env bash
# `offchain run-round` (see README, "Command line"): run or resume the next round of a deployed,
# funded campaign; arguments go to the command. Config: CCOMP_* variables or --config FILE, e.g.
# CCOMP_RPC_URL=http://127.0.0.1:8545 bash scripts/run_round.sh --dev --run-dir runs/ops
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m offchain run-round "$@"

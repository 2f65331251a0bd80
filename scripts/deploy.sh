#!/usr/bin/env bash
# `offchain deploy` (see README, "Command line"); arguments go to the command. Config: CCOMP_* variables
# or --config FILE (an env file); e.g. CCOMP_RPC_URL=http://127.0.0.1:8545 bash scripts/deploy.sh --dev
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m offchain deploy "$@"

#!/usr/bin/env bash
# README command 1: set everything up, then run the main job on a local anvil chain with the
# shipped MNIST images (8 holders, 3 rounds). Extra arguments go to `offchain demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m offchain demo "$@"

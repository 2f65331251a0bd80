#!/usr/bin/env bash
# README command 1: set everything up, then run the main job on a local anvil chain: the
# emoji-art campaign (8 artist x category holders of Noto and Twemoji artwork, captioned,
# text-to-image model, 3 rounds). CCOMP_DATASET=mnist (or --dataset mnist) runs the MNIST
# campaign instead. Extra arguments go to `offchain demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
export CCOMP_DATASET="${CCOMP_DATASET:-emoji}"
exec .venv/bin/python -m offchain demo "$@"

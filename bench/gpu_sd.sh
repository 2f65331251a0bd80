#!/usr/bin/env bash
# Runner of bench/gpu_sd.py on a GPU machine whose python3 holds torch, transformers, peft and
# accelerate but not diffusers or traker (the project's device image, see the issue-16 notes):
# wheels found in .whl/ (e.g. diffusers-0.42.1 and traker-0.3.2, pure-Python) are installed into
# /tmp/site first. Arguments go to bench/gpu_sd.py; the log and the JSON figures go to $OUT when
# it is set. Run from the project root:  bash bench/gpu_sd.sh [--parts train,reference] ...
set -euo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
if [ -n "${OUT:-}" ]; then
    python3 bench/gpu_sd.py "$@" 2>&1 | tee "$OUT/gpu_sd.log"
else
    python3 bench/gpu_sd.py "$@"
fi

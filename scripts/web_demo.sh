#!/usr/bin/env bash
# The web app on a local chain you can point a wallet at: anvil on 127.0.0.1:${ANVIL_PORT:-8545}
# (chain id 31337, anvil's public dev accounts), a campaign deployed and funded by the operator
# commands, ${ROUNDS:-2} rounds of the tiny profile run up to `finalize` (posted and final,
# NOTHING claimed: claim them from the holder page), then the node's API and pages on
# http://127.0.0.1:${PORT:-8000}/ until Ctrl-C (which also stops anvil). Prints the demo holders'
# keys to import into a wallet (public test keys: never use them on a real network).
# Environment: RUN_DIR (default runs/web-demo, emptied first), PORT, ANVIL_PORT, ROUNDS,
# CCOMP_DATASET (mnist | emoji; the tiny profile's holders).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
RUN_DIR=${RUN_DIR:-runs/web-demo}
PORT=${PORT:-8000}
ANVIL_PORT=${ANVIL_PORT:-8545}
ROUNDS=${ROUNDS:-2}
offchain() { .venv/bin/python -m offchain "$@"; }

if [ -e "$RUN_DIR" ] && [ ! -f "$RUN_DIR/deployment.json" ]; then
  echo "web_demo: $RUN_DIR exists and is not a run folder of this script; choose another RUN_DIR" >&2
  exit 1
fi
rm -rf "$RUN_DIR" "$RUN_DIR-holders"
mkdir -p "$RUN_DIR-holders"

node_modules/.bin/anvil --host 127.0.0.1 --port "$ANVIL_PORT" --silent &
anvil_pid=$!
trap 'kill "$anvil_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf -X POST -H 'content-type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' \
    "http://127.0.0.1:$ANVIL_PORT" >/dev/null && break
  sleep 0.1
done

export CCOMP_RPC_URL="http://127.0.0.1:$ANVIL_PORT" CCOMP_PROFILE=tiny
offchain deploy --run-dir "$RUN_DIR" --dev
offchain create-campaign --run-dir "$RUN_DIR" --rounds "$ROUNDS" --dev
offchain fund 1000000000000000000000 --run-dir "$RUN_DIR" --dev
for round in $(seq "$ROUNDS"); do
  offchain run-round --round "$round" --until finalize --run-dir "$RUN_DIR" --dev
done
.venv/bin/python - "$RUN_DIR" <<'PY'
import json, sys
from pathlib import Path
from offchain.oracle.keys import holder_private_key
allocation = json.loads((Path(sys.argv[1]) / "round_001" / "allocation.json").read_text())
print("\nDemo holders (import a key into your wallet, network 127.0.0.1:%s, chain id 31337):" % __import__("os").environ.get("ANVIL_PORT", "8545"))
for h in allocation["holders"]:
    print(f"  {h['name']:<12} {h['address']}  key {holder_private_key(h['name'])}")
print("Sponsor: anvil dev account 2 (0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC)")
PY
echo "web_demo: pages at http://127.0.0.1:$PORT/ (holder: /holder, sponsor: /sponsor); Ctrl-C stops"
offchain serve --run-dir "$RUN_DIR" --holders-dir "$RUN_DIR-holders" --port "$PORT"

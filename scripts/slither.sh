#!/usr/bin/env bash
# Static analysis of the project's contracts with slither, offline (idempotent).
#
#   bash scripts/slither.sh [extra slither flags...]     e.g. --exclude-informational
#   SLITHER_TARGET=dir bash scripts/slither.sh           another directory of .sol files (default
#                                                        contracts; it must lie inside the repo)
#
# - Creates ./.venv-slither (its own environment: slither pins its own crytic-compile and
#   solc-select) and installs slither-analyzer there, only when missing or at another version.
# - No native solc is reachable offline (docs/toolchain.md), so slither compiles through
#   crytic-compile's standard-JSON platform (`solc_standard_json` in slither.config.json) with
#   scripts/slither_solc.js as `solc`: that fills in evmVersion cancun + optimizer 200 runs and
#   hands the input to the project's solcjs stand-in offchain/chain/solcjs_standard_json.js.
#   (slither's default route calls `solc --combined-json`, which the stand-in does not answer.)
# - Analyses contracts/*.sol (the directory is not searched recursively, so the contracts/test/
#   mocks are not compiled); findings in node_modules/ and contracts/test/ are filtered anyway.
# - Prints the findings and writes them as JSON to build/slither.json.
# - Expected noise (slither 0.11.6 bug, dependency code only): "Impossible to generate IR for
#   CompensationPool._nonReentrantBefore/_nonReentrantAfter/_reentrancyGuardEntered". slither keeps
#   one `using ... for *` per contract when two bases declare one (EIP712: ShortStrings,
#   ReentrancyGuardTransient: TransientSlot), so those three OpenZeppelin functions get no IR. The
#   reentrancy detectors key on the `nonReentrant` modifier name and are unaffected.
# - Exit status: 0 when slither ran (whatever it found: findings are triaged, not gated);
#   non-zero only when the tool itself failed (install, compilation, analysis).
set -euo pipefail
cd "$(dirname "$0")/.."

SLITHER_VERSION=${SLITHER_VERSION:-0.11.6}
PYTHON=${PYTHON:-python3}
VENV=.venv-slither
OUT=build/slither.json
TARGET=${SLITHER_TARGET:-contracts}

command -v node >/dev/null || { echo "slither.sh: node is required (solcjs stand-in)" >&2; exit 2; }
[ -d node_modules/solc ] && [ -d node_modules/@openzeppelin/contracts ] || {
  echo "slither.sh: node_modules/solc or @openzeppelin/contracts missing: run scripts/setup.sh" >&2
  exit 2
}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ "$("$VENV/bin/slither" --version 2>/dev/null || true)" != "$SLITHER_VERSION" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "slither-analyzer==$SLITHER_VERSION"
fi

mkdir -p build
rm -f "$OUT" # slither refuses to overwrite an existing JSON output

start=$(date +%s)
rc=0
"$VENV/bin/slither" "$TARGET" --config-file slither.config.json --fail-none \
  --json "$OUT" "$@" || rc=$?
elapsed=$(($(date +%s) - start))

if [ "$rc" -ne 0 ] || [ ! -s "$OUT" ]; then
  echo "slither.sh: slither failed (exit $rc) after ${elapsed}s" >&2
  exit "$(( rc == 0 ? 1 : rc ))"
fi

# Summarise build/slither.json; a JSON with success=false is a tool failure too.
"$VENV/bin/python" - "$OUT" "$elapsed" <<'PY'
import collections
import json
import sys

path, elapsed = sys.argv[1], sys.argv[2]
with open(path, encoding="utf8") as f:
    report = json.load(f)
if not report.get("success"):
    print(f"slither.sh: slither reported an error: {report.get('error')}", file=sys.stderr)
    sys.exit(1)
detectors = (report.get("results") or {}).get("detectors") or []
counts = collections.Counter(d["impact"] for d in detectors)
order = ["High", "Medium", "Low", "Informational", "Optimization"]
summary = ", ".join(f"{counts.get(k, 0)} {k.lower()}" for k in order)
print(f"slither.sh: {len(detectors)} finding(s): {summary}; JSON in {path} ({elapsed}s)")
for d in detectors:
    if d["impact"] in ("High", "Medium"):
        first = d["description"].strip().splitlines()[0]
        print(f"  [{d['impact']}/{d['confidence']}] {d['check']}: {first}")
PY

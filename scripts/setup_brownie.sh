#!/usr/bin/env bash
# Install eth-brownie into its own environment ./.venv-brownie and make `brownie compile` and
# `brownie test` work offline (idempotent; run scripts/setup.sh first for node_modules).
#
# eth-brownie 1.22.2 pins web3 7.x (and pytest, hypothesis, eth-account ...) with `==`, so it
# cannot share ./.venv (web3 8). No native solc can be downloaded here, so this script:
#   1. creates .venv-brownie and pip installs eth-brownie==1.22.2 into it;
#   2. places a wrapper over the solcjs stand-in (offchain/chain/solcjs_standard_json.js, which
#      answers `--version` and `--standard-json`) as <solcx dir>/solc-v0.8.30, where py-solc-x
#      (and so brownie) looks for installed compilers: $SOLCX_BINARY_PATH if set, else ~/.solcx.
#      A native solc already installed there (e.g. by `solcx.install_solc` online) is kept;
#   3. links anvil into .venv-brownie/bin: brownie's built-in `development` network runs `anvil`
#      from PATH (and picks its anvil backend only when the command starts with "anvil"), so
#      activate the environment, or put .venv-brownie/bin first on PATH, before `brownie test`;
#   4. makes sure ~/.brownie/network-config.yaml's `development` network is anvil (brownie
#      1.22.2 writes it so on first use; an older ganache-cli entry is replaced).
# Usage: scripts/setup_brownie.sh   then   source .venv-brownie/bin/activate
#                                          brownie compile && brownie test
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
case "$ROOT" in *"'"*) echo "setup_brownie: the repository path must not contain a quote" >&2; exit 1 ;; esac

PYTHON=${PYTHON:-python3}
VENV=.venv-brownie
BROWNIE_VERSION=1.22.2
SOLC_VERSION=0.8.30
STANDIN="$ROOT/offchain/chain/solcjs_standard_json.js"
ANVIL_REL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

die() { echo "setup_brownie: $*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "Python >= 3.10 is required for eth-brownie $BROWNIE_VERSION"
command -v node >/dev/null || die "Node.js is required (node not on PATH)"
[ -f node_modules/solc/package.json ] || die "node_modules/solc is missing: run scripts/setup.sh first"
[ -x "$ANVIL_REL" ] || die "$ANVIL_REL is missing: run scripts/setup.sh first"

# 1. The environment.
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" - "$BROWNIE_VERSION" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if version("eth-brownie") == sys.argv[1] else 1)
PY
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "eth-brownie==$BROWNIE_VERSION"
fi
[ -x "$VENV/bin/brownie" ] || die "$VENV/bin/brownie was not installed"

# 2. solc 0.8.30 for py-solc-x: a wrapper over the solcjs stand-in.
standin_version=$(node "$STANDIN" --version | sed -n 's/^Version: \([0-9.]*\).*/\1/p')
[ "$standin_version" = "$SOLC_VERSION" ] \
  || die "node_modules/solc is $standin_version, brownie-config.yaml pins $SOLC_VERSION"
SOLCX_DIR=${SOLCX_BINARY_PATH:-$HOME/.solcx}
mkdir -p "$SOLCX_DIR"
solc_bin="$SOLCX_DIR/solc-v$SOLC_VERSION"
marker="# ccomp solcjs stand-in"
if [ -e "$solc_bin" ] && ! grep -qF "$marker" "$solc_bin" 2>/dev/null; then
  echo "setup_brownie: keeping the solc already installed at $solc_bin"
else
  tmp="$solc_bin.tmp.$$"
  printf '#!/bin/sh\n%s (written by %s/scripts/setup_brownie.sh)\nexec node '"'"'%s'"'"' "$@"\n' \
    "$marker" "$ROOT" "$STANDIN" > "$tmp"
  chmod 755 "$tmp"
  mv -f "$tmp" "$solc_bin"
fi
"$solc_bin" --version | grep -q "^Version: $SOLC_VERSION" || die "$solc_bin --version failed"

# 3. anvil on the environment's PATH.
ln -sfn "../../$ANVIL_REL" "$VENV/bin/anvil"
"$VENV/bin/anvil" --version >/dev/null || die "$VENV/bin/anvil does not run"

# 4. brownie's `development` network runs anvil (importing brownie creates ~/.brownie).
dev_cmd=$("$VENV/bin/python" -c '
from brownie._config import CONFIG
print(CONFIG.networks.get("development", {}).get("cmd", ""))')
case "$dev_cmd" in
  anvil*) ;;
  *)
    [ -z "$dev_cmd" ] || "$VENV/bin/brownie" networks delete development >/dev/null
    "$VENV/bin/brownie" networks add Development development name=Anvil cmd=anvil \
      host=http://127.0.0.1 port=8545 accounts=10 gas_limit=12000000 base_fee=0 >/dev/null
    echo "setup_brownie: brownie's development network now runs anvil (~/.brownie/network-config.yaml)"
    ;;
esac

echo "setup_brownie: done ($VENV: eth-brownie $BROWNIE_VERSION; $solc_bin; anvil)"

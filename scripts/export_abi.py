"""Write the contracts' ABIs the web app bundles (offchain/api/web/abi/*.json) from a fresh
compile of contracts/ (``compile_contracts``), so the pages call and decode exactly what the
deployed code defines. tests/test_web_assets.py fails when a committed ABI differs from the
compiled one; rerun this script after changing a contract.

Usage: .venv/bin/python scripts/export_abi.py
"""

from __future__ import annotations

import json
from pathlib import Path

from offchain.chain import compile_contracts

ABI_DIR = Path(__file__).resolve().parents[1] / "offchain" / "api" / "web" / "abi"
EXPORTED = {"CompensationPool": "CompensationPool.json", "TestToken": "ERC20.json"}
"""Contract → file. ``TestToken`` is the project's ERC-20 (OpenZeppelin's, plus an open
``mint`` used only by local test campaigns); the pages use its standard ERC-20 entries."""


def exported_abis() -> dict[str, list]:
    """File name → ABI (a JSON list) of every exported contract, freshly compiled."""
    compiled = compile_contracts()
    return {file: compiled[name].abi for name, file in EXPORTED.items()}


def main() -> None:
    ABI_DIR.mkdir(parents=True, exist_ok=True)
    for file, abi in exported_abis().items():
        (ABI_DIR / file).write_text(json.dumps(abi, indent=1) + "\n")
        print(f"export_abi: {ABI_DIR / file} ({len(abi)} entries)")


if __name__ == "__main__":
    main()

"""Brownie's view of the contracts: `brownie compile` and `brownie test` (tests/brownie) in their
own environment, .venv-brownie (eth-brownie 1.22.2 pins web3 7.x, so it cannot live in .venv).

Skipped unless scripts/setup_brownie.sh has been run. Runs on an anvil that brownie launches on
127.0.0.1:8545 (brownie's `development` network).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv-brownie" / "bin"
BROWNIE = VENV_BIN / "brownie"
SOLC_VERSION = "0.8.30"
BROWNIE_PORT = 8545

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BROWNIE.exists(),
        reason=".venv-brownie/bin/brownie is absent: run scripts/setup_brownie.sh to enable",
    ),
]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _brownie(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # brownie's development network runs `anvil` from PATH; setup_brownie.sh links it here.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env.pop("PYTHONPATH", None)  # keep the main .venv's packages out of brownie's interpreter
    env.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.run(
        [str(BROWNIE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(proc: subprocess.CompletedProcess[str], n: int = 60) -> str:
    lines = (proc.stdout + proc.stderr).splitlines()
    return "\n".join(lines[-n:])


def test_brownie_compile_and_test() -> None:
    solcx_dir = Path(os.environ.get("SOLCX_BINARY_PATH") or Path.home() / ".solcx")
    solc = solcx_dir / f"solc-v{SOLC_VERSION}"
    assert solc.exists(), (
        f"{solc} is missing (brownie would try to download it): run scripts/setup_brownie.sh"
    )
    assert (VENV_BIN / "anvil").exists(), (
        ".venv-brownie/bin/anvil is missing: run scripts/setup_brownie.sh"
    )
    if _port_in_use(BROWNIE_PORT):
        pytest.skip(
            f"127.0.0.1:{BROWNIE_PORT} is in use: brownie would attach to that node instead of "
            "launching its own anvil"
        )

    compiled = _brownie("compile", timeout=300)
    assert compiled.returncode == 0, f"brownie compile failed:\n{_tail(compiled)}"
    assert "Project has been compiled" in compiled.stdout or "up to date" in compiled.stdout, _tail(
        compiled
    )
    assert (ROOT / "build" / "brownie" / "contracts" / "CompensationPool.json").exists()

    tested = _brownie("test", timeout=600)
    assert tested.returncode == 0, f"brownie test failed:\n{_tail(tested)}"
    assert " passed" in tested.stdout, _tail(tested)
    assert " failed" not in tested.stdout and " error" not in tested.stdout, _tail(tested)

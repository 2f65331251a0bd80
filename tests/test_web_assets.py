"""The web app's build inputs: the contracts' ABIs bundled into the pages are exactly what the
contracts compile to (scripts/export_abi.py writes them), the bundle builds from package.json's
own toolchain (esbuild, viem, Chart.js, Swagger UI) without the network, and ``/web/config``
serves the deployment the pages talk to."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from offchain.api.app import create_app
from offchain.config import PROJECT_ROOT
from scripts.export_abi import ABI_DIR, exported_abis


def test_the_bundled_abis_are_the_compiled_contracts_abis() -> None:
    for file, abi in exported_abis().items():
        committed = json.loads((ABI_DIR / file).read_text())
        assert committed == abi, f"{file} is stale: run .venv/bin/python scripts/export_abi.py"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")
def test_the_web_bundle_builds_offline_from_the_locked_packages() -> None:
    built = subprocess.run(["node", "scripts/build_web.mjs"], cwd=PROJECT_ROOT, text=True,
                           capture_output=True, timeout=120)
    assert built.returncode == 0, built.stderr
    dist = PROJECT_ROOT / "offchain" / "api" / "static" / "dist"
    assert (dist / "swagger" / "swagger-ui-bundle.js").stat().st_size > 100_000
    for page in (PROJECT_ROOT / "offchain" / "api" / "web").glob("*.js"):
        assert (dist / page.name).is_file(), page.name


def test_web_config_serves_the_deployment_and_404s_without_one(tmp_path) -> None:
    client = TestClient(create_app(tmp_path))
    missing = client.get("/web/config")
    assert missing.status_code == 404 and "no deployment" in missing.json()["detail"]
    deployment = {
        "rpc_url": "http://127.0.0.1:8545", "chain_id": 31337,
        "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "pool": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", "campaign_id": 1,
        "challenge_window_s": 3600, "claim_deadline": 1799555291,
    }
    (tmp_path / "deployment.json").write_text(json.dumps(deployment))
    config = client.get("/web/config").json()
    assert config == {"chain_id": 31337, "pool": deployment["pool"], "token": deployment["token"],
                      "native": False, "campaign_id": 1, "challenge_window_s": 3600,
                      "claim_window_s": None, "claim_deadline": 1799555291,
                      "posting_deadline": None}
    assert "rpc_url" not in config  # an operator's RPC URL may carry an API key

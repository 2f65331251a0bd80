"""Schema-driven fuzzing of the API (schemathesis over its own OpenAPI, in-process ASGI): no
operation answers 5xx, whatever the generated path, query or body; fuzzed registrations leave
the holders folder unchanged."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from bench.api_load import build_run_dir  # noqa: E402
from offchain.api.app import create_app  # noqa: E402
from offchain.api.operator import OperatorConfig  # noqa: E402
from offchain.api.registration import RegistrationLimits  # noqa: E402
from offchain.layout import RoundPaths  # noqa: E402
from offchain.oracle.chain_stages import request_signatures  # noqa: E402
from offchain.utils import read_json, write_json  # noqa: E402


def _snapshot(root) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
        for p in root.rglob("*")
        if p.name != ".registration.lock"
    )


def _build(root: Path) -> tuple[FastAPI, Path]:
    run_dir = root / "run"
    build_run_dir(run_dir, rounds=2, holders=12, seed=3)
    for round_id in (1, 2):  # the artifacts /rounds/{id} reads besides allocation.json
        paths = RoundPaths(run_dir, round_id)
        write_json(paths.decision, {"policy": "shapley"})
        write_json(paths.manifest, {"dataset_root": "0x" + "ab" * 32})
    write_json(
        RoundPaths(run_dir, 1).signature,
        {"signature": "0x" + "11" * 65, "signer": "0x" + "22" * 20},
    )
    # a campaign (deployment.json) and a signing request, so /campaigns and the co-signing
    # routes have something to serve; no state.db: a GET must never create it
    pool = "0x" + "5f" * 20
    write_json(
        run_dir / "deployment.json",
        {
            "rpc_url": "http://127.0.0.1:1",
            "chain_id": 31337,
            "token": "0x" + "70" * 20,
            "pool": pool,
            "campaign_id": 1,
            "signers": ["0x" + "44" * 20],
            "threshold": 1,
        },
    )
    allocation = RoundPaths(run_dir, 1).allocation
    write_json(
        allocation,
        {
            **read_json(allocation),
            "total_wei": 1,
            "provenance": {
                k: "0x" + "c1" * 32 for k in ("checkpoint_hash", "dataset_root", "attribution_hash")
            },
        },
    )
    request_signatures(RoundPaths(run_dir, 1), 31337, pool, 1, 1, 2**40)
    holders = root / "holders"
    (holders / "existing").mkdir(parents=True)
    write_json(
        holders / "existing" / "holder.json",
        {"address": "0x" + "33" * 20, "reservation_price_wei": 5},
    )
    limits = RegistrationLimits(max_images=4, max_image_bytes=64 * 1024, max_total_bytes=256 * 1024)
    images = root / "images"  # the only folder POST /holders/manifest may read
    images.mkdir()
    operator = OperatorConfig(  # a token (else the operator routes answer 503); jobs never start
        token=SecretStr("Qm7vX2pL9sK4tR8wB3nF6hJ1cD5gZ0yE"), command=("false",)
    )
    app = create_app(run_dir, holders, limits, allowed_manifest_roots=[images], operator=operator)
    return app, holders


# schemathesis collects one test per operation at import time, so the app (over a synthetic run
# folder and a holders folder in a temporary directory) is built here, not in a fixture.
_ROOT = Path(tempfile.mkdtemp(prefix="api-fuzz-"))
APP, HOLDERS = _build(_ROOT)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def holders_folder_is_unchanged():
    before = _snapshot(HOLDERS)
    yield
    try:
        assert _snapshot(HOLDERS) == before, "a fuzzed request changed the holders folder"
        assert not (_ROOT / "run" / "state.db").exists(), "a fuzzed request created state.db"
    finally:
        shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_no_operation_answers_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])

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
from schemathesis.checks import not_a_server_error  # noqa: E402

from bench.api_load import build_run_dir  # noqa: E402
from offchain.api.app import create_app  # noqa: E402
from offchain.api.registration import RegistrationLimits  # noqa: E402
from offchain.rounds.layout import RoundPaths  # noqa: E402
from offchain.utils import write_json  # noqa: E402


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
    holders = root / "holders"
    (holders / "existing").mkdir(parents=True)
    write_json(
        holders / "existing" / "holder.json",
        {"address": "0x" + "33" * 20, "reservation_price_wei": 5},
    )
    limits = RegistrationLimits(max_images=4, max_image_bytes=64 * 1024, max_total_bytes=256 * 1024)
    images = root / "images"  # the only folder POST /holders/manifest may read
    images.mkdir()
    return create_app(run_dir, holders, limits, allowed_manifest_roots=[images]), holders


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

"""The load bench's driver against a real uvicorn subprocess: no errors, every proof verifies.

Speed is the bench's business (``bench/api_load.py``, figures in ``docs/api.md``); this test
only checks that the served proofs stay correct under concurrent open-loop load.
"""

from __future__ import annotations

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from bench.api_load import build_run_dir, drive, serve  # noqa: E402
from offchain.allocation.merkle import leaf_hash, verify_proof  # noqa: E402
from offchain.layout import RoundPaths  # noqa: E402
from offchain.utils import read_json  # noqa: E402


def test_proof_endpoint_under_load_answers_every_request_with_valid_proofs(tmp_path):
    addresses = build_run_dir(tmp_path, rounds=2, holders=60, seed=1)
    allocations = {r: read_json(RoundPaths(tmp_path, r).allocation) for r in (1, 2)}
    with serve(tmp_path) as server:
        result = drive(server.base_url, addresses, rate=50, duration_s=2, keep_bodies=True)

    assert result.errors == 0 and result.ok == result.requests == 100
    claims_seen = 0
    for address, body in result.bodies:
        assert body["address"] == address
        paid = {
            r: h
            for r, a in allocations.items()
            for h in a["holders"]
            if h["address"] == address and int(h["amount_wei"]) > 0
        }
        assert {c["round_id"] for c in body["claims"]} == set(paid)
        for claim in body["claims"]:
            holder = paid[claim["round_id"]]
            assert claim["merkle_root"] == allocations[claim["round_id"]]["merkle_root"]
            assert (claim["index"], int(claim["amount_wei"])) == (
                holder["index"],
                int(holder["amount_wei"]),
            )
            leaf = leaf_hash(claim["index"], claim["account"], int(claim["amount_wei"]))
            assert verify_proof(claim["merkle_root"], leaf, claim["proof"])
            claims_seen += 1
        assert int(body["total_wei"]) == sum(int(h["amount_wei"]) for h in paid.values())
    assert claims_seen > 0

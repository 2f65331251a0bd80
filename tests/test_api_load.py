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


# -- start-up parsing, the round warmer and the encoded-body cache (no timing asserts) --------


def _uncached_body(app, address: str) -> bytes:
    """What FastAPI's ``response_model`` path writes for the same model (the old handler)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from offchain.api.claims_cache import holder_claims_model
    from offchain.api.rounds_view import round_ids
    from offchain.api.schemas import HolderClaims

    run_dir = app.state.run_dir
    rounds = [
        (r, app.state.round_cache.get(RoundPaths(run_dir, r))) for r in round_ids(run_dir)
    ]
    reference = FastAPI()

    @reference.get("/x", response_model=HolderClaims)
    def x() -> HolderClaims:
        return holder_claims_model(address, rounds, None)

    return TestClient(reference).get("/x").content


def test_served_app_parses_every_round_before_the_first_request(tmp_path):
    from fastapi.testclient import TestClient

    from offchain.api.app import create_app

    build_run_dir(tmp_path, rounds=2, holders=20, seed=2)
    app = create_app(tmp_path)
    cache = app.state.round_cache
    with TestClient(app):  # runs the lifespan, as uvicorn does
        assert all(
            cache.is_current(RoundPaths(tmp_path, r), cache.key(RoundPaths(tmp_path, r)))
            for r in (1, 2)
        )


def test_round_warmer_parses_a_round_posted_while_serving(tmp_path):
    import time

    from offchain.api.rounds_view import RoundCache, RoundWarmer

    build_run_dir(tmp_path / "a", rounds=1, holders=10, seed=3)
    (tmp_path / "a").rename(tmp_path / "run")
    cache = RoundCache()
    parsed: list[int] = []
    warmer = RoundWarmer(cache, tmp_path / "run", interval_s=0.05, on_parsed=parsed.append)
    warmer.start()
    try:
        build_run_dir(tmp_path / "b", rounds=2, holders=10, seed=3)
        (tmp_path / "b" / "round_002").rename(tmp_path / "run" / "round_002")  # "posted"
        paths = RoundPaths(tmp_path / "run", 2)
        deadline = time.monotonic() + 10
        while not cache.is_current(paths, cache.key(paths)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.is_current(paths, cache.key(paths))
        assert sum(parsed) >= 2  # round 1 and round 2, each once
    finally:
        warmer.stop()


def test_cached_claim_bodies_equal_the_response_model_bytes_and_follow_new_claims(tmp_path):
    from fastapi.testclient import TestClient

    from offchain.api.app import create_app
    from offchain.utils import write_json

    addresses = build_run_dir(tmp_path, rounds=2, holders=30, seed=4)
    app = create_app(tmp_path)
    client = TestClient(app)
    for address in addresses[:10] + [addresses[3].lower(), "0x" + "cd" * 20]:
        first = client.get(f"/holders/{address}/claims")
        again = client.get(f"/holders/{address}/claims")  # from the cache when paid
        assert first.status_code == again.status_code == 200
        assert first.content == again.content == _uncached_body(app, first.json()["address"])
        assert first.headers["content-type"] == "application/json"

    paid = next(a for a in addresses if client.get(f"/holders/{a}/claims").json()["claims"])
    index = next(c["index"] for c in client.get(f"/holders/{paid}/claims").json()["claims"]
                 if c["round_id"] == 2)
    write_json(RoundPaths(tmp_path, 2).claims,
               {"round_id": 2, "claims": [{"index": index, "ok": True}]})
    claims = client.get(f"/holders/{paid}/claims").json()["claims"]
    assert [c["claimed"] for c in claims if c["round_id"] == 2] == [True]

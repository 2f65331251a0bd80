"""``GET /holders/{address}/overview`` and ``GET /holder``: one address's rounds with its
contribution, copyright loss, payment, claim flag and leaf, in one request; parsed once per
version of the round files; fast at 1,000 holders × 5 rounds."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from bench.api_load import build_run_dir
from offchain.api.app import create_app
from offchain.api.holder_view import HolderOverviews, RoundScores
from offchain.api.rounds_view import RoundCache
from offchain.layout import RoundPaths
from offchain.utils import read_json, write_json

HOLDERS = 6


def _scores(run_dir, round_id: int, n: int, offset: float = 0.0) -> None:
    """contributions.json and copyright.json of a round, one value per allocation row."""
    paths = RoundPaths(run_dir, round_id)
    normalized = [(i + 1 + offset) / 100 for i in range(n)]
    write_json(paths.contributions, {"round_id": round_id, "normalized": normalized})
    write_json(paths.copyright, {"round_id": round_id, "loss": [i / 1000 for i in range(n)]})


@pytest.fixture
def run(tmp_path):
    addresses = build_run_dir(tmp_path, rounds=2, holders=HOLDERS, seed=5)
    _scores(tmp_path, 1, HOLDERS)
    return tmp_path, addresses


@pytest.fixture
def client(run):
    with TestClient(create_app(run[0])) as c:
        yield c


def test_overview_lists_each_round_with_scores_payment_claim_and_leaf(run, client):
    run_dir, addresses = run
    for position, address in enumerate(addresses):
        answer = client.get(f"/holders/{address}/overview")
        assert answer.status_code == 200
        body = answer.json()
        assert body["address"] == address and body["claimed_source"] == "node"
        [campaign] = body["campaigns"]
        assert campaign["campaign_id"] is None  # no deployment.json in this run folder
        proofs = {(c["round_id"], c["index"]): c for c in
                  client.get(f"/holders/{address}/claims").json()["claims"]}
        assert [r["round_id"] for r in campaign["rounds"]] == [1, 2]
        for row in campaign["rounds"]:
            holder = read_json(RoundPaths(run_dir, row["round_id"]).allocation)["holders"][position]
            assert row["amount_wei"] == holder["amount_wei"] and row["index"] == holder["index"]
            if row["round_id"] == 1:
                assert row["contribution"] == pytest.approx((position + 1) / 100)
                assert row["copyright_loss"] == pytest.approx(position / 1000)
            else:  # round 2 has no score files
                assert row["contribution"] is None and row["copyright_loss"] is None
            if int(holder["amount_wei"]) == 0:
                assert row["leaf"] is None and row["claimed"] is None
                continue
            claim = proofs[(row["round_id"], row["index"])]
            assert row["leaf"] == {"round_id": row["round_id"], "index": row["index"],
                                   "amount_wei": holder["amount_wei"], "proof": claim["proof"]}
            assert row["claimed"] == claim["claimed"]
        paid = [r for r in campaign["rounds"] if r["leaf"]]
        assert int(campaign["total_wei"]) == sum(int(r["amount_wei"]) for r in paid)
        unclaimed = [r for r in paid if not r["claimed"]]
        assert campaign["unclaimed"] == len(unclaimed)
        assert int(campaign["unclaimed_wei"]) == sum(int(r["amount_wei"]) for r in unclaimed)
        assert int(campaign["claimed_wei"]) + int(campaign["unclaimed_wei"]) == int(
            campaign["total_wei"])


def test_overview_checks_the_address_like_claims(run, client):
    address = run[1][0]
    wrong_case = address[:2] + address[2:].swapcase()
    if wrong_case[2:] not in (wrong_case[2:].lower(), wrong_case[2:].upper()):
        assert client.get(f"/holders/{wrong_case}/overview").status_code == 422
    assert client.get("/holders/0x1234/overview").status_code == 422
    assert client.get(f"/holders/{address.lower()}/overview").json()["address"] == address
    stranger = "0x" + "ab" * 20
    assert client.get(f"/holders/{stranger}/overview").json()["campaigns"] == []


def test_overview_names_the_deployment_campaign(run, client):
    run_dir, addresses = run
    pool = "0x" + "cd" * 20
    write_json(run_dir / "deployment.json", {"chain_id": 31337, "pool": pool, "campaign_id": 4,
                                             "token": "0x" + "ef" * 20})
    [campaign] = client.get(f"/holders/{addresses[0]}/overview").json()["campaigns"]
    assert (campaign["campaign_id"], campaign["chain_id"], campaign["pool"]) == (4, 31337, pool)


def test_round_files_are_parsed_once_per_version(run, monkeypatch):
    run_dir, addresses = run
    calls = []
    load = RoundScores.load.__func__

    def counting(cls, paths, key):
        calls.append(paths.round_id)
        return load(cls, paths, key)

    monkeypatch.setattr(RoundScores, "load", classmethod(counting))
    store = HolderOverviews(RoundCache())
    deployment = run_dir / "deployment.json"
    first = store.body(store.generation(run_dir, deployment, None), addresses[1])
    for address in addresses:
        store.body(store.generation(run_dir, deployment, None), address)
    generation = store.generation(run_dir, deployment, None)
    assert store.is_parsed(generation) and store.cached(generation, addresses[1]) == first
    assert calls == [1, 2]
    time.sleep(0.01)
    _scores(run_dir, 1, HOLDERS, offset=50)  # a rewritten round: a new version, parsed again
    generation = store.generation(run_dir, deployment, None)
    assert store.cached(generation, addresses[1]) is None
    rows = store.model(generation, addresses[1]).campaigns[0].rounds
    assert rows[0].contribution == pytest.approx(52 / 100)
    assert calls == [1, 2, 1]


def test_holder_page_renders_an_address_without_javascript(run, client):
    address = run[1][2]
    page = client.get("/holder", params={"address": address.lower()})
    assert page.status_code == 200
    assert "Connect wallet" in page.text and "/static/dist/holder.js" in page.text
    assert page.text.count("<tr><td data-label=\"Round\">") == 2 and address in page.text
    bad = client.get("/holder", params={"address": "0xnothex"})
    assert bad.status_code == 200 and 'role="alert"' in bad.text
    assert "Connect your wallet (or look up an address)" in client.get("/holder").text


@pytest.mark.parametrize("rounds", [5])
def test_overview_is_fast_at_1000_holders_and_5_rounds(tmp_path, rounds):
    addresses = build_run_dir(tmp_path, rounds=rounds, holders=1000, seed=3)
    for round_id in range(1, rounds + 1):
        _scores(tmp_path, round_id, 1000)
    app = create_app(tmp_path)
    with TestClient(app) as client:  # the lifespan warms the round cache
        client.get(f"/holders/{addresses[0]}/overview")  # parses the score files
        timings = []
        for address in addresses[:200]:
            started = time.perf_counter()
            answer = client.get(f"/holders/{address}/overview")
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200 and len(answer.json()["campaigns"][0]["rounds"]) == 5
    timings.sort()
    # In-process client round trip (request parsing and the ASGI stack included).
    assert timings[len(timings) // 2] < 0.010, timings[len(timings) // 2]


def test_scores_are_parsed_before_the_first_request_and_when_a_round_is_posted(run):
    run_dir, addresses = run
    app = create_app(run_dir)
    with TestClient(app):  # the lifespan ran: no request yet
        store = app.state.holder_overviews
        generation = store.generation(run_dir, run_dir / "deployment.json", None)
        assert store.is_parsed(generation)
        build_run_dir(run_dir / "more", rounds=3, holders=HOLDERS, seed=5)  # a round 3 appears
        (run_dir / "more" / "round_003").rename(run_dir / "round_003")
        deadline = time.monotonic() + 10
        while not store.is_parsed(store.generation(run_dir, run_dir / "deployment.json", None)):
            assert time.monotonic() < deadline, "round 3 was not parsed by the warmer"
            time.sleep(0.05)

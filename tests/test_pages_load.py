"""The pages benchmark and the pages' stored bodies.

``bench/pages_load.py --quick`` runs against a real uvicorn and reports every route it measures
with no error (timing targets live in the bench's output and ``docs/api.md``, not here). The
bodies of ``/``, ``/rounds``, ``/rounds/{id}`` and the campaigns' endpoints are built before the
first request, are the bytes FastAPI's ``response_model`` path writes, and follow every change of
what they are built from (a claim, the state database, the deployment file, a new round).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from bench.pages_load import CAMPAIGN_ID, ROUTES, build_pages_run_dir, main
from offchain.api.app import create_app
from offchain.api.rounds_view import app_bodies
from offchain.api.routers.campaigns import campaign_plan, campaigns_plan
from offchain.api.routers.pages import rounds_page_plan, warm_pages
from offchain.api.routers.rounds import round_detail_plan, rounds_plan
from offchain.api.schemas import (
    CampaignDetail,
    CampaignRound,
    CampaignSummary,
    RoundDetail,
    RoundSummary,
)
from offchain.layout import RoundPaths
from offchain.utils import read_json, write_json

pytest.importorskip("uvicorn")

JSON_ROUTES = {
    "/rounds": list[RoundSummary],
    "/rounds/1": RoundDetail,
    "/rounds/2": RoundDetail,
    "/campaigns": list[CampaignSummary],
    f"/campaigns/{CAMPAIGN_ID}": CampaignDetail,
    f"/campaigns/{CAMPAIGN_ID}/rounds": list[CampaignRound],
}


def test_the_quick_bench_reports_every_route_without_errors(tmp_path, capsys):
    out = tmp_path / "pages.json"
    code = main(["--quick", "--json", str(out)])
    figures = json.loads(out.read_text())
    assert [r["route"] for r in figures["routes"]] == list(ROUTES)
    served = [r for r in figures["routes"] if r["served"]]
    assert {r["route"] for r in served} >= {"/", "/rounds", "/rounds/{round_id}", "/campaigns",
                                           "/campaigns/{campaign_id}",
                                           "/holders/{address}/claims"}
    for r in served:
        assert r["errors"] == 0, r
        assert r["cold_status"] == 200 and r["load"]["ok"] == r["load"]["requests"] > 0
        assert r["server"]["count"] == r["load"]["ok"]
    assert code == 0
    assert "/rounds/{round_id}" in capsys.readouterr().out


def _reference_bytes(model_type, content: bytes) -> bytes:
    """What FastAPI's ``response_model`` path writes for the model ``content`` decodes to."""
    value = TypeAdapter(model_type).validate_json(content)
    reference = FastAPI()

    @reference.get("/x", response_model=model_type)
    def x():  # noqa: ANN202
        return value

    return TestClient(reference).get("/x").content


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pages")
    build_pages_run_dir(folder, rounds=2, holders=40, seed=3)
    return folder


def test_bodies_are_built_before_the_first_request_and_equal_the_response_model_bytes(run_dir):
    app = create_app(run_dir)
    with TestClient(app) as client:  # the lifespan warms them
        state = app.state
        bodies = app_bodies(state)
        plans = [rounds_page_plan(app), rounds_plan(state), campaigns_plan(state),
                 round_detail_plan(state, 1), round_detail_plan(state, 2),
                 campaign_plan(state, CAMPAIGN_ID), campaign_plan(state, CAMPAIGN_ID, True)]
        assert all(bodies.cached(name, version) is not None for name, version, _ in plans)
        assert warm_pages(app) == 0  # nothing changed: nothing built again
        for route, model_type in JSON_ROUTES.items():
            response = client.get(route)
            assert response.status_code == 200, route
            assert response.headers["content-type"] == "application/json"
            assert response.content == _reference_bytes(model_type, response.content), route
        page = client.get("/")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert read_json(RoundPaths(run_dir, 2).allocation)["merkle_root"] in page.text
        import gzip

        plain = client.get("/rounds/1", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and len(plain.content) >= 1000
        packed = client.get("/rounds/1", headers={"accept-encoding": "br, gzip;q=0.5"})
        assert packed.headers["vary"] == plain.headers["vary"] == "Accept-Encoding"
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == plain.content  # httpx decodes; the stored encoding is gzip
        assert gzip.decompress(app_bodies(state).gzipped(*round_detail_plan(state, 1)[:2])) == (
            plain.content)
        refused = client.get("/rounds/1", headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        assert client.get("/rounds/7").status_code == 404
        assert client.get("/campaigns/9").status_code == 404


def test_bodies_follow_claims_the_database_the_deployment_and_new_rounds(tmp_path):
    build_pages_run_dir(tmp_path, rounds=2, holders=10, seed=4)
    client = TestClient(create_app(tmp_path))  # no lifespan: built on the first request
    detail = client.get("/rounds/2").json()
    paid = next(h for h in detail["holders"] if h["claimed"] is False)
    write_json(RoundPaths(tmp_path, 2).claims,
               {"round_id": 2, "claims": [{"index": paid["index"], "ok": True}]})
    detail = client.get("/rounds/2").json()
    assert next(h for h in detail["holders"] if h["index"] == paid["index"])["claimed"] is True
    assert detail["status"] == "claimed"

    from offchain.state import RoundStore, default_url, make_engine

    assert detail["round_status"] == "challengeable"
    store = RoundStore(make_engine(default_url(tmp_path)))
    store.set_round_status(store.ensure_round(1, 2), "finalized")
    assert client.get("/rounds/2").json()["round_status"] == "finalized"
    assert client.get(f"/campaigns/{CAMPAIGN_ID}").json()["round_states"][1]["status"] == (
        "finalized")

    deployment = tmp_path / "deployment.json"
    write_json(deployment, {**read_json(deployment), "threshold": 3})
    assert client.get("/rounds/1").json()["threshold"] == 3
    assert client.get(f"/campaigns/{CAMPAIGN_ID}").json()["threshold"] == 3

    other = tmp_path / "other"
    build_pages_run_dir(other, rounds=3, holders=10, seed=4)
    (other / "round_003").rename(tmp_path / "round_003")  # "posted"
    assert [r["round_id"] for r in client.get("/rounds").json()] == [1, 2, 3]
    assert "round_id" in client.get("/rounds/3").json()
    assert len(client.get(f"/campaigns/{CAMPAIGN_ID}/rounds").json()) == 3


def test_a_round_posted_while_serving_is_built_before_anyone_asks(tmp_path):
    import time

    build_pages_run_dir(tmp_path / "run", rounds=1, holders=8, seed=5)
    build_pages_run_dir(tmp_path / "next", rounds=2, holders=8, seed=5)
    app = create_app(tmp_path / "run")
    with TestClient(app):
        (tmp_path / "next" / "round_002").rename(tmp_path / "run" / "round_002")  # "posted"
        state, deadline = app.state, time.monotonic() + 10
        plans = lambda: [round_detail_plan(state, 2), rounds_plan(state), rounds_page_plan(app)]  # noqa: E731
        while time.monotonic() < deadline and not all(
            app_bodies(state).cached(name, version) for name, version, _ in plans()
        ):
            time.sleep(0.05)
        assert all(app_bodies(state).cached(name, version) for name, version, _ in plans())


def test_a_page_warmer_added_by_another_page_runs_before_the_first_request(tmp_path):
    from offchain.api.routers import pages

    build_pages_run_dir(tmp_path, rounds=1, holders=4, seed=6)
    apps = []

    def warm(app) -> int:  # noqa: ANN001
        apps.append(app)
        return 0

    assert pages.add_page_warmer(warm) is warm
    try:
        app = create_app(tmp_path)
        with TestClient(app):
            assert apps and apps[0] is app
    finally:
        pages._PAGE_WARMERS.remove(warm)

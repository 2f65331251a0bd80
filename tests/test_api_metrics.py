"""``GET /metrics``: Prometheus text with request counts and latencies by route template (not raw
path) and status, and gauges of rounds served and registered holders; one registry per app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bench.api_load import build_run_dir
from offchain.api.app import create_app
from offchain.utils import write_json


def samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_template_and_status_with_gauges(tmp_path):
    addresses = build_run_dir(tmp_path / "run", rounds=2, holders=5, seed=1)
    holders = tmp_path / "holders"
    (holders / "alice").mkdir(parents=True)
    write_json(holders / "alice" / "holder.json", {"address": addresses[0]})
    client = TestClient(create_app(tmp_path / "run", holders))
    for address in addresses[:3]:
        assert client.get(f"/holders/{address}/claims").status_code == 200
    assert client.get("/holders/nope/claims").status_code == 422
    assert client.get("/no/such/path").status_code == 404

    found = samples(client)
    route = "/holders/{address}/claims"
    key = ("method", "GET"), ("route", route), ("status", "200")
    assert found[("api_requests_total", key)] == 3
    assert found[("api_request_duration_seconds_count", key)] == 3
    assert found[("api_requests_total", (("method", "GET"), ("route", route), ("status", "422")))]
    unmatched = ("method", "GET"), ("route", "<unmatched>"), ("status", "404")
    assert found[("api_requests_total", unmatched)] == 1
    assert not any("0x" in dict(labels).get("route", "") for _, labels in found)  # no raw paths
    assert found[("api_rounds_served", ())] == 2
    assert found[("api_registered_holders", ())] == 1


def test_each_app_has_its_own_registry(tmp_path):
    first = TestClient(create_app(tmp_path))
    second = TestClient(create_app(tmp_path))
    first.get("/rounds")
    key = ("api_requests_total", (("method", "GET"), ("route", "/rounds"), ("status", "200")))
    assert samples(first)[key] == 1
    assert key not in samples(second)
    assert samples(second)[("api_registered_holders", ())] == 0  # registration disabled


def test_stray_round_folder_is_skipped_instead_of_a_server_error(tmp_path):
    build_run_dir(tmp_path, rounds=1, holders=3, seed=2)
    (tmp_path / "round_001.bak").mkdir()
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    assert client.get("/health").json() == {"status": "ok", "rounds": 1}
    assert [r["round_id"] for r in client.get("/rounds").json()] == [1]

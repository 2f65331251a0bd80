"""The web pages: ``GET /`` renders the run's rounds from the same data as ``GET /rounds``
(escaped), ``/static`` serves the stylesheet locally, and neither is in the OpenAPI schema."""

from __future__ import annotations

import html

from fastapi.testclient import TestClient

from bench.api_load import build_run_dir
from offchain.api.app import create_app
from offchain.api.routers.pages import format_tokens
from offchain.layout import RoundPaths
from offchain.utils import read_json, write_json


def test_index_lists_the_rounds_of_the_run_with_status_budget_and_root(tmp_path):
    build_run_dir(tmp_path, rounds=2, holders=5, seed=1)
    client = TestClient(create_app(tmp_path))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for summary in client.get("/rounds").json():
        assert summary["merkle_root"] in page.text
        tokens = format_tokens(int(summary["budget_wei"]))
        assert f'title="{summary["budget_wei"]} wei">{tokens}</td>' in page.text
        assert f"status-{summary['status']}" in page.text
    assert "claimed" in page.text and "allocated" in page.text  # round 1 has claims.json
    assert 'href="/static/style.css"' in page.text


def test_index_escapes_what_it_shows(tmp_path):
    build_run_dir(tmp_path, rounds=1, holders=3, seed=2)
    allocation = RoundPaths(tmp_path, 1).allocation
    write_json(allocation, {**read_json(allocation), "merkle_root": "<script>alert(1)</script>"})
    page = TestClient(create_app(tmp_path)).get("/").text
    assert "<script>" not in page
    assert html.escape("<script>alert(1)</script>") in page


def test_index_of_an_empty_run_says_there_are_no_rounds(tmp_path):
    page = TestClient(create_app(tmp_path)).get("/")
    assert page.status_code == 200
    assert "No rounds yet" in page.text


def test_static_stylesheet_is_served_locally_with_its_content_type(tmp_path):
    client = TestClient(create_app(tmp_path))
    css = client.get("/static/style.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "table.rounds" in css.text
    assert client.get("/static/missing.css").status_code == 404


def test_pages_are_not_in_the_openapi_schema(tmp_path):
    paths = TestClient(create_app(tmp_path)).get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)
    assert "/rounds" in paths


def test_format_tokens_is_exact():
    assert format_tokens(0) == "0"
    assert format_tokens(2**256 - 1).replace(",", "").replace(".", "") == str(2**256 - 1)
    assert format_tokens(123_456_789 * 10**18 + 5 * 10**16) == "123,456,789.05"

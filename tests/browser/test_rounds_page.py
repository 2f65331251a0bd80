"""The rounds page (``GET /``, server-rendered by offchain/api/routers/pages.py) in a real
Chromium: it shows each round as ``GET /rounds`` says, fits a 375 px screen (not yet: a strict
xfail), is usable with the keyboard, and stays readable when the node goes down after it loaded
(it fetches nothing client-side, so there is no later request to fail)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from offchain.api.routers.pages import format_tokens
from tests.browser.support import PHONE, PlaywrightError, serve_api

FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])"


def _rows(page) -> list[list[str]]:  # noqa: ANN001 (a Playwright Page)
    return page.eval_on_selector_all(
        "table.rounds tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
    )


def test_rounds_page_shows_each_round_as_the_api_says(api, new_page, doc_screenshot):
    summaries = httpx.get(api.base_url + "/rounds", timeout=5).json()
    assert [s["round_id"] for s in summaries] == [1, 2, 3]
    page = new_page()
    response = page.goto(api.base_url + "/")
    assert response is not None and response.status == 200
    assert page.title().startswith("Rounds")
    assert _rows(page) == [
        [str(s["round_id"]), s["status"], format_tokens(int(s["budget_wei"])), s["merkle_root"]]
        for s in summaries
    ]
    titles = page.eval_on_selector_all("td.amount", "cells => cells.map(c => c.title)")
    assert titles == [f"{s['budget_wei']} wei" for s in summaries]  # exact wei on hover
    # The local stylesheet applied (served by /static, no CDN): the table's borders collapse.
    collapse = page.eval_on_selector("table.rounds", "t => getComputedStyle(t).borderCollapse")
    assert collapse == "collapse"
    doc_screenshot(page, "page_rounds")


def test_rounds_page_fits_a_375px_screen(api, new_page, doc_screenshot):
    page = new_page(PHONE)
    page.goto(api.base_url + "/")
    widths = page.evaluate(
        "() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " table: document.querySelector('table.rounds').getBoundingClientRect().right})"
    )
    assert widths["doc"] <= PHONE["width"], widths
    assert widths["body"] <= PHONE["width"], widths
    assert widths["table"] <= PHONE["width"], widths
    # Every round's full Merkle root is still there to read (wrapped, not cut off).
    roots = page.eval_on_selector_all("td.hash", "cells => cells.map(c => c.innerText.trim())")
    assert all(len(root) == 66 and root.startswith("0x") for root in roots)
    doc_screenshot(page, "page_rounds_375px")


def test_tab_reaches_every_link_in_document_order(api, new_page):
    page = new_page()
    page.goto(api.base_url + "/")
    expected = page.eval_on_selector_all(
        FOCUSABLE, "els => els.map(e => e.outerHTML)")
    assert expected, "the page has no link or control to reach"
    reached = []
    for _ in expected:
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.outerHTML"))
    assert reached == expected
    # The first Tab from a fresh load reaches the skip link; the next one "Rounds", and Enter
    # follows it.
    page.reload()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Rounds"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == api.base_url + "/"


def test_api_link_opens_a_page_that_works_offline(api, new_page):
    page = new_page(strict=False)
    external: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda r: external.append(r.url) if urlsplit(r.url).hostname not in (
        "127.0.0.1", None) and not r.url.startswith("data:") else None)
    page.goto(api.base_url + "/")
    with page.expect_navigation():
        page.click("nav >> text=API")
    page.wait_for_load_state("networkidle")
    assert external == [] and errors == []
    assert page.inner_text("body").strip(), "the API page is blank"


def test_loaded_page_stays_readable_when_the_node_goes_down(tmp_path, new_page):
    # Its own server over an empty run (so the page shows its "no rounds" message), stopped
    # mid-test. The page is server-rendered and fetches nothing after load: it keeps its content.
    with serve_api(tmp_path) as node:
        page = new_page()
        page.goto(node.base_url + "/")
        assert "No rounds yet" in page.inner_text("main")
        node.stop()
        page.keyboard.press("Tab")
        assert "No rounds yet" in page.inner_text("main")
        # Loading it anew with the node down can only show Chromium's own error page: there is
        # no page of ours to say so until the pages fetch their data client-side.
        with pytest.raises(PlaywrightError, match="ERR_CONNECTION_REFUSED"):
            new_page().goto(node.base_url + "/")

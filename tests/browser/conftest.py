"""Real-browser fixtures: a real uvicorn serving the node's API, Debian's Chromium driven by
Playwright for Python, and a screenshot of every test.

* Chromium is the system's (``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH),
  launched through ``executable_path``; Playwright's own browser download is never used (it cannot
  work on these machines). Without Chromium, or without the ``playwright`` package, every browser
  test is skipped with a reason naming what is missing (``scripts/test.sh`` also prints it).
* The API is served by :func:`tests.browser.support.serve_api` (the load benchmark's uvicorn
  over ``create_app(run_dir)``) in a child process on 127.0.0.1 at a free port, stopped with
  SIGINT (SIGKILL after 5 s).
* Every page is offline: a request to any host but 127.0.0.1 is aborted and recorded, and the
  ``new_page`` fixture fails the test at teardown if there was one, or if the page
  raised an uncaught JavaScript error.
* Screenshots (full page, PNG) go to ``$BROWSER_OUTPUT`` if set, else to
  ``<pytest basetemp>/browser/``, one per test named after the test's node id. With
  ``UPDATE_DOC_SCREENSHOTS=1`` the screenshots a test names through :func:`doc_screenshot` are
  also written to ``docs/img/`` (the README's pictures).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.api_load import build_run_dir
from tests.browser.support import (
    CHROMIUM_ARGS,
    DESKTOP,
    HOST,
    ROOT,
    ApiServer,
    find_chromium,
    missing_reason,
    serve_api,
)

DOC_IMG = ROOT / "docs" / "img"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run folder: 3 rounds of 6 holders (bench.api_load.build_run_dir, seed 17;
    round 1 has a claims.json)."""
    path = tmp_path_factory.mktemp("browser-run")
    build_run_dir(path, rounds=3, holders=6, seed=17)
    return path


@pytest.fixture(scope="session")
def api(run_dir: Path) -> Iterator[ApiServer]:
    """One real uvicorn over :func:`run_dir` for the whole session."""
    with serve_api(run_dir) as server:
        yield server


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless system Chromium (a ``playwright.sync_api.Browser``); skips when it is missing.

    Module-scoped: Playwright's sync API runs an event loop in this thread while it is started,
    so a session-wide instance would break every later test that calls ``asyncio.run``."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=find_chromium(), headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def browser_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of this run's screenshots: ``$BROWSER_OUTPUT``, else ``<basetemp>/browser``."""
    path = Path(os.environ.get("BROWSER_OUTPUT") or tmp_path_factory.getbasetemp() / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class PageWatch:
    """What a page did that a test must not allow: requests to other hosts than the test
    servers' (``allowed_host``, any port), uncaught JavaScript errors; ``strict=False``: the
    test checks both itself."""

    allowed_host: str
    strict: bool = True
    external_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def route(self, route, request) -> None:  # noqa: ANN001 (Playwright's Route, Request)
        """Abort (and record) any request not to ``allowed_host`` nor a data/blob URL."""
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob") or url.hostname == self.allowed_host:
            route.continue_()
        else:
            self.external_requests.append(request.url)
            route.abort()


def _screenshot_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")[:120] + ".png"


@pytest.fixture
def new_page(browser, browser_output: Path, request: pytest.FixtureRequest):
    """Factory ``new_page(viewport=DESKTOP, *, strict=True) -> Page``: a fresh context and page,
    offline but for the test servers on 127.0.0.1 (other requests are aborted). At teardown
    every page's full-page screenshot is saved under ``browser_output`` (``<test>.png``, then
    ``<test>-2.png``...), and the test fails if a page asked another host for anything or
    raised an uncaught JavaScript error (unless made with ``strict=False``, for a test that
    checks these itself)."""
    opened: list[tuple[object, object, PageWatch]] = []

    def make(viewport: dict[str, int] = DESKTOP, *, strict: bool = True):
        context = browser.new_context(viewport=viewport, reduced_motion="reduce")
        watch = PageWatch(HOST, strict)
        context.route("**/*", watch.route)
        page = context.new_page()
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        page.set_default_timeout(5_000)
        opened.append((context, page, watch))
        return page

    yield make
    problems = []
    base = _screenshot_name(request.node.nodeid)
    for number, (context, page, watch) in enumerate(opened, start=1):
        name = base if number == 1 else base.replace(".png", f"-{number}.png")
        with contextlib.suppress(Exception):  # a crashed page has no picture; the test says why
            page.screenshot(path=str(browser_output / name), full_page=True)
        context.close()
        if watch.strict:
            problems += [f"request to another host: {u}" for u in watch.external_requests]
            problems += [f"uncaught page error: {e}" for e in watch.page_errors]
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def doc_screenshot() -> Callable[[object, str], None]:
    """``doc_screenshot(page, name)``: with ``UPDATE_DOC_SCREENSHOTS=1``, save the page's
    viewport screenshot as ``docs/img/<name>.png`` (the README's pictures); else do nothing."""

    def save(page, name: str) -> None:  # noqa: ANN001 (a Playwright Page)
        if os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1":
            DOC_IMG.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOC_IMG / f"{name}.png"), full_page=True)

    return save


# -- a tiny real campaign on anvil (tests/browser/campaign.py) -------------------------------


@pytest.fixture(scope="session")
def web_bundle() -> Path:
    """The web app's scripts, rebuilt from ``offchain/api/web`` (``node scripts/build_web.mjs``,
    about a second) so the tests drive the current sources."""
    import subprocess

    subprocess.run(["node", str(ROOT / "scripts" / "build_web.mjs")], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return ROOT / "offchain" / "api" / "static" / "dist"


@pytest.fixture(scope="session")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    """A :class:`tests.browser.campaign.TinyCampaign` on its own anvil: 2 tiny rounds posted
    and final, nothing claimed (about 25 s, once per session). Tests that change the chain
    wrap their changes in ``chain_snapshot(campaign.node.rpc_url)``."""
    from offchain.chain.anvil import AnvilNode
    from tests.browser.campaign import start_campaign

    with AnvilNode() as node:
        yield start_campaign(node, tmp_path_factory.mktemp("campaign") / "run")


@pytest.fixture(scope="session")
def campaign_api(campaign, web_bundle: Path) -> Iterator[ApiServer]:
    """The real API over the campaign's run folder: claim flags from the chain, registrations
    stored in ``campaign.holders_dir``."""
    options = {"holders_dir": str(campaign.holders_dir), "chain_rpc_url": campaign.node.rpc_url}
    with serve_api(campaign.run_dir, app_options=options) as server:
        yield server

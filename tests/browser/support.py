"""Helpers of the real-browser tests (tests/browser): where the system Chromium is, why the
tests cannot run, and a real uvicorn serving the node's API in a child process.

``python -m tests.browser.support`` prints one line: the Chromium the browser tests will drive,
or why they will be skipped (``scripts/test.sh`` prints it before pytest).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from bench.api_load import Server

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the tests skip (missing_reason); this name must still import
    PlaywrightError = Exception  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
]
"""Flags of every launch (toolchain notes); ``--no-sandbox`` is added when running as root,
where Chromium's sandbox refuses to start."""

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}
"""Viewports in CSS pixels: a desktop window and the 375 px phone width the pages must fit."""


def find_chromium() -> str | None:
    """Path of the system Chromium: ``$CHROMIUM`` if set (must be executable), else the first of
    ``chromium``, ``chromium-browser`` on PATH; None when there is none."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (one line naming the missing piece), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return ("browser tests skipped: the `playwright` package is not installed"
                " (bash scripts/setup.sh)")
    if find_chromium() is None:
        where = f"CHROMIUM={os.environ['CHROMIUM']} is not executable" if os.environ.get(
            "CHROMIUM") else "no `chromium` or `chromium-browser` executable on PATH"
        return f"browser tests skipped: {where} (Debian: apt-get install chromium)"
    return None


ApiServer = Server
"""A running API server: ``base_url`` (``http://127.0.0.1:<port>``), ``process``, ``stop()``."""


@contextlib.contextmanager
def serve_api(
    run_dir: Path, startup_timeout_s: float = 30.0, app_options: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    """Serve the node's API over ``run_dir`` with uvicorn in a child process on 127.0.0.1 until
    the block exits (:func:`bench.api_load.serve`, the load benchmark's server: ``create_app``
    of ``run_dir`` and ``app_options``, e.g. ``holders_dir`` and ``chain_rpc_url``; no access
    log); ``stop()`` stops it early.

    Raises:
        RuntimeError: the server exited, or ``/health`` did not answer 200 within
            ``startup_timeout_s`` seconds.
    """
    from bench.api_load import serve

    with serve(Path(run_dir), startup_timeout_s=startup_timeout_s,
               app_options=app_options) as server:
        yield server


def describe() -> str:
    """One line for the test log: the Chromium the browser tests drive, or why they skip."""
    reason = missing_reason()
    if reason:
        return reason
    return f"browser tests: Chromium at {find_chromium()} (Playwright, executable_path)"


if __name__ == "__main__":
    print(describe())

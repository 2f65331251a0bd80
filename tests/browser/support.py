"""Helpers of the real-browser tests (tests/browser): where the system Chromium is, why the
tests cannot run, and a real uvicorn serving the node's API in a child process.

``python -m tests.browser.support`` prints one line: the Chromium the browser tests will drive,
or why they will be skipped (``scripts/test.sh`` prints it before pytest).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

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



_SERVE = (
    "import sys, uvicorn\n"
    "from pathlib import Path\n"
    "from offchain.api.app import create_app\n"
    "uvicorn.run(create_app(Path(sys.argv[1])), host=sys.argv[2], port=int(sys.argv[3]),\n"
    "            log_level='warning', access_log=False)\n"
)


@dataclass
class ApiServer:
    """A running uvicorn over ``run_dir``; ``base_url`` is ``http://127.0.0.1:<port>``."""

    base_url: str
    run_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the server (SIGINT, SIGKILL after 5 s); a no-op once it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_api(run_dir: Path, startup_timeout_s: float = 30.0) -> Iterator[ApiServer]:
    """Serve ``create_app(run_dir)`` with uvicorn in a child process until the block exits.

    Raises:
        RuntimeError: the server exited, or ``/health`` did not answer 200 within
            ``startup_timeout_s`` seconds.
    """
    port = _free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(run_dir), HOST, str(port)], cwd=ROOT, env=env)
    server = ApiServer(f"http://{HOST}:{port}", Path(run_dir), process)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode} before serving")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not healthy after {startup_timeout_s:.0f} s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def describe() -> str:
    """One line for the test log: the Chromium the browser tests drive, or why they skip."""
    reason = missing_reason()
    if reason:
        return reason
    return f"browser tests: Chromium at {find_chromium()} (Playwright, executable_path)"


if __name__ == "__main__":
    print(describe())

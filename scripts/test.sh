#!/usr/bin/env bash
# README command 2: set everything up, check the code (ruff, import layers), then run the
# default (fast) test suite. Extra arguments go to pytest (e.g. `-m slow` for the long ML tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # Playwright drives the system Chromium only
echo "== ruff check"
.venv/bin/ruff check offchain tests bench scripts
echo "== lint-imports (import layers and forbidden imports, pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-cache
echo "== browser tests (tests/browser: Debian's chromium driven by Playwright)"
.venv/bin/python -m tests.browser.support
echo "== pytest"
exec .venv/bin/python -m pytest "$@"

"""The npm lock is complete, so a fresh clone's set-up (`npm ci`) never rewrites it (issue 13,
item 16): before, the lock held only this platform's anvil binary, npm added the others' entries
on install, the tree turned dirty and the set-up stamp (a hash of the lock) re-ran the whole
set-up on every later README command."""

from __future__ import annotations

import json
from pathlib import Path

from offchain.config import PROJECT_ROOT


def _lock() -> dict:
    return json.loads((PROJECT_ROOT / "package-lock.json").read_text())


def test_the_lock_records_every_optional_dependency_of_every_locked_package() -> None:
    packages = _lock()["packages"]
    missing = [
        f"{path} → {name}"
        for path, entry in packages.items()
        if path
        for name in entry.get("optionalDependencies", {})
        if f"node_modules/{name}" not in packages
    ]
    assert missing == [], "npm would add these entries on install: " + ", ".join(missing)


def test_anvil_binaries_of_every_platform_are_locked() -> None:
    packages = _lock()["packages"]
    anvil = packages["node_modules/@foundry-rs/anvil"]
    assert len(anvil["optionalDependencies"]) >= 5  # darwin ×2, linux ×2, win32
    for name, version in anvil["optionalDependencies"].items():
        assert packages[f"node_modules/{name}"]["version"] == version


def test_set_up_installs_from_the_lock_with_npm_ci() -> None:
    script = Path(PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith("npm ")]
    assert commands and all(line.startswith("npm ci") for line in commands), commands

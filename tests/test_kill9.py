"""``kill -9`` of the oracle node at every stage boundary and mid-stage, then a restart: the round
completes once, nothing is submitted twice, no artifact is half-written.

Everything is real: an anvil chain, the pool deployed and funded through
:mod:`offchain.oracle.operations`, ``python -m offchain run-round`` as a subprocess (the node
SIGKILLs itself at the point named by ``CCOMP_FAULT_KILL``, see :mod:`offchain.faults`, or the
test kills it from outside while a stage is ``started`` in the state database), and
``python -m offchain serve`` (uvicorn) reading the same run folder throughout, which must never
answer a 5xx.

One campaign serves the module: round 1 takes the fault-point sweep, round 2 the kills from
outside. The full sweep (every ``stage:<key>:begun``/``:ran``, the submit and write points) is
``slow``; the default run kills at a representative subset of the same points.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from offchain.chain import AnvilNode, address_of
from offchain.chain.pool import PoolClient
from offchain.config import Settings
from offchain.oracle import operations
from offchain.oracle.deployment import Deployment
from offchain.oracle.keys import dev_keys, sponsor_key
from offchain.rounds.pipeline import STAGE_KEYS
from tests.oracle_procs import ROOT, child_env, get, served, tiny_campaign

FAULT_ENV = "CCOMP_FAULT_KILL"
"""The setting ``fault_kill`` that arms a fault point (:mod:`offchain.faults`)."""

RUN_TIMEOUT_S = 180

WRITE_POINTS = {
    "prepare": ["write:manifest.json"],
    "allocate": ["write:allocation.json"],
    "sign": ["write:signature.json"],
    "submit": ["submit:recorded", "submit:broadcast", "write:submission.json"],
    "finalize": ["write:finality.json"],
    "claim": ["write:claims.json"],
}
"""Points inside a stage, killed between its ``begun`` and its ``ran``."""


def sweep_points(stages: tuple[str, ...] = STAGE_KEYS) -> list[str]:
    """Fault points in the order a round passes them (each fires once the earlier ones did)."""
    points: list[str] = []
    for key in stages:
        points += [f"stage:{key}:begun", *WRITE_POINTS.get(key, []), f"stage:{key}:ran"]
    return points


FULL_SWEEP = sweep_points()
QUICK_SWEEP = [
    "stage:prepare:begun",
    "write:manifest.json",
    "stage:train:ran",
    "submit:recorded",
    "submit:broadcast",
    "write:submission.json",
    "write:finality.json",
    "write:claims.json",
]
"""The default run's points, one of each kind: an ML stage killed before its work
(``begun``), inside an artifact write and after its work (``ran``); the posting transaction
recorded but not broadcast, broadcast but not awaited, mined but not written down; the
finality and claims records interrupted. The other ``begun``/``ran`` and write points repeat
these kinds at later stages and run with ``-m slow``."""


@dataclass
class Node:
    """The campaign under test: its chain, settings and a running API server."""

    tmp: Path
    anvil: AnvilNode
    env_file: Path
    settings: Settings
    deployment: Deployment
    campaign_id: int
    api: str
    fired: dict[int, list[str]] = field(default_factory=dict)
    """Round → fault points that killed the node."""
    killed_stages: dict[int, set[str]] = field(default_factory=dict)
    """Round → stages a kill interrupted (their ``attempts`` must exceed one)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.run_dir)

    @property
    def db(self) -> Path:
        return self.run_dir / "state.db"

    def pool(self) -> PoolClient:
        return operations._connect(self.settings, self.deployment)[1]

    def env(self, point: str | None = None) -> dict[str, str]:
        return child_env(**({FAULT_ENV: point} if point is not None else {}))

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "offchain",
            "run-round",
            "--config",
            str(self.env_file),
            "--dev",
            "--json",
            *extra,
        ]

    def run_round(self, *extra: str, point: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*extra),
            cwd=ROOT,
            env=self.env(point),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )


class ApiWatcher:
    """Polls the API in a thread while the node is killed and restarted; records every 5xx."""

    PATHS = ("/health", "/rounds", "/rounds/1", "/rounds/2")

    def __init__(self, base: str) -> None:
        self.base, self.errors, self.requests = base, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def check(self) -> None:
        for path in self.PATHS:
            status, body = get(self.base + path)
            self.requests += 1
            if status >= 500:
                self.errors.append((path, status, body))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except (OSError, ValueError) as exc:  # connection refused, bad JSON: both failures
                self.errors.append(("?", 0, repr(exc)))
            self._stop.wait(0.3)

    def __enter__(self) -> ApiWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("kill9")
    with AnvilNode(accounts=14) as anvil:
        env_file, settings, deployment, campaign_id = tiny_campaign(tmp, anvil.rpc_url)
        with served(Path(settings.run_dir), tmp / "serve.log") as api:
            yield Node(tmp, anvil, env_file, settings, deployment, campaign_id, api)


# -- helpers: the database, read-only ----------------------------------------------------------


def _query(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def _round_pk(node: Node, round_id: int) -> int | None:
    rows = _query(node.db, "SELECT id FROM rounds WHERE round_id = ?", round_id)
    return rows[0][0] if rows else None


def _stage_rows(node: Node, round_id: int) -> dict[str, tuple[str, int]]:
    """Stage → (status, attempts)."""
    pk = _round_pk(node, round_id)
    rows = _query(node.db, "SELECT stage, status, attempts FROM stage_runs WHERE round_pk = ?", pk)
    return {stage: (str(status).lower(), attempts) for stage, status, attempts in rows}


def _submissions(node: Node, round_id: int) -> list[tuple[str, str]]:
    """(tx hash, status) of the round's ``postRound`` transactions."""
    pk = _round_pk(node, round_id)
    rows = _query(node.db, "SELECT tx_hash, status FROM submissions WHERE round_pk = ?", pk)
    return [(tx, str(status).lower()) for tx, status in rows]


def _finish(node: Node, *extra: str) -> dict:
    """A plain run (no fault point) that must complete the round."""
    done = node.run_round(*extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)  # with --json, stdout holds the JSON document only
    assert result["status"] == "finalized", result
    assert set(result["stages"].values()) == {"done"}, result["stages"]
    return result


def _ensure_round_done(node: Node, round_id: int) -> None:
    pk = _round_pk(node, round_id) if node.db.exists() else None
    if pk is None or _stage_rows(node, round_id).get("claim", ("", 0))[0] != "done":
        _finish(node, "--round", str(round_id))


def _assert_round_exactly_once(node: Node, round_id: int) -> None:
    """Posted once, claimed to the wei, every stage done, every artifact whole."""
    pool = node.pool()
    client = pool.client
    assert pool.next_round_id(node.campaign_id) == round_id + 1
    posted = [
        e for e in pool.events("RoundPosted", campaignId=node.campaign_id) if e.round_id == round_id
    ]
    assert len(posted) == 1, posted

    paths_dir = node.run_dir / f"round_{round_id:03d}"
    submission = json.loads((paths_dir / "submission.json").read_text())
    assert (
        posted[0].merkle_root.lower()
        == json.loads((paths_dir / "allocation.json").read_text())["merkle_root"].lower()
    )

    # every holder received exactly what the allocations of the rounds so far gave it
    asset = pool.asset(node.campaign_id)
    owed: dict[str, int] = {}
    for r in range(1, round_id + 1):
        allocation = json.loads((node.run_dir / f"round_{r:03d}" / "allocation.json").read_text())
        for holder in allocation["holders"]:
            owed[holder["address"]] = owed.get(holder["address"], 0) + int(holder["amount_wei"])
    assert sum(owed.values()) > 0
    for address, amount in owed.items():
        assert pool.asset_balance(asset, address) == amount, address
    claims = json.loads((paths_dir / "claims.json").read_text())["claims"]
    assert all(c["ok"] for c in claims), claims

    rows = _stage_rows(node, round_id)
    expected = [s for s in STAGE_KEYS if s != "quality" or "quality" in rows]
    assert set(rows) == set(expected), rows
    assert all(status == "done" for status, _ in rows.values()), rows
    for stage in node.killed_stages.get(round_id, set()):
        assert rows[stage][1] > 1, (stage, rows[stage])
    _assert_artifacts_whole(node.run_dir)

    # the database: exactly one live postRound transaction, the one mined; any given up
    # (``failed``) was never mined (a restart must not mark the posting transaction failed)
    posting = posted[0].tx_hash.lower()
    subs = _submissions(node, round_id)
    states = {tx: client.transaction_state(tx) for tx, _ in subs}
    live = [tx for tx, status in subs if status != "failed"]
    assert len(live) == 1, (subs, states, posting)
    assert states[live[0]] == "succeeded" and live[0].lower() == posting, (subs, states)
    for tx, status in subs:
        if status == "failed":
            assert states[tx] == "unknown", (tx, subs, states)
    assert submission.get("already_posted") or submission["tx_hash"] == live[0]


def _assert_artifacts_whole(run_dir: Path) -> None:
    """No temporary file is left and every artifact parses."""
    leftovers = [p for p in run_dir.rglob("*.tmp") if not p.name.startswith(".")]
    assert leftovers == []
    hidden = [p.name for p in run_dir.rglob(".*.tmp")]
    print(f"hidden temporary files left by kills (never read): {len(hidden)}")
    parsed = 0
    for path in run_dir.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                for key in archive.files:
                    archive[key]
        else:
            continue
        parsed += 1
    assert parsed > 10


def _stage_of(point: str) -> str | None:
    """The stage a fault point interrupts."""
    if point.startswith("stage:"):
        return point.split(":")[1]
    for stage, points in WRITE_POINTS.items():
        if point in points:
            return stage
    return None


def _sweep(node: Node, points: list[str]) -> None:
    fired, passed = [], []
    with ApiWatcher(node.api) as watcher:
        for point in points:
            started = time.monotonic()
            proc = node.run_round("--round", "1", point=point)
            took = time.monotonic() - started
            if proc.returncode == -signal.SIGKILL:
                fired.append(point)
                stage = _stage_of(point)
                if stage is not None:
                    node.killed_stages.setdefault(1, set()).add(stage)
            else:  # the point lies in a stage done by now: the run went through
                assert proc.returncode == 0, (point, proc.stdout[-3000:], proc.stderr[-3000:])
                passed.append(point)
            print(f"{point:28s} {'killed' if point in fired else 'passed'} {took:5.1f} s")
            watcher.check()
        result = _finish(node, "--round", "1")
        watcher.check()
    node.fired[1] = fired
    print(
        f"fired {len(fired)}/{len(points)}; passed: {passed}; "
        f"API requests {watcher.requests}, 5xx: {watcher.errors}"
    )
    assert watcher.errors == []
    assert passed == []  # the points are in pipeline order: each one is reached and fires
    assert result["tx_hash"] is not None or result["stages"]["submit"] == "done"

    status, detail = get(node.api + "/rounds/1")
    assert status == 200, detail
    submission = json.loads((node.run_dir / "round_001" / "submission.json").read_text())
    assert detail["tx_hash"] == submission.get("tx_hash")
    assert detail["status"] == "claimed"
    _assert_round_exactly_once(node, 1)


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_at_every_point_of_round_1(node: Node) -> None:
    """Every ``stage:<key>:begun``/``:ran``, ``submit:recorded``/``:broadcast`` and the artifact
    writes."""
    _sweep(node, FULL_SWEEP)


def test_kill9_at_boundaries_of_round_1(node: Node) -> None:
    """The representative subset (skipped if the full sweep already ran round 1)."""
    if node.fired.get(1):
        pytest.skip("round 1 was swept in full")
    _sweep(node, QUICK_SWEEP)


def test_rerun_of_a_posted_round_is_a_no_op(node: Node) -> None:
    _ensure_round_done(node, 1)
    pool = node.pool()
    sponsor = address_of(sponsor_key(node.settings, dev_keys(True)))
    nonce = pool.client.w3.eth.get_transaction_count(sponsor)
    block = pool.client.w3.eth.block_number
    result = _finish(node, "--round", "1")
    assert pool.client.w3.eth.get_transaction_count(sponsor) == nonce
    assert pool.client.w3.eth.block_number == block
    rows = _stage_rows(node, 1)
    assert all(status == "done" for status, _ in rows.values()), rows
    assert result["round_id"] == 1
    _assert_round_exactly_once(node, 1)


def _kill_when_started(node: Node, round_id: int, stage: str) -> bool:
    """Start the node, SIGKILL it from outside as soon as ``stage`` is ``started``; whether the
    kill landed mid-stage."""
    proc = subprocess.Popen(
        node.command("--round", str(round_id)),
        cwd=ROOT,
        env=node.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                row = _stage_rows(node, round_id).get(stage) if _round_pk(node, round_id) else None
            except sqlite3.OperationalError:  # the schema is being created, or a write lock
                row = None
            if row is not None and row[0] == "started":
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                return True
            time.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_kill9_from_outside_mid_stage_in_round_2(node: Node) -> None:
    _ensure_round_done(node, 1)
    landed = []
    with ApiWatcher(node.api) as watcher:
        for stage in ("train", "attribute"):
            if _kill_when_started(node, 2, stage):
                landed.append(stage)
                node.killed_stages.setdefault(2, set()).add(stage)
            watcher.check()
        _finish(node, "--round", "2")
        watcher.check()
    print(f"killed mid-stage in round 2: {landed}")
    assert watcher.errors == []
    assert landed, "no kill landed while a stage was started"
    status, detail = get(node.api + "/rounds/2")
    assert status == 200, detail
    submission = json.loads((node.run_dir / "round_002" / "submission.json").read_text())
    assert detail["tx_hash"] == submission.get("tx_hash")
    _assert_round_exactly_once(node, 2)

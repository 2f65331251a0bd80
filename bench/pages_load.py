"""Load the web pages and the data endpoints they call, on a real uvicorn server.

Usage::

    .venv/bin/python bench/pages_load.py [--rounds 5 --holders 1000] [--rate 200]
                                         [--duration 10] [--route /rounds/{round_id} ...]
                                         [--pin] [--json PATH] [--quick]

It synthesises a run folder of ``--rounds`` rounds of ``--holders`` holders in a temporary
directory (:func:`build_pages_run_dir`: the proofs bench's ``allocation.json``, ``tree.json`` and
round 1's ``claims.json``, plus what the pages read: ``manifest.json``, ``contributions.json``,
``copyright.json``, ``decision.json``, ``quality.json``, ``signing_request.json``,
``signature.json``, ``submission.json``, ``finality.json``, ``generations.png``, a
``deployment.json`` of campaign 1 and a ``state.db`` with every round's stages), serves it with
the real uvicorn (:func:`bench.api_load.serve`, one worker, no access log) and, for every route
of :data:`ROUTES` the server has (a route another change has not added yet is reported as not
served):

* **cold**: its first request after start-up (the server's lifespan has run: the time a person
  waits for the first page after the node started or a round was posted), measured by the
  client and by the server itself;
* **load**: open loop at ``--rate`` req/s for ``--duration`` s over the route's targets (every
  round, every holder address...), with :func:`bench.api_load.drive_paths` (latency from each
  request's due time, no coordinated omission): p50, p90, p99, max (ms) and errors;
* **server time** per request during the load, from the server's own ``/metrics`` histogram
  (request received → last byte sent): mean (ms, exact: histogram sum / count) and the bucket
  bounds its p50 and p99 fall under.

Prints a table and (``--json``) writes the figures; the machine's load (cores used by other
processes during each route's run) is part of both. ``--quick`` (100 holders × 2 rounds,
50 req/s for 0.5 s per route) is for the test. Exits 1 when a served route answers an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api_load import (  # noqa: E402
    CLIENT_CPU,
    SERVER_CPU,
    build_run_dir,
    busy_jiffies,
    cpu_cores,
    drive_paths,
    process_jiffies,
    rss_kib,
    serve,
)
from offchain.layout import RoundPaths  # noqa: E402
from offchain.utils import read_json, write_json  # noqa: E402

CHAIN_ID = 31337
POOL = "0x" + "e7" * 20
TOKEN = "0x" + "5f" * 20
CAMPAIGN_ID = 1
SIGNERS = ["0x" + f"{i:02x}" * 20 for i in (0x14, 0x97, 0x99)]
IMAGES_PER_HOLDER = 4

ROUTES: tuple[str, ...] = (
    "/",
    "/rounds",
    "/rounds/{round_id}",
    "/campaigns",
    "/campaigns/{campaign_id}",
    "/campaigns/{campaign_id}/rounds",
    "/web/config",
    "/holders/{address}/claims",
    "/holder",
    "/holders/{address}/overview",
    "/sponsor",
    "/campaigns/{campaign_id}/report",
    "/explorer/rounds/{round_id}",
)
"""Route templates measured, as the server's metrics label them: the pages (``/``, ``/holder``,
``/sponsor``, ``/explorer/rounds/{round_id}``) and the data endpoints their scripts call."""


# -- run folder ------------------------------------------------------------------------------


def _hex32(*parts: object) -> str:
    return "0x" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _png(path: Path, seed: int) -> None:
    """A small RGB grid image standing in for a round's ``generations.png``."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _round_pages(paths: RoundPaths, rng: random.Random, final: bool) -> None:
    """The artifacts of one round that the pages read (shapes as the pipeline writes them)."""
    allocation = read_json(paths.allocation)
    r = paths.round_id
    provenance = {k: _hex32(k, r) for k in ("checkpoint_hash", "dataset_root", "attribution_hash")}
    write_json(paths.allocation, {**allocation, "provenance": provenance})
    holders = allocation["holders"]
    n = len(holders)
    write_json(paths.manifest, {
        "round_id": r, "n_holders": n, "n_train": n * IMAGES_PER_HOLDER,
        "dataset_root": provenance["dataset_root"][2:], "previous_checkpoint": None,
        "holders": [{
            "index": h["index"], "name": h["name"], "address": h["address"],
            "reservation_price_wei": "15000000000000000000", "n_images": IMAGES_PER_HOLDER,
            "images_root": _hex32("images", h["index"])[2:],
            "image_hashes": [_hex32("image", h["index"], k)[2:] for k in range(IMAGES_PER_HOLDER)],
            "participating": h["participating"],
            "licence": "CC-BY-4.0" if h["index"] % 3 == 0 else None,
            "attribution": h["name"] if h["index"] % 3 == 0 else None,
        } for h in holders],
    })  # fmt: skip
    raw = [rng.uniform(-0.05, 0.5) for _ in holders]
    total = sum(max(0.0, x) for x in raw) or 1.0
    write_json(paths.contributions, {
        "round_id": r, "output": "dtrak", "proj_dim": 512, "num_timesteps": 4, "ensemble": 1,
        "scores_shape": [32, n * IMAGES_PER_HOLDER], "raw": raw,
        "normalized": [max(0.0, x) / total for x in raw],
    })  # fmt: skip
    loss = [rng.uniform(5e-5, 2e-4) for _ in holders]
    write_json(paths.copyright, {
        "round_id": r, "loss": loss, "expected_copies": [x * 64 for x in loss],
        "weighted": [x * 25 for x in loss], "semantic": [rng.random() for _ in holders],
        "perceptual": [rng.random() for _ in holders], "tiled_l2": [rng.random() for _ in holders],
        "n_replications": [0] * n, "n_copies": [0] * n, "n_generations": 32, "calibration": None,
    })  # fmt: skip
    write_json(paths.decision, {
        "round_id": r, "policy": "linear/weighted", "budget_wei": allocation["budget_wei"],
        "policy_budget_wei": allocation["budget_wei"],
        "weights": [rng.random() for _ in holders], "caps": None,
    })  # fmt: skip
    write_json(paths.quality, {"round_id": r, "metric": "fid_reference_classifier",
                               "fid": rng.uniform(50, 250), "n_samples": 256})
    request = {
        "chain_id": CHAIN_ID, "verifying_contract": POOL,
        "allocation": {"campaign_id": str(CAMPAIGN_ID), "round_id": str(r),
                       "merkle_root": allocation["merkle_root"],
                       "total_wei": allocation["total_wei"], **provenance,
                       "signer_set_version": "1", "deadline": "1796412782"},
        "digest": _hex32("digest", r),
    }  # fmt: skip
    write_json(paths.signing_request, request)
    write_json(paths.signature, {**request, "signers": SIGNERS[:2],
                                 "signatures": ["0x" + "ab" * 65, "0x" + "cd" * 65]})
    write_json(paths.submission, {"campaign_id": CAMPAIGN_ID, "round_id": r,
                                  "tx_hash": _hex32("post", r), "gas_used": 165124,
                                  "finalizes_at": 1796330162 + r})
    if final:
        write_json(paths.finality, {"campaign_id": CAMPAIGN_ID, "round_id": r,
                                    "status": "finalized", "tx_hash": _hex32("final", r)})
    _png(paths.generations_png, r)


def _state_db(run_dir: Path, rounds: int) -> None:
    """``run_dir/state.db`` at the newest revision: campaign 1 and its rounds with every stage
    done, a confirmed submission, the last round challengeable and the others finalized."""
    from offchain.rounds.pipeline import STAGE_KEYS
    from offchain.state import RoundStore, default_url, make_engine, upgrade

    url = default_url(run_dir)
    upgrade(url)
    store = RoundStore(make_engine(url))
    campaign = store.ensure_campaign(CHAIN_ID, POOL, CAMPAIGN_ID, str(run_dir))
    for r in range(1, rounds + 1):
        pk = store.ensure_round(campaign, r)
        for stage in STAGE_KEYS:
            if store.begin_stage(pk, stage):
                store.finish_stage(pk, stage)
        tx = _hex32("post", r)
        store.record_submission(pk, tx, r)
        store.confirm_submission(tx)
        store.set_round_status(pk, "finalized" if r < rounds else "challengeable")


def build_pages_run_dir(run_dir: Path, rounds: int = 5, holders: int = 1000,
                        seed: int = 0) -> list[str]:
    """A run folder the pages can show: :func:`bench.api_load.build_run_dir`'s rounds (same
    holders, amounts and trees) plus each round's page artifacts, ``deployment.json`` and
    ``state.db``; every round is posted, all but the last finalized. Returns the addresses.

    Raises:
        ValueError: fewer than one round or holder.
    """
    addresses = build_run_dir(run_dir, rounds, holders, seed)
    rng = random.Random(seed + 1)
    for r in range(1, rounds + 1):
        _round_pages(RoundPaths(run_dir, r), rng, final=r < rounds)
    budget = sum(int(read_json(RoundPaths(run_dir, r).allocation)["budget_wei"])
                 for r in range(1, rounds + 1))
    write_json(run_dir / "deployment.json", {
        "rpc_url": "http://127.0.0.1:9", "chain_id": CHAIN_ID, "token": TOKEN, "pool": POOL,
        "campaign_id": CAMPAIGN_ID, "signers": SIGNERS, "threshold": 2, "guardian": SIGNERS[0],
        "sponsor": SIGNERS[0], "challenge_window_s": 3600, "posting_deadline": 1798918382,
        "claim_deadline": 1799526782, "total_budget_wei": str(budget),
        "round_cap_wei": str(budget), "holder_cap_wei": str(budget),
    })  # fmt: skip
    _state_db(run_dir, rounds)
    return addresses


# -- measuring -------------------------------------------------------------------------------


def route_targets(route: str, rounds: int, addresses: list[str]) -> list[str]:
    """The paths a route is loaded with: every round, every holder, or the one path."""
    if "{round_id}" in route:
        return [route.format(round_id=r) for r in range(1, rounds + 1)]
    if "{address}" in route:
        return [route.format(address=a) for a in addresses]
    return [route.format(campaign_id=CAMPAIGN_ID)]


def histogram(client: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    """The server's request-duration histogram per ``(route, status)``: cumulative ``buckets``
    ``[(le s, count)]``, ``sum`` (s) and ``count`` (``client``: on the server's base URL)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics", timeout=10.0).text
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "api_request_duration_seconds":
            continue
        for s in family.samples:
            key = (s.labels.get("route", ""), s.labels.get("status", ""))
            h = out.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0.0})
            if s.name.endswith("_bucket"):
                h["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                h["sum"] = s.value
            elif s.name.endswith("_count"):
                h["count"] = s.value
    for h in out.values():
        h["buckets"].sort()
    return out


def server_delta(before: dict, after: dict, route: str) -> dict[str, float]:
    """Server time of ``route``'s 200 answers between two :func:`histogram` snapshots: count,
    exact mean (ms), and the bucket bounds (ms) p50 and p99 fall under; empty without any."""
    a = after.get((route, "200"))
    if a is None:
        return {}
    b = before.get((route, "200"), {"buckets": [(le, 0.0) for le, _ in a["buckets"]],
                                    "sum": 0.0, "count": 0.0})
    count = a["count"] - b["count"]
    if count <= 0:
        return {}
    cums = [(le, ca - cb) for (le, ca), (_, cb) in zip(a["buckets"], b["buckets"], strict=True)]

    def bound(q: float) -> float:
        return 1000 * next(le for le, cum in cums if cum >= q * count)

    return {"count": count, "mean_ms": 1000 * (a["sum"] - b["sum"]) / count,
            "p50_le_ms": bound(0.5), "p99_le_ms": bound(0.99)}


@dataclass
class RouteFigures:
    """One route's figures (ms); ``served`` False when the server has no such route."""

    route: str
    served: bool
    targets: int = 0
    cold_status: int = 0
    cold_client_ms: float = 0.0
    cold_server_ms: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        if not self.served:
            return 0
        return int(self.cold_status != 200) + int(self.load.get("errors", 0))


def measure_route(base_url: str, route: str, targets: list[str], server_pid: int,
                  rate: float, duration_s: float, seed: int) -> RouteFigures:
    """Cold first request, then the open-loop load, of one route (see the module docstring).

    The cold request goes over a connection already open (the ``/metrics`` scrape's), so its
    client time is the server's answer and the loopback, not a TCP handshake.
    """
    with httpx.Client(base_url=base_url) as client:
        before = histogram(client)
        start = time.perf_counter()
        response = client.get(targets[0], timeout=60.0)
        cold_ms = 1000 * (time.perf_counter() - start)
        after = histogram(client)
    if not any(key[0] == route for key in after):  # the app has no such route (yet)
        return RouteFigures(route, served=False)
    cold = after.get((route, str(response.status_code)), {"sum": 0.0})
    cold_before = before.get((route, str(response.status_code)), {"sum": 0.0})
    figures = RouteFigures(route, True, len(targets), response.status_code, cold_ms,
                           1000 * (cold["sum"] - cold_before["sum"]))
    ticks = (busy_jiffies(), process_jiffies(server_pid), process_jiffies(os.getpid()),
             time.monotonic())
    result = drive_paths(base_url, targets, rate, duration_s, seed=seed)
    figures.cpu_cores = cpu_cores(ticks, server_pid)
    figures.load = result.figures()
    with httpx.Client(base_url=base_url) as client:
        figures.server = server_delta(after, histogram(client), route)
    return figures


def report(rows: list[RouteFigures], setup: str) -> str:
    """The figures as a table (ms)."""
    lines = [
        f"Pages and their data endpoints, uvicorn (1 worker, no access log) on loopback; {setup}",
        f"{'route':34} {'cold ms':>8} {'(server)':>8} {'rate/s':>7} {'err':>4} {'p50':>7} "
        f"{'p90':>7} {'p99':>7} {'max':>7} {'srv mean':>8} {'srv p99<=':>9} {'others':>6}",
    ]
    for f in rows:
        if not f.served:
            lines.append(f"{f.route:34} not served by this node (route absent)")
            continue
        ld, srv = f.load, f.server
        lines.append(
            f"{f.route:34} {f.cold_client_ms:8.1f} {f.cold_server_ms:8.1f} "
            f"{ld['achieved_rps']:7.1f} {f.errors:4d} {ld['p50_ms']:7.2f} {ld['p90_ms']:7.2f} "
            f"{ld['p99_ms']:7.2f} {ld['max_ms']:7.1f} {srv.get('mean_ms', 0.0):8.2f} "
            f"{srv.get('p99_le_ms', 0.0):9g} {f.cpu_cores.get('others', 0.0):6.2f}"
        )
    lines.append("cold: first request after start-up (client / server ms); p50-max: open-loop "
                 "latency from due time (ms); srv: server's own time per request under load "
                 "(/metrics; p99 is a bucket bound); others: cores used by other processes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="synthetic rounds, default 5")
    parser.add_argument("--holders", type=int, default=1000, help="holders per round, default 1000")
    parser.add_argument("--rate", type=float, default=200.0, help="target req/s, default 200")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of load per route, default 10")
    parser.add_argument("--route", action="append", default=None, metavar="TEMPLATE",
                        help="measure only this route template (repeatable), e.g. '/'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run folder and requests")
    parser.add_argument("--pin", action="store_true",
                        help=f"pin the server to CPU {SERVER_CPU}, this process to CPU {CLIENT_CPU}")
    parser.add_argument("--quick", action="store_true",
                        help="100 holders x 2 rounds, 50 req/s for 0.5 s per route (a smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.holders, args.rate, args.duration = 2, 100, 50.0, 0.5
    routes = args.route or list(ROUTES)

    with tempfile.TemporaryDirectory(prefix="pages_load_") as tmp:
        run_dir = Path(tmp)
        start = time.perf_counter()
        addresses = build_pages_run_dir(run_dir, args.rounds, args.holders, args.seed)
        setup = (f"synthetic, {args.rounds} rounds x {args.holders} holders (built in "
                 f"{time.perf_counter() - start:.1f} s); {args.rate:g} req/s for "
                 f"{args.duration:g} s per route")
        if args.pin:
            os.sched_setaffinity(0, {CLIENT_CPU})
            setup += f"; server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"
        with serve(run_dir, cpu=SERVER_CPU if args.pin else None) as server:
            setup += f"; start-up {1000 * server.startup_s:.0f} ms"
            rows = [
                measure_route(server.base_url, route,
                              route_targets(route, args.rounds, addresses),
                              server.process.pid, args.rate, args.duration, args.seed)
                for route in routes
            ]
            rss = rss_kib(server.process.pid)
    setup += f"; server RSS peak {rss.get('VmHWM', 0) / 1024:.0f} MiB"
    print(report(rows, setup))
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"setup": setup, "routes": [{**asdict(f), "errors": f.errors} for f in rows]},
            indent=2) + "\n")
    return 1 if any(f.errors for f in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

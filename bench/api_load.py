"""Load the proof endpoint ``GET /holders/{address}/claims`` of a real uvicorn server.

Usage::

    .venv/bin/python bench/api_load.py [--rate 200] [--duration 20] [--rounds 3 --holders 1000]
                                       [--run-dir runs/demo] [--json PATH]

Without ``--run-dir`` it synthesises a run folder in a temporary directory: ``--rounds`` rounds of
``--holders`` holders, each round an ``allocation.json`` and a ``tree.json`` written through the
project's own code (:class:`offchain.allocation.PayoutTree` and the artifact layout of
:class:`offchain.layout.RoundPaths`, the files the endpoint reads), about one holder in ten
paid nothing, and round 1 marked claimed by a ``claims.json`` (no ML, no chain). It then starts
``python -m uvicorn`` on 127.0.0.1 at a free port (one worker, no access log), waits for
``/health``, and drives the endpoint **open-loop**: request ``i`` is due at ``t0 + i / rate``
whatever happened to the earlier ones, at most ``--max-in-flight`` requests are outstanding on a
pool of keep-alive connections, and a request's latency is measured from its due time, so a
server that falls behind is charged for the queueing it causes (no coordinated omission).
Requests still outstanding ``--grace`` seconds after the last due time are cancelled and counted
as errors, so a run is bounded whatever the server does.

Prints the target and achieved rate, requests, errors (non-200 or exceptions), latency p50, p90,
p99 and max (ms) and the server's resident memory (current and peak); ``--json PATH`` writes the
same figures. One request is sent before the run (its time is printed): the first request after
start-up parses every round, a cost paid once per version of a round's files. The server is
always stopped. Exits 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_utils import keccak, to_checksum_address

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from offchain.allocation import PayoutTree  # noqa: E402
from offchain.layout import RoundPaths  # noqa: E402
from offchain.utils import write_json  # noqa: E402

HOST = "127.0.0.1"
MAX_DURATION_S = 120.0
RUN_DIR_ENV = "API_LOAD_RUN_DIR"
GC_ENV = "API_LOAD_SERVER_GC"
GC_LOG_ENV = "API_LOAD_GC_LOG"
APP_OPTIONS_ENV = "API_LOAD_APP_OPTIONS"
"""JSON object of extra ``create_app`` keyword arguments (``holders_dir``, ``chain_rpc_url``,
``deployment_file``: strings) for :func:`app_from_env`."""
SERVER_CPU, CLIENT_CPU = 0, 1


# -- run folder ------------------------------------------------------------------------------


def holder_address(seed: int, index: int) -> str:
    """A deterministic checksummed address for holder ``index`` of synthetic run ``seed``."""
    return to_checksum_address(keccak(f"api-load/{seed}/{index}".encode())[-20:])


def build_run_dir(run_dir: Path, rounds: int = 3, holders: int = 1000, seed: int = 0) -> list[str]:
    """Write ``rounds`` rounds of ``holders`` holders under ``run_dir``; return the addresses.

    Each round gets the ``allocation.json`` and ``tree.json`` that the allocate stage writes
    (same keys), with random amounts (about 10 % of the holders paid 0 wei, so not in the tree);
    round 1 also gets a ``claims.json`` in which every even index claimed successfully.
    """
    if rounds < 1 or holders < 1:
        raise ValueError("need at least one round and one holder")
    rng = random.Random(seed)
    addresses = [holder_address(seed, i) for i in range(holders)]
    for round_id in range(1, rounds + 1):
        paths = RoundPaths(run_dir, round_id)
        amounts = [0 if rng.random() < 0.1 else rng.randrange(1, 10**21) for _ in addresses]
        if not any(amounts):
            amounts[0] = 1
        entries = [(i, a, w) for i, (a, w) in enumerate(zip(addresses, amounts, strict=True)) if w]
        tree = PayoutTree.build(entries)
        write_json(paths.tree, tree.to_json())
        write_json(
            paths.allocation,
            {
                "round_id": round_id,
                "budget_wei": str(sum(amounts)),  # wei as decimal strings, as the node writes
                "holder_cap_wei": None,
                "total_wei": str(sum(amounts)),
                "merkle_root": tree.root,
                "provenance": {},
                "holders": [
                    {
                        "index": i,
                        "name": f"holder_{i}",
                        "address": address,
                        "participating": amount > 0,
                        "amount_wei": str(amount),
                    }
                    for i, (address, amount) in enumerate(zip(addresses, amounts, strict=True))
                ],
            },
        )
        if round_id == 1:
            claims = [
                {"index": i, "address": a, "amount_wei": str(w), "ok": i % 2 == 0}
                for i, a, w in entries
            ]
            write_json(paths.claims, {"round_id": round_id, "claims": claims})
    return addresses


# -- server ----------------------------------------------------------------------------------


def app_from_env():  # noqa: ANN201 (uvicorn --factory target; FastAPI import kept lazy)
    """The API over ``$API_LOAD_RUN_DIR`` (``uvicorn --factory bench.api_load:app_from_env``)."""
    import gc

    from offchain.api.app import create_app

    options = json.loads(os.environ.get(APP_OPTIONS_ENV) or "{}")
    for name in ("holders_dir", "deployment_file"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    app = create_app(Path(os.environ[RUN_DIR_ENV]), **options)
    if os.environ.get(GC_ENV) == "off":  # an experiment: no collector at all in the server
        gc.disable()
    if os.environ.get(GC_LOG_ENV):
        _log_gc_pauses(Path(os.environ[GC_LOG_ENV]))
    return app


def _log_gc_pauses(path: Path) -> None:
    """Time every collection of this process; at exit write them to ``path`` as JSON, a list
    of ``[generation, end (time.monotonic, s), pause (ms)]`` (see :func:`gc_summary`)."""
    import atexit
    import gc

    pauses: list[tuple[int, float, float]] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.monotonic(),
                           1000 * (time.perf_counter() - started[0])))

    gc.callbacks.append(callback)
    atexit.register(lambda: path.write_text(json.dumps(pauses)))


def gc_summary(path: Path, since: float) -> dict[str, dict[str, float]]:
    """Per generation, the server's collections that ended after ``since`` (``time.monotonic``
    s, the same clock in every process): how many, total and longest pause (ms)."""
    pauses = [p for p in json.loads(path.read_text()) if p[1] >= since]
    return {
        str(g): {
            "collections": sum(1 for p in pauses if p[0] == g),
            "total_ms": round(sum(p[2] for p in pauses if p[0] == g), 2),
            "max_ms": round(max((p[2] for p in pauses if p[0] == g), default=0.0), 2),
        }
        for g in (0, 1, 2)
    }


def busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine so far, in clock ticks (``/proc/stat``; 0 elsewhere)."""
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields[:8]]
        return sum(values) - values[3] - values[4]  # minus idle and iowait
    return 0


def process_jiffies(pid: int) -> int:
    """User + system CPU time of process ``pid`` so far, in clock ticks (0 when unreadable)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid`` in KiB (Linux; empty elsewhere)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class Server:
    """A started server: its URL, process and seconds from launch to its first healthy answer."""

    base_url: str
    process: subprocess.Popen[bytes]
    startup_s: float = 0.0

    def stop(self) -> None:
        """Stop the server (SIGINT, SIGKILL after 5 s); a no-op once it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def serve(
    run_dir: Path,
    startup_timeout_s: float = 30.0,
    cpu: int | None = None,
    gc_mode: str = "default",
    app_options: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run ``python -m uvicorn`` over ``run_dir`` on loopback; stop it on exit, whatever happens.

    Args:
        run_dir: The run folder served.
        startup_timeout_s: Most seconds to wait for ``/health``.
        cpu: Pin the server to this CPU (Linux ``sched_setaffinity``); None: any CPU.
        gc_mode: ``"default"``, or ``"off"`` to disable the server's garbage collector.
        app_options: extra ``create_app`` arguments (:data:`APP_OPTIONS_ENV`), e.g.
            ``{"holders_dir": "...", "chain_rpc_url": "http://127.0.0.1:8545"}``.

    Raises:
        RuntimeError: the server exits or is not healthy within ``startup_timeout_s``.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.api_load:app_from_env",
        "--host", HOST, "--port", str(port), "--workers", "1", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, RUN_DIR_ENV: str(Path(run_dir).resolve())}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[GC_ENV] = gc_mode
    env[APP_OPTIONS_ENV] = json.dumps(app_options or {})
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    launched = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, preexec_fn=pin)  # noqa: PLW1509
    server = Server(f"http://{HOST}:{port}", process)
    try:
        deadline = launched + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode} before serving")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not healthy after {startup_timeout_s:.0f} s")
            time.sleep(0.02)
        server.startup_s = time.monotonic() - launched
        yield server
    finally:
        server.stop()


def server_times(base_url: str, route: str = "/holders/{address}/claims") -> dict[str, float]:
    """The server's own time for ``route`` (status 200), from its ``/metrics`` histogram
    (request received → last byte sent, inside the app: no client, no socket queueing).

    Returns ``count``, ``share_le_10ms`` (fraction), and ``p50_le_ms`` / ``p99_le_ms``: the
    histogram bucket bound (ms) the percentile falls under (an upper bound, buckets 1, 2.5, 5,
    10, 25, 50 … ms); empty when the route has no sample.
    """
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(base_url + "/metrics", timeout=10.0).text
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "api_request_duration_seconds_bucket"
                    and labels.get("route") == route and labels.get("status") == "200"):
                buckets.append((float(labels["le"]), sample.value))
    if not buckets or buckets[-1][1] == 0:
        return {}
    buckets.sort()
    count = buckets[-1][1]

    def bound(q: float) -> float:
        return 1000 * next(le for le, cum in buckets if cum >= q * count)

    le_10ms = next(cum for le, cum in buckets if le >= 0.01)
    return {"count": count, "share_le_10ms": le_10ms / count,
            "p50_le_ms": bound(0.5), "p99_le_ms": bound(0.99)}


# -- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """Figures of one open-loop run (latencies in ms, from each request's due time)."""

    target_rps: float
    duration_s: float
    requests: int
    ok: int
    errors: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)
    server_rss_kib: dict[str, int] = field(default_factory=dict)
    server_ms: dict[str, float] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    server_gc: dict[str, Any] = field(default_factory=dict)
    bodies: list[tuple[str, Any]] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "bodies"}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] of ascending ``sorted_values`` (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


async def _drive(
    base_url: str,
    addresses: Sequence[str],
    url_of: Callable[[str], str],
    rate: float,
    duration_s: float,
    max_in_flight: int,
    grace_s: float,
    seed: int,
    keep_bodies: bool,
) -> LoadResult:
    rng = random.Random(seed)
    n = max(1, round(rate * duration_s))
    targets = [rng.choice(addresses) for _ in range(n)]
    latencies: list[float] = []
    done_at: list[float] = []
    errors: dict[str, int] = {}
    bodies: list[tuple[str, Any]] = []
    slots = asyncio.Semaphore(max_in_flight)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as client:

        async def one(address: str, due: float) -> None:
            try:
                async with slots:
                    response = await client.get(url_of(address))
                now = time.perf_counter()
                if response.status_code != 200:
                    key = f"HTTP {response.status_code}"
                    errors[key] = errors.get(key, 0) + 1
                    return
                latencies.append(1000 * (now - due))
                done_at.append(now)
                if keep_bodies:
                    bodies.append((address, response.json()))
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter() + 0.05
        tasks = []
        for i, address in enumerate(targets):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(address, due)))
        last_due = t0 + (n - 1) / rate
        _, pending = await asyncio.wait(
            tasks, timeout=max(0.0, last_due + grace_s - time.perf_counter())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            errors["unfinished"] = len(pending)

    latencies.sort()
    elapsed = (max(done_at) if done_at else time.perf_counter()) - t0
    ok = len(latencies)
    return LoadResult(
        target_rps=rate,
        duration_s=duration_s,
        requests=n,
        ok=ok,
        errors=n - ok,
        achieved_rps=ok / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        error_kinds=errors,
        bodies=bodies,
    )


def drive(
    base_url: str,
    addresses: Sequence[str],
    rate: float = 200.0,
    duration_s: float = 20.0,
    max_in_flight: int = 64,
    grace_s: float = 5.0,
    seed: int = 0,
    keep_bodies: bool = False,
) -> LoadResult:
    """Open-loop GET ``/holders/{address}/claims`` on random ``addresses`` at ``rate`` per second.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000``.
        addresses: Holders to draw from (uniformly, seeded by ``seed``).
        rate: Target requests per second; request ``i`` is due at ``i / rate`` s.
        duration_s: Length of the schedule, ``0 < duration_s ≤ 120``.
        max_in_flight: Most requests outstanding (and pooled connections) at once.
        grace_s: How long after the last due time outstanding requests may still finish.
        keep_bodies: Keep ``(address, JSON body)`` of every 200 response in ``bodies``.

    Raises:
        ValueError: a duration outside ``(0, 120]`` s, a rate ≤ 0 or ``max_in_flight`` < 1.
    """
    return drive_paths(base_url, addresses, rate, duration_s, max_in_flight, grace_s, seed,
                       keep_bodies, url_of=claims_path)


def claims_path(address: str) -> str:
    """The proof endpoint's path for ``address``."""
    return f"/holders/{address}/claims"


def drive_paths(
    base_url: str,
    items: Sequence[str],
    rate: float = 200.0,
    duration_s: float = 20.0,
    max_in_flight: int = 64,
    grace_s: float = 5.0,
    seed: int = 0,
    keep_bodies: bool = False,
    url_of: Callable[[str], str] = lambda path: path,
) -> LoadResult:
    """Open-loop GET of ``url_of(item)`` for random ``items`` at ``rate`` per second (the driver
    of :func:`drive`, for any route: by default each item is a path such as ``/rounds/3``).

    Arguments as :func:`drive`; ``bodies`` holds ``(item, JSON body)``, so ``keep_bodies`` needs a
    JSON route. Raises ValueError for a duration outside ``(0, 120]`` s, a rate ≤ 0 or
    ``max_in_flight`` < 1.
    """
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S:.0f}] s, got {duration_s}")
    if rate <= 0 or max_in_flight < 1:
        raise ValueError("rate must be positive and max_in_flight at least 1")
    return asyncio.run(_drive(base_url, items, url_of, rate, duration_s, max_in_flight, grace_s,
                              seed, keep_bodies))


def report(result: LoadResult, setup: str) -> str:
    rss = result.server_rss_kib
    lines = [
        "GET /holders/{address}/claims, open loop, uvicorn (1 worker, no access log) on loopback",
        f"  run folder         {setup}",
        f"  target rate        {result.target_rps:>9.1f} req/s for {result.duration_s:.0f} s",
        f"  achieved rate      {result.achieved_rps:>9.1f} req/s",
        f"  requests           {result.requests:>9}   ({result.ok} ok)",
        f"  errors             {result.errors:>9}   {result.error_kinds or ''}",
        f"  latency p50        {result.p50_ms:>9.2f} ms",
        f"  latency p90        {result.p90_ms:>9.2f} ms",
        f"  latency p99        {result.p99_ms:>9.2f} ms",
        f"  latency max        {result.max_ms:>9.2f} ms",
        f"  server RSS         {rss.get('VmRSS', 0) / 1024:>9.1f} MiB (peak "
        f"{rss.get('VmHWM', 0) / 1024:.1f} MiB)",
    ]
    cpu = result.cpu_cores
    if cpu:
        lines.append(
            f"  CPU during run     server {cpu['server']:.2f}, load generator "
            f"{cpu['load_generator']:.2f}, other processes {cpu['others']:.2f} cores"
        )
    for gen, g in sorted(result.server_gc.items()):
        lines.append(f"  server gc gen {gen}    {g['collections']:>5} collections, total "
                     f"{g['total_ms']:.1f} ms, longest {g['max_ms']:.2f} ms")
    srv = result.server_ms
    if srv:
        lines.append(
            f"  server time        p50 <= {srv['p50_le_ms']:g} ms, p99 <= {srv['p99_le_ms']:g} ms, "
            f"{100 * srv['share_le_10ms']:.2f} % <= 10 ms (/metrics histogram, "
            f"{srv['count']:.0f} requests)"
        )
    return "\n".join(lines)


def cpu_cores(start: tuple[int, int, int, float], server_pid: int) -> dict[str, float]:
    """Cores used since ``start`` ``(machine busy, server, this process ticks, monotonic s)``
    by the server, this load generator and every other process (the machine's busy time minus
    both: a quiet machine reads near 0)."""
    hz = os.sysconf("SC_CLK_TCK")
    seconds = time.monotonic() - start[3]
    server = (process_jiffies(server_pid) - start[1]) / hz / seconds
    client = (process_jiffies(os.getpid()) - start[2]) / hz / seconds
    busy = (busy_jiffies() - start[0]) / hz / seconds
    return {"server": server, "load_generator": client, "others": max(0.0, busy - server - client)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="serve this run folder instead of a synthetic one",
    )
    parser.add_argument("--rounds", type=int, default=3, help="synthetic rounds, default 3")
    parser.add_argument(
        "--holders", type=int, default=1000, help="synthetic holders per round, default 1000"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="target req/s, default 200")
    parser.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help=f"seconds of load, default 20, at most {MAX_DURATION_S:.0f}",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        help="outstanding requests (and connections) at most, default 64",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds after the last due time before cancelling, default 5",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of holders and request order")
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"pin the server to CPU {SERVER_CPU} and this load generator to CPU {CLIENT_CPU}",
    )
    parser.add_argument(
        "--server-gc",
        choices=("default", "off"),
        default="default",
        help="'off' disables the server's garbage collector (an experiment)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="api_load_") as tmp:
        if args.run_dir is not None:
            run_dir = args.run_dir
            addresses = sorted(
                {
                    h["address"]
                    for p in run_dir.glob("round_*/allocation.json")
                    for h in json.loads(p.read_text())["holders"]
                }
            )
            setup = f"{run_dir} ({len(addresses)} addresses)"
        else:
            run_dir = Path(tmp)
            start = time.perf_counter()
            addresses = build_run_dir(run_dir, args.rounds, args.holders, args.seed)
            setup = (
                f"synthetic, {args.rounds} rounds x {args.holders} holders "
                f"(built in {time.perf_counter() - start:.1f} s)"
            )
        if args.pin:
            os.sched_setaffinity(0, {CLIENT_CPU})
            setup += f"; server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"
        cpu = SERVER_CPU if args.pin else None
        gc_log = Path(tmp) / "server_gc.json"
        os.environ[GC_LOG_ENV] = str(gc_log)
        with serve(run_dir, cpu=cpu, gc_mode=args.server_gc) as server:
            # the first request after /health answers (the server parses rounds at start-up)
            start = time.perf_counter()
            httpx.get(f"{server.base_url}/holders/{addresses[0]}/claims", timeout=60.0)
            setup += (
                f"; start-up {1000 * server.startup_s:.0f} ms (launch to /health), "
                f"first request {1000 * (time.perf_counter() - start):.1f} ms"
            )
            ticks = (busy_jiffies(), process_jiffies(server.process.pid),
                     process_jiffies(os.getpid()), time.monotonic())
            result = drive(
                server.base_url,
                addresses,
                args.rate,
                args.duration,
                args.max_in_flight,
                args.grace,
                args.seed,
            )
            result.server_rss_kib = rss_kib(server.process.pid)
            result.server_ms = server_times(server.base_url)
            result.cpu_cores = cpu_cores(ticks, server.process.pid)
        with contextlib.suppress(OSError, ValueError):
            result.server_gc = gc_summary(gc_log, ticks[3])
    print(report(result, setup))
    if args.json is not None:
        args.json.write_text(json.dumps({"setup": setup, **result.figures()}, indent=2) + "\n")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())

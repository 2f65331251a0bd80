"""The HTTP API over a run folder: rounds, allocations and holders' Merkle proofs, holder
registration, campaign status, co-signing, operator jobs, and the web pages.

:func:`create_app` only assembles the app: it checks its start-up inputs, puts what the request
dependencies (:mod:`offchain.api.deps`) read on ``app.state``, adds the middleware (metrics, body
guard), includes one router per resource (:mod:`offchain.api.routers`), mounts the static files
at ``/static`` and sets up the Jinja2 templates. Amounts are decimal strings of wei (JSON numbers
lose precision above 2⁵³ in JavaScript).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import jinja2
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from offchain.api.chain_claims import ChainClaims
from offchain.api.claims_cache import ClaimsResponses
from offchain.api.guard import BodyGuardMiddleware
from offchain.api.holders_store import count_registered, recover_holders_dir
from offchain.api.metrics import ApiMetrics, MetricsMiddleware
from offchain.api.operator import JobManager, OperatorConfig
from offchain.api.registration import RegistrationLimits
from offchain.api.rounds_view import RoundCache, RoundWarmer, round_ids
from offchain.api.routers import ROUTERS, docs
from offchain.api.routers.operator import authenticate
from offchain.api.routers.registration import body_rule
from offchain.api.state_view import StateView
from offchain.errors import ConfigError, DataError
from offchain.jsonsafe import pin_recursion_limit

__all__ = ["ROUND_SCAN_S", "STATIC_DIR", "TEMPLATES_DIR", "create_app"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
"""The pages' Jinja2 templates (package data)."""
STATIC_DIR = Path(__file__).parent / "static"
"""Files served as they are at ``/static`` (package data; everything local, no CDN)."""
ROUND_SCAN_S = 0.5
"""Seconds between two scans of the run folder for new or changed rounds (:class:`RoundWarmer`)."""


def _freeze_gc(_parsed: int = 0) -> None:
    """Move every object alive now out of the garbage collector's generations
    (:func:`gc.freeze`): the parsed rounds (hundreds of thousands of strings, tuples and lists)
    are never scanned again, so a full collection during a request stays short."""
    gc.freeze()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up of a served app: parse every round before the first request (off the event
    loop, before uvicorn accepts connections), freeze the collector's view of them, and keep
    new or changed rounds parsed from a :class:`RoundWarmer` thread until shutdown.

    (An app used without its lifespan, e.g. a test's ``TestClient(app)``, parses each round on
    the first request that needs it instead.)
    """
    state = app.state
    await anyio.to_thread.run_sync(state.round_cache.warm, state.run_dir)
    gc.collect()
    _freeze_gc()
    warmer = RoundWarmer(state.round_cache, state.run_dir, ROUND_SCAN_S, on_parsed=_freeze_gc)
    warmer.start()
    try:
        yield
    finally:
        warmer.stop()


def _prepare_holders_dir(holders_dir: Path) -> None:
    """Start-up check of the holders folder and
    :func:`~offchain.api.holders_store.recover_holders_dir`.

    Raises:
        ConfigError: it exists and is not a folder, or recovery fails (named in the message).
    """
    if holders_dir.exists() and not holders_dir.is_dir():
        raise ConfigError(f"--holders-dir {holders_dir} exists and is not a folder")
    try:
        recover_holders_dir(holders_dir)
    except (OSError, DataError) as exc:
        raise ConfigError(f"--holders-dir {holders_dir}: recovery failed ({exc})") from exc


def _check_roots(roots: Sequence[Path]) -> tuple[Path, ...]:
    """The manifest roots as given, after checking each resolves (ConfigError otherwise)."""
    for root in roots:
        try:
            Path(root).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, a symlink loop
            raise ConfigError(
                f"--manifest-root {str(root)!r} is not a usable path ({exc})"
            ) from exc
    return tuple(Path(r) for r in roots)


def create_app(
    run_dir: Path,
    holders_dir: Path | None = None,
    registration_limits: RegistrationLimits | None = None,
    allowed_manifest_roots: Sequence[Path] = (),
    *,
    state_url: str | None = None,
    deployment_file: Path | None = None,
    operator: OperatorConfig | None = None,
    chain_rpc_url: str | None = None,
) -> FastAPI:
    """The API over ``run_dir`` (a folder of ``round_NNN/`` artifacts).

    Args:
        run_dir: the run folder whose rounds are served.
        holders_dir: where ``POST /holders`` stores registrations (the layout
            :func:`offchain.data.holders.load_holder_folders` reads); None: registration answers
            503 "registration disabled".
        registration_limits: size and count limits of a registration; None: the defaults.
        allowed_manifest_roots: folders of this machine that ``POST /holders/manifest`` may read
            images from; empty: that route answers 503.
        state_url: the round-state database (read only by GETs); None: ``<run_dir>/state.db``.
        deployment_file: the campaign's deployment file; None: ``<run_dir>/deployment.json``.
        operator: the operator endpoints' token and job flags; None (or no token): they
            answer 503. The token is checked at start-up
            (:func:`offchain.api.operator.check_api_token`).
        chain_rpc_url: the chain's RPC: ``claimed`` flags come from the pool's ``Claimed``
            events of the deployment file's campaign
            (:class:`~offchain.api.chain_claims.ChainClaims`); None: from the node's own
            ``claims.json`` (responses say which, ``claimed_source``).

    Every request body is bounded and JSON nesting is checked before any parse; operator
    requests are authenticated before their bodies are read (:class:`BodyGuardMiddleware`).
    The recursion limit is pinned to CPython's default (py_ecc raises it at import).

    Raises:
        ConfigError: a weak or placeholder API token; ``holders_dir`` not a folder or its
            crash recovery failing
            (:func:`~offchain.api.holders_store.recover_holders_dir`); an unusable manifest root.
    """
    pin_recursion_limit()
    if holders_dir is not None:
        _prepare_holders_dir(Path(holders_dir))
    allowed_manifest_roots = _check_roots(allowed_manifest_roots)
    app = FastAPI(
        title="Copyright compensation oracle", version="0.1.0", lifespan=_lifespan,
        docs_url=None, redoc_url=None,  # /docs is served offline by routers.docs; no ReDoc
    )
    state = app.state
    state.run_dir = Path(run_dir)
    state.round_cache = RoundCache()
    state.claims_responses = ClaimsResponses(state.round_cache)
    state.chain_claims = ChainClaims(chain_rpc_url) if chain_rpc_url else None
    state.holders_dir = None if holders_dir is None else Path(holders_dir)
    state.registration_limits = registration_limits or RegistrationLimits()
    state.allowed_manifest_roots = tuple(Path(r) for r in allowed_manifest_roots)
    state.metrics = ApiMetrics(
        rounds=lambda: len(round_ids(state.run_dir)),
        holders=lambda: None if state.holders_dir is None else count_registered(state.holders_dir),
    )
    state.state_view = StateView(Path(run_dir), state_url)
    state.deployment_file = Path(deployment_file or Path(run_dir) / "deployment.json")
    state.operator = operator
    state.jobs = JobManager(Path(run_dir).resolve(), operator or OperatorConfig())
    state.templates = Jinja2Templates(env=jinja2.Environment(  # escape every template's output
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    ))

    app.add_middleware(BodyGuardMiddleware, rule_for=body_rule, authenticate=authenticate)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts refusals
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(docs.router)  # Swagger UI from /static/dist/swagger, never a CDN
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

"""Campaign status, co-signing and operator endpoints of the API (see docs/api.md).

* Public: ``GET /campaigns``, ``GET /campaigns/{campaign_id}`` and its ``/rounds``: the run
  folder's ``deployment.json`` joined with the round-state database, read only (a GET never
  creates or migrates the database; without one, statuses come from the round artifacts).
* Co-signing: ``GET /rounds/{round_id}/signing-request`` (what the oracle signers sign) and
  ``POST /rounds/{round_id}/signatures``, authenticated by the signature itself: it must recover
  to one of the campaign's signers over the round's signing request.
* Operator: ``POST /operator/rounds/run``, ``/operator/rounds/{round_id}/sign`` and ``/submit``
  start ``python -m offchain run-round`` as a background job (``GET /operator/jobs/{job_id}``),
  behind a bearer token (:func:`check_api_token` refuses weak or placeholder tokens).
"""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, SecretStr

from offchain.allocation import RoundAllocation
from offchain.errors import ConfigError, StageError
from offchain.layout import RoundPaths
from offchain.oracle.keystore import PLACEHOLDER_PASSWORDS
from offchain.oracle.node import STAGES, verified_signer
from offchain.oracle.signing import SigningError, recover_round_signer
from offchain.utils import read_json

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from offchain.state import RoundStore

__all__ = [
    "MIN_TOKEN_CHARS",
    "OPERATOR_PREFIX",
    "JobManager",
    "OperatorConfig",
    "StateView",
    "check_api_token",
    "cosign_router",
    "operator_refusal",
    "operator_router",
    "status_router",
]

MIN_TOKEN_CHARS = 32
"""Shortest accepted API token."""
PLACEHOLDER_TOKENS = (
    *PLACEHOLDER_PASSWORDS,
    "token",
    "xxxx",
    "your",
    "replace",
    "todo",
    "dummy",
    "fake",
    "insecure",
    "default",
    "api",
    "admin",
)
"""Refused as a token's start (case-insensitive), besides the keystore's placeholder passwords."""
_OUTPUT_TAIL_CHARS = 8000


def check_api_token(token: str) -> None:
    """Refuse an empty, short (< 32 characters) or placeholder API token.

    Placeholders: a token starting with one of :data:`PLACEHOLDER_TOKENS` (``changeme…``,
    ``secret…``, ``token…``, ``xxxx…``), holding ``<`` / ``>`` / whitespace (``<your token>``),
    or made of fewer than 8 distinct characters (``aaaa…``, ``abababab…``).

    Raises:
        ConfigError: naming the rule the token breaks (never the token).
    """
    if not token:
        raise ConfigError("API token is empty")
    lowered = token.lower()
    if lowered.startswith(PLACEHOLDER_TOKENS) or re.search(r"[<>\s]", token) or len(set(token)) < 8:
        raise ConfigError(
            "API token (CCOMP_API_TOKEN) is a placeholder; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"API token (CCOMP_API_TOKEN) is shorter than {MIN_TOKEN_CHARS} characters"
        )


@dataclass(frozen=True)
class OperatorConfig:
    """How ``serve`` runs operator jobs: the token and the ``run-round`` flags it passes on.

    Attributes:
        token: the bearer token (checked by :func:`check_api_token`); None: operator routes
            answer 503.
        config_file: ``--config`` env file of the jobs (the server's).
        deployment_file: ``--deployment`` of the jobs; None: ``<run_dir>/deployment.json``.
        dev: pass ``--dev`` (anvil dev keys for missing keys).
        command: the program a job runs, before ``run-round``'s arguments.
    """

    token: SecretStr | None = None
    config_file: Path | None = None
    deployment_file: Path | None = None
    dev: bool = False
    command: tuple[str, ...] = (sys.executable, "-m", "offchain", "run-round")

    def __post_init__(self) -> None:
        if self.token is not None:
            check_api_token(self.token.get_secret_value())


# ---------------------------------------------------------------------------------------------
# State database, read only
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundState:
    """A round's rows in the state database."""

    status: str
    stages: dict[str, str | None]
    tx_hash: str | None


class StateView:
    """Read-only access to the run's state database, and the store the co-signing route writes.

    Reads never create nor migrate the database: a SQLite file that does not exist, or a
    database not at the newest revision, reads as "no database" (None).
    """

    def __init__(self, run_dir: Path, state_url: str | None) -> None:
        from offchain.state import default_url

        self.url = state_url or default_url(run_dir)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._at_head = False
        self._store: RoundStore | None = None

    def _sqlite_file(self) -> Path | None:
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite":
            return None
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)

    def engine(self) -> Engine | None:
        """An engine on the database if it exists at the newest revision, else None."""
        from offchain.state import current_revision, head_revision, make_engine

        file = self._sqlite_file()
        if file is not None and not file.is_file():
            return None
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            if not self._at_head:
                try:
                    self._at_head = current_revision(self._engine) == head_revision()
                except Exception:  # unreachable server, not a database: no state to show
                    return None
            return self._engine if self._at_head else None

    def rounds(self, chain_id: int, pool: str, campaign_id: int) -> dict[int, RoundState] | None:
        """Round id → its state for the campaign; None without a database."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from offchain.state.models import Campaign, Round, StageRun, Submission, SubmissionStatus

        engine = self.engine()
        if engine is None:
            return None
        with Session(engine) as session:
            campaign = session.scalar(
                select(Campaign).where(
                    Campaign.chain_id == chain_id,
                    Campaign.pool_address == pool.lower(),
                    Campaign.onchain_campaign_id == str(campaign_id),
                )
            )
            if campaign is None:
                return {}
            found: dict[int, RoundState] = {}
            for row in session.scalars(select(Round).where(Round.campaign_id == campaign.id)):
                stages: dict[str, str | None] = dict.fromkeys(STAGES)
                for run in session.scalars(select(StageRun).where(StageRun.round_pk == row.id)):
                    stages[run.stage] = run.status.value
                tx = session.scalar(
                    select(Submission.tx_hash).where(
                        Submission.round_pk == row.id,
                        Submission.status != SubmissionStatus.FAILED,
                    )
                )
                found[row.round_id] = RoundState(row.status.value, stages, tx)
            return found

    def campaign_ids(self, chain_id: int, pool: str) -> list[int]:
        """On-chain ids of the campaigns of this pool in the database."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from offchain.state.models import Campaign

        engine = self.engine()
        if engine is None:
            return []
        with Session(engine) as session:
            return sorted(
                int(c)
                for c in session.scalars(
                    select(Campaign.onchain_campaign_id).where(
                        Campaign.chain_id == chain_id, Campaign.pool_address == pool.lower()
                    )
                )
            )

    def store(self) -> RoundStore:
        """The round store, the database created or migrated on first use (POST only)."""
        from offchain.state import RoundStore, make_engine, upgrade

        with self._lock:
            if self._store is None:
                upgrade(self.url)
                self._store = RoundStore(make_engine(self.url))
                self._at_head = False  # re-check on the next read
            return self._store


def get_state(request: Request) -> StateView:
    return request.app.state.state_view


def get_run_dir(request: Request) -> Path:
    return request.app.state.run_dir


def load_deployment_file(request: Request) -> dict[str, Any] | None:
    """The parsed deployment file, or None when there is none."""
    path: Path = request.app.state.deployment_file
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


State = Annotated[StateView, Depends(get_state)]
RunDir = Annotated[Path, Depends(get_run_dir)]
DeploymentData = Annotated[dict[str, Any] | None, Depends(load_deployment_file)]


# ---------------------------------------------------------------------------------------------
# Public status
# ---------------------------------------------------------------------------------------------


class CampaignRound(BaseModel):
    round_id: int
    status: str
    """pending / submitted / challengeable / finalized / revoked (from the database, else from
    the round's artifacts)."""
    status_source: str
    """``database`` or ``artifacts``."""
    stages: dict[str, str | None]
    """Stage key → started / done / failed, None if never begun (all None without a database)."""
    merkle_root: str | None
    budget_wei: str | None
    tx_hash: str | None


class CampaignSummary(BaseModel):
    campaign_id: int
    chain_id: int
    pool: str
    token: str | None
    signers: list[str]
    threshold: int | None
    total_budget_wei: str | None
    round_cap_wei: str | None
    holder_cap_wei: str | None
    challenge_window_s: int | None
    rounds: int


class CampaignDetail(CampaignSummary):
    round_states: list[CampaignRound]


def artifact_round_ids(run_dir: Path) -> list[int]:
    """Rounds with an ``allocation.json`` in the run folder."""
    ids = []
    for child in run_dir.glob("round_*"):
        suffix = child.name.removeprefix("round_")
        if (
            suffix.isascii()
            and suffix.isdigit()
            and RoundPaths(run_dir, int(suffix)).allocation.exists()
        ):
            ids.append(int(suffix))
    return sorted(ids)


def artifact_status(paths: RoundPaths) -> str:
    """A round's status in the database's vocabulary, read from its artifacts."""
    if paths.finality.exists():
        return "finalized"
    if paths.submission.exists():
        return "challengeable"
    return "pending"


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _campaign_rounds(
    run_dir: Path, state: StateView, deployment: dict[str, Any], campaign_id: int
) -> list[CampaignRound]:
    db = state.rounds(int(deployment["chain_id"]), deployment["pool"], campaign_id)
    own = campaign_id == deployment.get("campaign_id")  # the run folder's rounds are its
    ids = set(db or {}) | (set(artifact_round_ids(run_dir)) if own else set())
    out = []
    for round_id in sorted(ids):
        paths = RoundPaths(run_dir, round_id)
        allocation = read_json(paths.allocation) if own and paths.allocation.exists() else {}
        submission = read_json(paths.submission) if own and paths.submission.exists() else {}
        row = (db or {}).get(round_id)
        out.append(
            CampaignRound(
                round_id=round_id,
                status=row.status if row else artifact_status(paths),
                status_source="database" if row else "artifacts",
                stages=row.stages if row else dict.fromkeys(STAGES),
                merkle_root=allocation.get("merkle_root"),
                budget_wei=_str_or_none(allocation.get("budget_wei")),
                tx_hash=submission.get("tx_hash") or (row.tx_hash if row else None),
            )
        )
    return out


def _campaign_summary(deployment: dict[str, Any], campaign_id: int, rounds: int) -> CampaignSummary:
    own = campaign_id == deployment.get("campaign_id")
    params = deployment if own else {}
    return CampaignSummary(
        campaign_id=campaign_id,
        chain_id=int(deployment["chain_id"]),
        pool=deployment["pool"],
        token=deployment.get("token"),
        signers=list(params.get("signers") or []),
        threshold=params.get("threshold"),
        total_budget_wei=_str_or_none(params.get("total_budget_wei")),
        round_cap_wei=_str_or_none(params.get("round_cap_wei")),
        holder_cap_wei=_str_or_none(params.get("holder_cap_wei")),
        challenge_window_s=params.get("challenge_window_s"),
        rounds=rounds,
    )


def _campaign_ids(state: StateView, deployment: dict[str, Any] | None) -> list[int]:
    if deployment is None:
        return []
    ids = set(state.campaign_ids(int(deployment["chain_id"]), deployment["pool"]))
    if deployment.get("campaign_id") is not None:
        ids.add(int(deployment["campaign_id"]))
    return sorted(ids)


status_router = APIRouter(tags=["campaigns"])


@status_router.get("/campaigns", response_model=list[CampaignSummary])
def campaigns(run_dir: RunDir, state: State, deployment: DeploymentData) -> list[CampaignSummary]:
    """The campaigns of the run's pool (``deployment.json`` and the state database)."""
    if deployment is None:
        return []
    return [
        _campaign_summary(deployment, cid, len(_campaign_rounds(run_dir, state, deployment, cid)))
        for cid in _campaign_ids(state, deployment)
    ]


def _campaign_or_404(
    campaign_id: int, state: StateView, deployment: dict[str, Any] | None
) -> dict[str, Any]:
    if deployment is None or campaign_id not in _campaign_ids(state, deployment):
        raise HTTPException(status_code=404, detail=f"unknown campaign {campaign_id}")
    return deployment


@status_router.get("/campaigns/{campaign_id}", response_model=CampaignDetail)
def campaign_detail(
    campaign_id: int, run_dir: RunDir, state: State, deployment: DeploymentData
) -> CampaignDetail:
    """A campaign's parameters and its rounds with their status and stages."""
    deployment = _campaign_or_404(campaign_id, state, deployment)
    rounds = _campaign_rounds(run_dir, state, deployment, campaign_id)
    summary = _campaign_summary(deployment, campaign_id, len(rounds))
    return CampaignDetail(**summary.model_dump(), round_states=rounds)


@status_router.get("/campaigns/{campaign_id}/rounds", response_model=list[CampaignRound])
def campaign_rounds(
    campaign_id: int, run_dir: RunDir, state: State, deployment: DeploymentData
) -> list[CampaignRound]:
    """A campaign's rounds: status, stages, Merkle root, budget (wei), transaction."""
    deployment = _campaign_or_404(campaign_id, state, deployment)
    return _campaign_rounds(run_dir, state, deployment, campaign_id)


def round_db_state(request: Request, round_id: int) -> RoundState | None:
    """The database state of round ``round_id`` of the deployment's campaign (None if none)."""
    deployment = load_deployment_file(request)
    if deployment is None or deployment.get("campaign_id") is None:
        return None
    db = request.app.state.state_view.rounds(
        int(deployment["chain_id"]), deployment["pool"], int(deployment["campaign_id"])
    )
    return (db or {}).get(round_id)


# ---------------------------------------------------------------------------------------------
# Co-signing
# ---------------------------------------------------------------------------------------------


class SignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signature: str
    """0x + 65 bytes hex: the EIP-712 signature of the round's ``digest``."""


class SignatureOut(BaseModel):
    round_id: int
    signer: str
    digest: str
    stored: bool
    """False when the same signature was posted before."""
    collected: int
    """Valid signatures of the digest collected so far (database, any origin)."""
    threshold: int | None


_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")

cosign_router = APIRouter(tags=["co-signing"])


def _signing_paths(run_dir: Path, round_id: int) -> RoundPaths:
    paths = RoundPaths(run_dir, round_id)
    if round_id < 1 or not paths.signing_request.is_file():
        raise HTTPException(
            status_code=404, detail=f"round {round_id} has no signing request (yet)"
        )
    return paths


@cosign_router.get("/rounds/{round_id}/signing-request")
def signing_request(round_id: int, run_dir: RunDir) -> dict[str, Any]:
    """What every oracle signer signs: chain id, verifying contract, the ``RoundAllocation``
    (EIP-712; every uint256 a decimal string, also for a file written before that rule) and
    its digest."""
    request = read_json(_signing_paths(run_dir, round_id).signing_request)
    try:
        allocation = RoundAllocation.from_json(request["allocation"])
    except SigningError as exc:  # a corrupt file: say so rather than serve it
        raise HTTPException(status_code=500, detail=f"round {round_id}: {exc}") from exc
    return {**request, "allocation": allocation.to_json()}


@cosign_router.post(
    "/rounds/{round_id}/signatures",
    status_code=201,
    response_model=SignatureOut,
    responses={200: {"model": SignatureOut, "description": "already stored"}},
)
def post_signature(
    round_id: int, body: SignatureIn, run_dir: RunDir, state: State, deployment: DeploymentData
) -> Any:
    """A co-signer's signature of the round's signing request; authenticated by the signature
    itself (it must recover to one of the campaign's signers)."""
    from fastapi.responses import JSONResponse

    paths = _signing_paths(run_dir, round_id)
    if not _SIGNATURE.fullmatch(body.signature):
        raise HTTPException(status_code=422, detail="signature must be 0x + 65 bytes hex")
    request = read_json(paths.signing_request)
    allocation = RoundAllocation.from_json(request["allocation"])
    try:
        recover_round_signer(
            body.signature, request["chain_id"], request["verifying_contract"], allocation
        )
    except SigningError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    signers = list((deployment or {}).get("signers") or [])
    try:
        signer = verified_signer(paths, body.signature, signers)
    except SigningError as exc:
        raise HTTPException(
            status_code=403,
            detail=f"{exc} (a signature over another allocation recovers to another address)",
        ) from exc
    store = state.store()
    round_pk = store.ensure_round(
        store.ensure_campaign(
            int(request["chain_id"]),
            request["verifying_contract"],
            allocation.campaign_id,
            str(run_dir),
        ),
        round_id,
    )
    digest = request["digest"]
    try:
        stored = store.add_signature(round_pk, signer, digest, body.signature)
    except StageError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    collected = 0
    for sig in store.signatures(round_pk, digest).values():
        try:
            verified_signer(paths, sig, signers)
            collected += 1
        except SigningError:
            pass
    out = SignatureOut(
        round_id=round_id,
        signer=signer,
        digest=digest,
        stored=stored,
        collected=collected,
        threshold=(deployment or {}).get("threshold"),
    )
    return JSONResponse(out.model_dump(), status_code=201 if stored else 200)


# ---------------------------------------------------------------------------------------------
# Operator jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A background ``run-round`` process."""

    job_id: str
    action: str
    round_id: int | None
    args: list[str]
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    output: deque[str] = field(default_factory=deque)
    output_chars: int = 0

    @property
    def state(self) -> str:
        code = self.process.poll()
        if code is None or self.finished_at is None:
            return "running"
        return "succeeded" if code == 0 else "failed"

    def tail(self) -> str:
        return "".join(self.output)[-_OUTPUT_TAIL_CHARS:]


class JobOut(BaseModel):
    job_id: str
    action: str
    round_id: int | None
    state: str
    """running / succeeded / failed."""
    exit_code: int | None
    started_at: float
    finished_at: float | None
    args: list[str]
    """``run-round``'s arguments."""
    output_tail: str
    """The last 8,000 characters of the job's stdout and stderr."""


class JobManager:
    """Starts ``run-round`` jobs, one per round at a time, and keeps their output tails."""

    def __init__(self, run_dir: Path, config: OperatorConfig) -> None:
        self.run_dir = run_dir
        self.config = config
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(self, action: str, round_id: int | None, until: str | None) -> Job:
        """Start a job; raises HTTPException 409 while a job for the same round runs (a job
        without a round conflicts with every running job)."""
        args = ["--run-dir", str(self.run_dir), "--json"]
        if round_id is not None:
            args += ["--round", str(round_id)]
        if until is not None:
            args += ["--until", until]
        if self.config.config_file is not None:
            args += ["--config", str(self.config.config_file)]
        if self.config.deployment_file is not None:
            args += ["--deployment", str(self.config.deployment_file)]
        if self.config.dev:
            args.append("--dev")
        env = {k: v for k, v in os.environ.items() if k != "CCOMP_API_TOKEN"}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = env.get("COLUMNS", "120")
        with self._lock:
            for job in self._jobs.values():
                if job.state == "running" and (
                    round_id is None or job.round_id is None or job.round_id == round_id
                ):
                    raise HTTPException(
                        status_code=409,
                        detail=f"job {job.job_id} ({job.action}, round "
                        f"{job.round_id if job.round_id is not None else 'next'}) is running",
                    )
            process = subprocess.Popen(
                [*self.config.command, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            job = Job(uuid.uuid4().hex, action, round_id, args, process)
            self._jobs[job.job_id] = job
        threading.Thread(target=self._collect, args=(job,), daemon=True).start()
        return job

    @staticmethod
    def _collect(job: Job) -> None:
        assert job.process.stdout is not None
        for raw in iter(job.process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            job.output.append(line)
            job.output_chars += len(line)
            while job.output_chars > 2 * _OUTPUT_TAIL_CHARS and len(job.output) > 1:
                job.output_chars -= len(job.output.popleft())
        job.process.wait()
        job.finished_at = time.time()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def terminate_all(self) -> None:
        """Stop running jobs (server shutdown)."""
        for job in list(self._jobs.values()):
            if job.process.poll() is None:
                job.process.terminate()


def _job_out(job: Job) -> JobOut:
    state = job.state
    return JobOut(
        job_id=job.job_id,
        action=job.action,
        round_id=job.round_id,
        state=state,
        exit_code=None if state == "running" else job.process.returncode,
        started_at=job.started_at,
        finished_at=job.finished_at,
        args=job.args,
        output_tail=job.tail(),
    )


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <CCOMP_API_TOKEN>")


OPERATOR_PREFIX = "/operator"
"""Path prefix of the routes behind the bearer token."""


def operator_refusal(
    config: OperatorConfig | None, authorization: str | None
) -> HTTPException | None:
    """Why a request with this ``Authorization`` header may not use the operator routes, or
    None: 503 without a configured token, 401 for a missing or wrong ``Bearer`` token (compared
    in constant time). Needs no body, so the API checks it before reading one
    (:class:`offchain.api.guard.BodyGuardMiddleware`)."""
    if config is None or config.token is None:
        return HTTPException(status_code=503, detail="operator endpoints disabled (no API token)")
    scheme, _, given = (authorization or "").strip().partition(" ")
    expected = config.token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> JobManager:
    """The job manager, for a request with the right bearer token (:func:`operator_refusal`).

    ``credentials`` only declares the scheme in the OpenAPI schema; the header is checked here.

    Raises:
        HTTPException: 503 without a configured token, 401 for a missing or wrong one.
    """
    refusal = operator_refusal(request.app.state.operator, request.headers.get("authorization"))
    if refusal is not None:
        raise refusal
    return request.app.state.jobs


Operator = Annotated[JobManager, Depends(require_operator)]


class RunRoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round_id: int | None = None
    """The round to run; None: the next unfinished one."""


operator_router = APIRouter(prefix=OPERATOR_PREFIX, tags=["operator"])


def _accepted(job: Job) -> JobOut:
    return _job_out(job)


@operator_router.post("/rounds/run", status_code=202, response_model=JobOut)
def run_round_job(jobs: Operator, body: RunRoundIn | None = None) -> JobOut:
    """Start ``run-round`` (every stage) for ``round_id`` or the next unfinished round."""
    round_id = body.round_id if body else None
    if round_id is not None and round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs.start("run", round_id, None))


@operator_router.post("/rounds/{round_id}/sign", status_code=202, response_model=JobOut)
def sign_round_job(round_id: int, jobs: Operator) -> JobOut:
    """Start ``run-round --round N --until sign`` (the stages up to and including signing)."""
    if round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs.start("sign", round_id, "sign"))


@operator_router.post("/rounds/{round_id}/submit", status_code=202, response_model=JobOut)
def submit_round_job(round_id: int, jobs: Operator) -> JobOut:
    """Start ``run-round --round N --until submit`` (up to and including the on-chain post)."""
    if round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs.start("submit", round_id, "submit"))


@operator_router.get("/jobs/{job_id}", response_model=JobOut)
def job_status(job_id: str, jobs: Operator) -> JobOut:
    """A job's state (running / succeeded / failed), exit code and output tail."""
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"unknown job {job_id}")
    return _job_out(job)


def configure(
    app_state: Any,
    run_dir: Path,
    state_url: str | None,
    deployment_file: Path | None,
    operator: OperatorConfig | None,
) -> None:
    """Put what these routers need on ``app.state``."""
    app_state.state_view = StateView(run_dir, state_url)
    app_state.deployment_file = Path(deployment_file or run_dir / "deployment.json")
    app_state.operator = operator
    app_state.jobs = JobManager(Path(run_dir).resolve(), operator or OperatorConfig())


def routers() -> Sequence[APIRouter]:
    return (status_router, cosign_router, operator_router)

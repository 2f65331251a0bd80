"""Operator jobs of the API: the bearer token and the ``run-round`` jobs it may start.

``POST /operator/rounds/run``, ``/operator/rounds/{round_id}/sign`` and ``/submit`` (routes in
:mod:`offchain.api.routers.operator`) start ``python -m offchain run-round`` as a background job
(:class:`JobManager`), behind a bearer token: :func:`check_api_token` refuses weak or placeholder
tokens at start-up, :func:`operator_refusal` checks a request's ``Authorization`` header.
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
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException
from pydantic import SecretStr

from offchain.errors import ConfigError
from offchain.oracle.keystore import PLACEHOLDER_PASSWORDS

__all__ = [
    "MIN_TOKEN_CHARS",
    "OPERATOR_PREFIX",
    "Job",
    "JobConflict",
    "JobManager",
    "OperatorConfig",
    "check_api_token",
    "operator_refusal",
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
        """``running``, ``succeeded`` (exit 0) or ``failed``."""
        code = self.process.poll()
        if code is None or self.finished_at is None:
            return "running"
        return "succeeded" if code == 0 else "failed"

    def tail(self) -> str:
        """The last 8,000 characters of the job's stdout and stderr."""
        return "".join(self.output)[-_OUTPUT_TAIL_CHARS:]


class JobConflict(Exception):
    """A job for the same round is running already (the message names it)."""


class JobManager:
    """Starts ``run-round`` jobs, one per round at a time, and keeps their output tails."""

    def __init__(self, run_dir: Path, config: OperatorConfig) -> None:
        self.run_dir = run_dir
        self.config = config
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(self, action: str, round_id: int | None, until: str | None) -> Job:
        """Start ``run-round`` for ``round_id`` (None: the next unfinished round), up to and
        including stage ``until`` (None: every stage).

        Raises:
            JobConflict: a job for the same round is running (a job without a round conflicts
                with every running job).
        """
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
                    raise JobConflict(
                        f"job {job.job_id} ({job.action}, round "
                        f"{job.round_id if job.round_id is not None else 'next'}) is running"
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
        """The job ``job_id`` (None: unknown)."""
        return self._jobs.get(job_id)

    def terminate_all(self) -> None:
        """Stop running jobs (server shutdown)."""
        for job in list(self._jobs.values()):
            if job.process.poll() is None:
                job.process.terminate()


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

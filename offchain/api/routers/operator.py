"""Operator jobs behind the bearer token: ``POST /operator/rounds/run``,
``/operator/rounds/{round_id}/sign`` and ``/submit`` start ``run-round`` in the background;
``GET /operator/jobs/{job_id}`` reports on one (:mod:`offchain.api.operator`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from offchain.api.deps import Operator
from offchain.api.operator import OPERATOR_PREFIX, Job, JobConflict, JobManager, operator_refusal
from offchain.api.schemas import JobOut, RunRoundIn

__all__ = ["authenticate", "router"]


def authenticate(scope: dict) -> HTTPException | None:
    """The operator routes' bearer-token refusal, checked before their bodies are read
    (:class:`~offchain.api.guard.BodyGuardMiddleware`); None for every other route."""
    path: str = scope["path"]
    if path != OPERATOR_PREFIX and not path.startswith(OPERATOR_PREFIX + "/"):
        return None
    headers = dict(scope.get("headers", ()))
    authorization = headers.get(b"authorization", b"").decode("latin-1") or None
    return operator_refusal(scope["app"].state.operator, authorization)


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


def _accepted(jobs: JobManager, action: str, round_id: int | None, until: str | None) -> JobOut:
    """Start a job; HTTPException 409 while one for the same round runs."""
    try:
        return _job_out(jobs.start(action, round_id, until))
    except JobConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


router = APIRouter(prefix=OPERATOR_PREFIX, tags=["operator"])


@router.post("/rounds/run", status_code=202, response_model=JobOut)
def run_round_job(jobs: Operator, body: RunRoundIn | None = None) -> JobOut:
    """Start ``run-round`` (every stage) for ``round_id`` or the next unfinished round."""
    round_id = body.round_id if body else None
    if round_id is not None and round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs, "run", round_id, None)


@router.post("/rounds/{round_id}/sign", status_code=202, response_model=JobOut)
def sign_round_job(round_id: int, jobs: Operator) -> JobOut:
    """Start ``run-round --round N --until sign`` (the stages up to and including signing)."""
    if round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs, "sign", round_id, "sign")


@router.post("/rounds/{round_id}/submit", status_code=202, response_model=JobOut)
def submit_round_job(round_id: int, jobs: Operator) -> JobOut:
    """Start ``run-round --round N --until submit`` (up to and including the on-chain post)."""
    if round_id < 1:
        raise HTTPException(status_code=422, detail="round_id must be >= 1")
    return _accepted(jobs, "submit", round_id, "submit")


@router.get("/jobs/{job_id}", response_model=JobOut)
def job_status(job_id: str, jobs: Operator) -> JobOut:
    """A job's state (running / succeeded / failed), exit code and output tail."""
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"unknown job {job_id}")
    return _job_out(job)

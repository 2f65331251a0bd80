"""Transactional API of the round state: stages, signatures, submissions.

Every method is one short transaction (on SQLite ``BEGIN IMMEDIATE``, see
:func:`offchain.state.db.make_engine`; on PostgreSQL ``SELECT ... FOR UPDATE`` on the row it
changes), so several oracle processes can share one database. Rounds are addressed by their
primary key ``round_pk`` from :meth:`RoundStore.ensure_round`, not by the on-chain round id.

A stage's life: :meth:`~RoundStore.begin_stage` → the work → :meth:`~RoundStore.finish_stage` or
:meth:`~RoundStore.fail_stage`. ``begin_stage`` returns ``False`` for a stage already done (the
caller skips it) and refuses one that another live process is running; a ``started`` row whose
process is gone (a crash) is begun again with ``attempts + 1``.

"Never submit twice": :meth:`~RoundStore.record_submission` refuses a second transaction for a
round while an earlier one is ``sent`` or ``confirmed``, and a partial unique index on
``submissions(round_pk) WHERE status != 'failed'`` enforces the same in the database itself.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offchain.errors import DataError, StageError
from offchain.state.models import (
    Campaign,
    Round,
    RoundStatus,
    Signature,
    StageRun,
    StageStatus,
    Submission,
    SubmissionStatus,
)

__all__ = ["RoundStore", "StageRecord", "SubmissionRecord"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HEX = re.compile(r"0x[0-9a-f]*")


@dataclass(frozen=True)
class StageRecord:
    """A snapshot of one stage row."""

    stage: str
    status: StageStatus
    attempts: int
    owner: str
    started_at: datetime
    finished_at: datetime | None
    output_sha256: str | None
    error: str | None


@dataclass(frozen=True)
class SubmissionRecord:
    """A snapshot of one submission row."""

    tx_hash: str
    nonce: int
    status: SubmissionStatus
    confirmations: int
    sent_at: datetime
    error: str | None


def process_owner() -> str:
    """``host:pid`` of this process, the owner written on the stages it begins."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _hex(value: str, what: str, nbytes: int | tuple[int, ...] | None = None) -> str:
    """``value`` as lower-case ``0x`` hex, checked to be ``nbytes`` long."""
    text = value.lower()
    if not text.startswith("0x"):
        text = "0x" + text
    sizes = (nbytes,) if isinstance(nbytes, int) else nbytes
    if not _HEX.fullmatch(text) or len(text) % 2 or (sizes and (len(text) - 2) // 2 not in sizes):
        raise DataError(f"{what} is not {nbytes or 'some'}-byte hex: {value!r}")
    return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stage_record(row: StageRun) -> StageRecord:
    return StageRecord(
        stage=row.stage,
        status=row.status,
        attempts=row.attempts,
        owner=row.owner,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at) if row.finished_at else None,
        output_sha256=row.output_sha256,
        error=row.error,
    )


def _submission_record(row: Submission) -> SubmissionRecord:
    return SubmissionRecord(
        tx_hash=row.tx_hash,
        nonce=row.nonce,
        status=row.status,
        confirmations=row.confirmations,
        sent_at=_aware(row.sent_at),
        error=row.error,
    )


class RoundStore:
    """Round state on an engine whose schema is at the head revision (:func:`~offchain.state.db.upgrade`).

    Args:
        engine: from :func:`offchain.state.db.make_engine`.
        owner: written on the stages this store begins; default ``host:pid`` of the calling process.
        stale_after: a ``started`` stage of another host is begun again once it is this old (no
            way to see whether that process lives); ``None``: never, :meth:`begin_stage` raises.
    """

    def __init__(
        self, engine: Engine, *, owner: str | None = None, stale_after: timedelta | None = None
    ) -> None:
        self.engine = engine
        self._owner = owner
        self.stale_after = stale_after

    @property
    def owner(self) -> str:
        """The owner written on begun stages (computed per call: a forked child has its own pid)."""
        return self._owner or process_owner()

    # ------------------------------------------------------------------ plumbing

    def _transaction(self, work: Callable[[Session], T], *, retries: int = 1) -> T:
        """Run ``work`` in one transaction; on a unique-constraint race, run it again once."""
        for attempt in range(retries + 1):
            try:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except IntegrityError:
                if attempt == retries:
                    raise
                logger.debug("unique-constraint race, retrying", exc_info=True)
        raise AssertionError("unreachable")

    @staticmethod
    def _stage_row(session: Session, round_pk: int, stage: str) -> StageRun | None:
        return session.scalar(
            select(StageRun)
            .where(StageRun.round_pk == round_pk, StageRun.stage == stage)
            .with_for_update()
        )

    @staticmethod
    def _round_row(session: Session, round_pk: int) -> Round:
        row = session.get(Round, round_pk, with_for_update=True)
        if row is None:
            raise StageError(f"no round with primary key {round_pk}")
        return row

    def _is_stale(self, row: StageRun) -> bool:
        """Whether a ``started`` row belongs to a process that is gone (or to this one)."""
        me = self.owner
        if row.owner == me:
            return True  # this process began it and never finished nor failed it
        host, _, pid = row.owner.rpartition(":")
        if host == me.rpartition(":")[0] and pid.isdigit() and not _pid_alive(int(pid)):
            return True
        if self.stale_after is not None:
            return _now() - _aware(row.started_at) >= self.stale_after
        return False

    # ------------------------------------------------------------------ campaigns and rounds

    def ensure_campaign(
        self, chain_id: int, pool_address: str, onchain_campaign_id: int, run_dir: str
    ) -> int:
        """The primary key of the campaign, created on first use (``run_dir`` kept from then)."""
        pool = _hex(pool_address, "pool address", 20)
        campaign = str(int(onchain_campaign_id))

        def work(session: Session) -> int:
            row = session.scalar(
                select(Campaign).where(
                    Campaign.chain_id == chain_id,
                    Campaign.pool_address == pool,
                    Campaign.onchain_campaign_id == campaign,
                )
            )
            if row is None:
                row = Campaign(
                    chain_id=chain_id,
                    pool_address=pool,
                    onchain_campaign_id=campaign,
                    run_dir=str(run_dir),
                    created_at=_now(),
                )
                session.add(row)
                session.flush()
            return row.id

        return self._transaction(work)

    def ensure_round(self, campaign_id: int, round_id: int) -> int:
        """The primary key of round ``round_id`` of the campaign, created ``pending`` on first use."""

        def work(session: Session) -> int:
            row = session.scalar(
                select(Round).where(Round.campaign_id == campaign_id, Round.round_id == round_id)
            )
            if row is None:
                row = Round(
                    campaign_id=campaign_id,
                    round_id=round_id,
                    status=RoundStatus.PENDING,
                    updated_at=_now(),
                )
                session.add(row)
                session.flush()
            return row.id

        return self._transaction(work)

    def round_status(self, round_pk: int) -> RoundStatus:
        """The round's status."""
        return self._transaction(lambda session: self._round_row(session, round_pk).status)

    def set_round_status(self, round_pk: int, status: RoundStatus | str) -> None:
        """Set the round's status (e.g. ``challengeable`` once the post is confirmed on chain)."""
        new = RoundStatus(status)

        def work(session: Session) -> None:
            row = self._round_row(session, round_pk)
            row.status = new
            row.updated_at = _now()

        self._transaction(work)

    # ------------------------------------------------------------------ stages

    def begin_stage(self, round_pk: int, stage: str) -> bool:
        """Record that this process starts ``stage`` of the round.

        Returns:
            ``True``: run the stage (first time, after a failure, or after a crash: ``attempts``
            grows by one); ``False``: the stage is done, skip it.

        Raises:
            StageError: another live process has the stage ``started``.
        """

        def work(session: Session) -> bool:
            row = self._stage_row(session, round_pk, stage)
            if row is None:
                session.add(
                    StageRun(
                        round_pk=round_pk,
                        stage=stage,
                        status=StageStatus.STARTED,
                        attempts=1,
                        owner=self.owner,
                        started_at=_now(),
                    )
                )
                session.flush()  # a concurrent insert fails here (uq_stage_run) and is retried
                return True
            if row.status == StageStatus.DONE:
                return False
            if row.status == StageStatus.STARTED and not self._is_stale(row):
                raise StageError(
                    f"stage {stage!r} of round {round_pk} is running in {row.owner} "
                    f"since {_aware(row.started_at).isoformat()}"
                )
            if row.status == StageStatus.STARTED:
                logger.warning(
                    "stage %r of round %d was left started by %s (attempt %d); beginning again",
                    stage,
                    round_pk,
                    row.owner,
                    row.attempts,
                )
            row.status = StageStatus.STARTED
            row.attempts += 1
            row.owner = self.owner
            row.started_at = _now()
            row.finished_at = None
            row.output_sha256 = None
            row.error = None
            return True

        return self._transaction(work)

    def finish_stage(self, round_pk: int, stage: str, output_sha256: str | None = None) -> None:
        """Mark a begun stage done, with the SHA-256 (hex) of its output artifact if it has one.

        Finishing a stage already done with the same hash is a no-op.

        Raises:
            StageError: the stage was never begun, has failed, or is done with another hash.
        """
        digest = _hex(output_sha256, "output SHA-256", 32)[2:] if output_sha256 else None

        def work(session: Session) -> None:
            row = self._stage_row(session, round_pk, stage)
            if row is None or row.status == StageStatus.FAILED:
                state = "never begun" if row is None else "failed"
                raise StageError(f"cannot finish stage {stage!r} of round {round_pk}: {state}")
            if row.status == StageStatus.DONE:
                if row.output_sha256 != digest:
                    raise StageError(
                        f"stage {stage!r} of round {round_pk} is done with output "
                        f"{row.output_sha256}, not {digest}"
                    )
                return
            row.status = StageStatus.DONE
            row.finished_at = _now()
            row.output_sha256 = digest

        self._transaction(work)

    def fail_stage(self, round_pk: int, stage: str, error: str) -> None:
        """Mark a begun stage failed with its error text; the next :meth:`begin_stage` retries it.

        Raises:
            StageError: the stage was never begun or is done.
        """

        def work(session: Session) -> None:
            row = self._stage_row(session, round_pk, stage)
            if row is None or row.status == StageStatus.DONE:
                state = "never begun" if row is None else "done"
                raise StageError(f"cannot fail stage {stage!r} of round {round_pk}: {state}")
            row.status = StageStatus.FAILED
            row.finished_at = _now()
            row.error = error

        self._transaction(work)

    def stage_status(self, round_pk: int, stage: str) -> StageStatus | None:
        """The stage's status; ``None`` if it was never begun."""
        record = self.stage_run(round_pk, stage)
        return record.status if record else None

    def stage_run(self, round_pk: int, stage: str) -> StageRecord | None:
        """A snapshot of the stage's row; ``None`` if it was never begun."""

        def work(session: Session) -> StageRecord | None:
            row = self._stage_row(session, round_pk, stage)
            return _stage_record(row) if row else None

        return self._transaction(work)

    def resume_point(self, round_pk: int, stages: Sequence[str]) -> str | None:
        """The first of ``stages`` (in pipeline order) not done; ``None`` when all are done."""

        def work(session: Session) -> set[str]:
            return set(
                session.scalars(
                    select(StageRun.stage).where(
                        StageRun.round_pk == round_pk, StageRun.status == StageStatus.DONE
                    )
                )
            )

        done = self._transaction(work)
        return next((stage for stage in stages if stage not in done), None)

    # ------------------------------------------------------------------ signatures

    def add_signature(self, round_pk: int, signer: str, digest: str, signature: str) -> bool:
        """Record ``signer``'s signature of ``digest``; ``True`` if new, ``False`` if already there.

        Raises:
            StageError: the same signer already has another signature of the same digest
                (ECDSA signing here is deterministic, RFC 6979, so this is a bug or a forgery).
        """
        signer_ = _hex(signer, "signer address", 20)
        digest_ = _hex(digest, "digest", 32)
        signature_ = _hex(signature, "signature", (64, 65))

        def work(session: Session) -> bool:
            row = session.scalar(
                select(Signature).where(
                    Signature.round_pk == round_pk,
                    Signature.signer == signer_,
                    Signature.digest == digest_,
                )
            )
            if row is not None:
                if row.signature != signature_:
                    raise StageError(
                        f"signer {signer_} already signed {digest_} of round {round_pk} "
                        f"with another signature"
                    )
                return False
            session.add(
                Signature(
                    round_pk=round_pk,
                    signer=signer_,
                    digest=digest_,
                    signature=signature_,
                    created_at=_now(),
                )
            )
            session.flush()
            return True

        return self._transaction(work)

    def signatures(self, round_pk: int, digest: str) -> dict[str, str]:
        """Signer → signature of ``digest`` for the round, in ascending signer order."""
        digest_ = _hex(digest, "digest", 32)

        def work(session: Session) -> dict[str, str]:
            rows = session.execute(
                select(Signature.signer, Signature.signature)
                .where(Signature.round_pk == round_pk, Signature.digest == digest_)
                .order_by(Signature.signer)
            )
            return {signer: signature for signer, signature in rows}

        return self._transaction(work)

    # ------------------------------------------------------------------ submissions

    def record_submission(self, round_pk: int, tx_hash: str, nonce: int) -> None:
        """Record a ``postRound`` transaction *before* broadcasting it; the round becomes ``submitted``.

        Recording the same ``tx_hash`` again for the same round is a no-op (a restart that
        rebroadcasts the same signed transaction); if that transaction was marked ``failed``
        (e.g. never broadcast before a crash, then signed again identically: same nonce, fees
        and calldata give the same hash) it is ``sent`` again.

        Raises:
            StageError: the round already has a ``sent`` or ``confirmed`` submission (never
                submit twice), or ``tx_hash`` belongs to another round.
        """
        tx = _hex(tx_hash, "transaction hash", 32)

        def work(session: Session) -> None:
            same = session.scalar(
                select(Submission).where(Submission.tx_hash == tx).with_for_update()
            )
            if same is not None and same.round_pk != round_pk:
                raise StageError(f"transaction {tx} is recorded for round {same.round_pk}")
            if same is not None and same.status != SubmissionStatus.FAILED:
                return
            live = session.scalar(
                select(Submission).where(
                    Submission.round_pk == round_pk, Submission.status != SubmissionStatus.FAILED
                )
            )
            if live is not None:
                raise StageError(
                    f"round {round_pk} is already submitted in {live.tx_hash} ({live.status}); "
                    "refusing to submit it twice"
                )
            if same is not None:  # revived: the failed record's transaction is sent after all
                same.status, same.error, same.nonce, same.sent_at = (
                    SubmissionStatus.SENT, None, nonce, _now()
                )
            else:
                session.add(
                    Submission(
                        round_pk=round_pk,
                        tx_hash=tx,
                        nonce=nonce,
                        status=SubmissionStatus.SENT,
                        confirmations=0,
                        sent_at=_now(),
                    )
                )
            session.flush()
            round_row = self._round_row(session, round_pk)
            if round_row.status == RoundStatus.PENDING:
                round_row.status = RoundStatus.SUBMITTED
                round_row.updated_at = _now()

        try:
            self._transaction(work, retries=0)
        except IntegrityError as exc:  # a concurrent writer won the uq_submission_live race
            raise StageError(
                f"round {round_pk} was submitted concurrently; refusing to submit it twice"
            ) from exc

    def confirm_submission(self, tx_hash: str, confirmations: int = 1) -> None:
        """Mark a submission confirmed (mined, succeeded) with its current confirmation count.

        Raises:
            StageError: unknown transaction, or one already marked failed.
        """
        tx = _hex(tx_hash, "transaction hash", 32)

        def work(session: Session) -> None:
            row = self._submission_row(session, tx)
            if row.status == SubmissionStatus.FAILED:
                raise StageError(f"transaction {tx} is marked failed")
            row.status = SubmissionStatus.CONFIRMED
            row.confirmations = max(row.confirmations, confirmations)

        self._transaction(work)

    def fail_submission(self, tx_hash: str, error: str | None = None) -> None:
        """Mark a submission failed (reverted or dropped); the round may be submitted again.

        A ``submitted`` round goes back to ``pending``.

        Raises:
            StageError: unknown transaction, or one already confirmed.
        """
        tx = _hex(tx_hash, "transaction hash", 32)

        def work(session: Session) -> None:
            row = self._submission_row(session, tx)
            if row.status == SubmissionStatus.CONFIRMED:
                raise StageError(f"transaction {tx} is confirmed; it cannot fail")
            row.status = SubmissionStatus.FAILED
            row.error = error
            round_row = self._round_row(session, row.round_pk)
            if round_row.status == RoundStatus.SUBMITTED:
                round_row.status = RoundStatus.PENDING
                round_row.updated_at = _now()

        self._transaction(work)

    def live_submission(self, round_pk: int) -> SubmissionRecord | None:
        """The round's ``sent`` or ``confirmed`` submission, if any."""

        def work(session: Session) -> SubmissionRecord | None:
            row = session.scalar(
                select(Submission).where(
                    Submission.round_pk == round_pk, Submission.status != SubmissionStatus.FAILED
                )
            )
            return _submission_record(row) if row else None

        return self._transaction(work)

    @staticmethod
    def _submission_row(session: Session, tx: str) -> Submission:
        row = session.scalar(select(Submission).where(Submission.tx_hash == tx).with_for_update())
        if row is None:
            raise StageError(f"no submission with transaction hash {tx}")
        return row

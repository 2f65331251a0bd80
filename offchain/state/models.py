"""SQLAlchemy 2.0 tables of the oracle's round state.

One :class:`Campaign` per (chain, pool, on-chain campaign id); its :class:`Round` rows; per round
one :class:`StageRun` per stage, the oracle :class:`Signature` rows and the :class:`Submission`
transactions. The schema itself is created by the Alembic migrations in
``offchain/state/migrations`` (never by ``metadata.create_all`` in production): a change here needs
a new revision there.

Hex values (addresses, digests, signatures, transaction hashes) are stored lower-case with their
``0x`` prefix. uint256 values are decimal strings (SQLite's NUMERIC would round them past 2^63).
Times are UTC; SQLite gives them back without a time zone.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Campaign",
    "Round",
    "RoundStatus",
    "Signature",
    "StageRun",
    "StageStatus",
    "Submission",
    "SubmissionStatus",
]


class RoundStatus(enum.StrEnum):
    """Where a round stands, off chain then on chain."""

    PENDING = "pending"
    """Being computed off chain; nothing sent."""
    SUBMITTED = "submitted"
    """``postRound`` sent, not yet confirmed."""
    CHALLENGEABLE = "challengeable"
    """Posted on chain (the contract's ``Pending``): inside its challenge window."""
    FINALIZED = "finalized"
    """Challenge window over; holders can claim."""
    REVOKED = "revoked"
    """Revoked by the guardian; the round id may be posted again with another root."""


class StageStatus(enum.StrEnum):
    """State of one stage of one round."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class SubmissionStatus(enum.StrEnum):
    """State of one submitted transaction."""

    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK on every backend (no PostgreSQL ENUM type to migrate), stored by value.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base of the state tables."""


class Campaign(Base):
    """A payout campaign on one pool of one chain, and the run directory holding its artifacts."""

    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("chain_id", "pool_address", "onchain_campaign_id", name="uq_campaign"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    pool_address: Mapped[str] = mapped_column(String(42))
    onchain_campaign_id: Mapped[str] = mapped_column(String(78))
    """uint256 as a decimal string."""
    run_dir: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Round(Base):
    """One round of a campaign; ``round_id`` is the on-chain (and ``RoundPaths``) round id."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("campaign_id", "round_id", name="uq_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    round_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[RoundStatus] = mapped_column(_enum(RoundStatus, "round_status"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StageRun(Base):
    """The record of one stage of one round: at most one row per (round, stage)."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("round_pk", "stage", name="uq_stage_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_pk: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(64))
    status: Mapped[StageStatus] = mapped_column(_enum(StageStatus, "stage_status"))
    attempts: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(255))
    """``host:pid`` of the process that last began the stage."""
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)


class Signature(Base):
    """An oracle signer's EIP-712 signature of a round's digest."""

    __tablename__ = "signatures"
    __table_args__ = (UniqueConstraint("round_pk", "signer", "digest", name="uq_signature"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_pk: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    signer: Mapped[str] = mapped_column(String(42))
    digest: Mapped[str] = mapped_column(String(66))
    signature: Mapped[str] = mapped_column(String(132))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Submission(Base):
    """A ``postRound`` transaction. At most one non-failed row per round (partial unique index)."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("tx_hash", name="uq_submission_tx"),
        Index(
            "uq_submission_live",
            "round_pk",
            unique=True,
            sqlite_where=text("status != 'failed'"),
            postgresql_where=text("status != 'failed'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_pk: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    tx_hash: Mapped[str] = mapped_column(String(66))
    nonce: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[SubmissionStatus] = mapped_column(_enum(SubmissionStatus, "submission_status"))
    confirmations: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)

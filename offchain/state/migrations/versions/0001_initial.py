"""Initial schema: campaigns, rounds, stage_runs, signatures, submissions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    # Must match offchain.state.models._enum: VARCHAR(16) + CHECK, no native ENUM type.
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("pool_address", sa.String(42), nullable=False),
        sa.Column("onchain_campaign_id", sa.String(78), nullable=False),
        sa.Column("run_dir", sa.String(4096), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("chain_id", "pool_address", "onchain_campaign_id", name="uq_campaign"),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "campaign_id",
            sa.Integer(),
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _enum("round_status", "pending", "submitted", "challengeable", "finalized", "revoked"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "round_id", name="uq_round"),
    )
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "round_pk", sa.Integer(), sa.ForeignKey("rounds.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("status", _enum("stage_status", "started", "done", "failed"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("output_sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("round_pk", "stage", name="uq_stage_run"),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "round_pk", sa.Integer(), sa.ForeignKey("rounds.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("signer", sa.String(42), nullable=False),
        sa.Column("digest", sa.String(66), nullable=False),
        sa.Column("signature", sa.String(132), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("round_pk", "signer", "digest", name="uq_signature"),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "round_pk", sa.Integer(), sa.ForeignKey("rounds.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column(
            "status", _enum("submission_status", "sent", "confirmed", "failed"), nullable=False
        ),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("tx_hash", name="uq_submission_tx"),
    )
    # The "never submit twice" guard: one live (sent or confirmed) submission per round.
    op.create_index(
        "uq_submission_live",
        "submissions",
        ["round_pk"],
        unique=True,
        sqlite_where=sa.text("status != 'failed'"),
        postgresql_where=sa.text("status != 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("uq_submission_live", table_name="submissions")
    op.drop_table("submissions")
    op.drop_table("signatures")
    op.drop_table("stage_runs")
    op.drop_table("rounds")
    op.drop_table("campaigns")

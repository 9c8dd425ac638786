"""referrer sessions

Short-lived tokens for one referrer's own /v1/me… (kept only as a SHA-256 hash), and the name a
referrer chooses to appear under on the leaderboard.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referrer_sessions",
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("referrer_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("created_by_key_id", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_referrer_sessions_program_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"],
            ["referrers.id"],
            name=op.f("fk_referrer_sessions_referrer_id_referrers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrer_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_referrer_sessions_token_hash")),
    )
    with op.batch_alter_table("referrer_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referrer_sessions_referrer_id"), ["referrer_id"], unique=False
        )
    with op.batch_alter_table("referrers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaderboard_name", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrers", schema=None) as batch_op:
        batch_op.drop_column("leaderboard_name")
    with op.batch_alter_table("referrer_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrer_sessions_referrer_id"))
    op.drop_table("referrer_sessions")

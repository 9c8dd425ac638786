"""metrics click heads

A partial index of the referrer rollups: each month's compacted rows of event counts in order
of clicks. The leaderboard by clicks reads the heads of the months a range touches through it
(app.metrics.breakdowns._click_heads) instead of summing every referrer. The triggers write
uncompacted rows only, which the predicate leaves out: the click writer's statements do not
touch it; compaction and the rebuild do.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-04 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLICK_HEADS = "grain = 'month' AND unit = '' AND compacted AND clicks > 0"


def upgrade() -> None:
    op.create_index(
        "ix_metrics_referrer_rollups_click_heads",
        "metrics_referrer_rollups",
        ["program_id", "bucket_start", "clicks"],
        unique=False,
        postgresql_include=["referrer_id"],
        postgresql_where=sa.text(CLICK_HEADS),
        sqlite_where=sa.text(CLICK_HEADS),
    )


def downgrade() -> None:
    op.drop_index("ix_metrics_referrer_rollups_click_heads", table_name="metrics_referrer_rollups")

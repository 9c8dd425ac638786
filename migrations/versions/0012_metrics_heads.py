"""metrics heads

Partial indexes of the referrer rollups, one per measure the leaderboard orders by (clicks,
referrals, conversions, revenue): each month's compacted rows of event counts in order of that
measure. The leaderboard ordered by one reads the heads of the months a range touches through them
(app.metrics.breakdowns._heads) instead of summing every referrer. The triggers write
uncompacted rows only, which the predicates leave out: the statements of the click writer and
of purchases do not touch these indexes; compaction and the rebuild do.

The heads bound what a referrer outside them can have in part of a month by what they have in
the whole month: every event must add zero or more. For revenue (amount less refunds) the
refund service refuses a refund larger than what is left; on Postgres a CHECK constraint
(refunded_amount <= amount, added NOT VALID then validated, so writes go on meanwhile) makes
it a rule of the database too.

On Postgres, ix_clicks_referrer_id_occurred_at also carries program_id, is_bot and
is_duplicate, so the raw edges of a range (a referrer's clicks in a partial day) are read from
the index alone. It is built concurrently (clicks keep being written meanwhile) and replaces
the old one: the click writer maintains as many indexes as before.

Revision ID: 0012
Revises: 0015
Create Date: 2026-12-04 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MEASURES = ("clicks", "referrals", "conversions", "revenue")
REFUND_CHECK = "ck_conversions_refund_within_amount"


def predicate(measure: str) -> str:
    return f"grain = 'month' AND unit = '' AND compacted AND {measure} > 0"


CLICKS_INDEX = "ix_clicks_referrer_id_occurred_at"


def _replace_clicks_index(include: str) -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {CLICKS_INDEX}_new")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {CLICKS_INDEX}_new ON clicks (referrer_id, occurred_at)"
            + include
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {CLICKS_INDEX}")
        op.execute(f"ALTER INDEX {CLICKS_INDEX}_new RENAME TO {CLICKS_INDEX}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE conversions ADD CONSTRAINT {REFUND_CHECK} "
            "CHECK (refunded_amount <= amount) NOT VALID"
        )
        op.execute(f"ALTER TABLE conversions VALIDATE CONSTRAINT {REFUND_CHECK}")
        _replace_clicks_index(" INCLUDE (program_id, is_bot, is_duplicate)")
    for measure in MEASURES:
        op.create_index(
            f"ix_metrics_referrer_rollups_heads_{measure}",
            "metrics_referrer_rollups",
            ["program_id", "bucket_start", measure],
            unique=False,
            postgresql_include=["referrer_id"],
            postgresql_where=sa.text(predicate(measure)),
            sqlite_where=sa.text(predicate(measure)),
        )


def downgrade() -> None:
    for measure in MEASURES:
        op.drop_index(
            f"ix_metrics_referrer_rollups_heads_{measure}", table_name="metrics_referrer_rollups"
        )
    if op.get_bind().dialect.name == "postgresql":
        _replace_clicks_index("")
        op.execute(f"ALTER TABLE conversions DROP CONSTRAINT IF EXISTS {REFUND_CHECK}")

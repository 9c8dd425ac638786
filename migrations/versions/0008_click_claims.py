"""click claims: unique clicks decided in the database

One row per code and visitor key (visitor id or IP hash): which click holds the visitor's
uniqueness and until when the visitor is seen (app.tracking.models.ClickClaim). Taken over from
the clicks of the last duplicate window, so that a visitor who clicked just before the upgrade
is still a duplicate just after it; the window is REFERRAL_DUPLICATE_CLICK_WINDOW_HOURS, as the
service runs with it (24 by default).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:00:00.000000
"""

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_CLICK = '00000000-0000-0000-0000-000000000000'  # app.tracking.click_writer.NO_CLICK
KEYS = (('visitor', 'visitor_id'), ('ip', 'ip_hash'))


def upgrade() -> None:
    op.create_table('click_claims',
    sa.Column('code_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('claimed_by', sa.Uuid(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('code_id', 'kind', 'value', name=op.f('pk_click_claims'))
    )
    with op.batch_alter_table('click_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_click_claims_seen_until'), ['seen_until'], unique=False)
    _take_over_recent_clicks()


def _take_over_recent_clicks() -> None:
    hours = int(os.environ.get('REFERRAL_DUPLICATE_CLICK_WINDOW_HOURS', '24'))
    since = datetime.now(UTC) - timedelta(hours=hours)
    bind = op.get_bind()
    for kind, column in KEYS:
        if bind.dialect.name == 'postgresql':
            op.execute(sa.text(f"""
                INSERT INTO click_claims (code_id, kind, value, claimed_by, claimed_at, seen_until)
                SELECT code_id, '{kind}', {column}, '{NO_CLICK}'::uuid, max(occurred_at),
                       max(occurred_at) + make_interval(hours => :hours)
                FROM clicks WHERE {column} IS NOT NULL AND occurred_at >= :since
                GROUP BY code_id, {column}
            """).bindparams(hours=hours, since=since))
            continue
        # SQLite has no interval arithmetic on stored times: add the window here (small data).
        clicks = sa.table(
            'clicks',
            sa.column('code_id', sa.Uuid()),
            sa.column(column, sa.String()),
            sa.column('occurred_at', sa.DateTime(timezone=True)),
        )
        latest = sa.func.max(clicks.c.occurred_at, type_=sa.DateTime(timezone=True))
        rows = bind.execute(
            sa.select(clicks.c.code_id, clicks.c[column], latest)
            .where(clicks.c[column].is_not(None), clicks.c.occurred_at >= since)
            .group_by(clicks.c.code_id, clicks.c[column])
        ).all()
        claims = sa.table(
            'click_claims',
            sa.column('code_id', sa.Uuid()),
            sa.column('kind', sa.String()),
            sa.column('value', sa.String()),
            sa.column('claimed_by', sa.Uuid()),
            sa.column('claimed_at', sa.DateTime(timezone=True)),
            sa.column('seen_until', sa.DateTime(timezone=True)),
        )
        if rows:
            op.bulk_insert(claims, [
                {
                    'code_id': code_id,
                    'kind': kind,
                    'value': value,
                    'claimed_by': UUID(NO_CLICK),
                    'claimed_at': last,
                    'seen_until': last + timedelta(hours=hours),
                }
                for code_id, value, last in rows
            ])


def downgrade() -> None:
    with op.batch_alter_table('click_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_click_claims_seen_until'))

    op.drop_table('click_claims')

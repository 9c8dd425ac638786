"""auto-enrol buyers

The programs' `auto_enrol_buyers` setting: every recorded purchase makes its buyer a referrer
of the program (app.referrers.enrolment). Off for every existing program.

Revision ID: 0016
Revises: 0010
Create Date: 2026-12-04 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'auto_enrol_buyers', sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_column('auto_enrol_buyers')

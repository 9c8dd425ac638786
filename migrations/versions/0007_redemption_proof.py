"""redemption proof

A program's `redemption_proof` (what a publishable key's redemption must show: a click on the
code or a customer token) and the programs' customer token secrets.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, also on SQLite: a batch copy of `programs` would have to drop the
    # table every other table references.
    op.add_column(
        'programs',
        sa.Column('redemption_proof', sa.String(length=16), nullable=False, server_default='none'),
    )
    op.create_table('customer_token_secrets',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_customer_token_secrets_program_id_programs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_token_secrets'))
    )
    op.create_index(op.f('ix_customer_token_secrets_program_id'), 'customer_token_secrets', ['program_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_customer_token_secrets_program_id'), table_name='customer_token_secrets')
    op.drop_table('customer_token_secrets')
    op.drop_column('programs', 'redemption_proof')  # SQLite 3.35+ drops a column in place

"""lifecycle emails

The email outbox (one row per event, recipient and kind), the suppression list (unsubscribed
and erased addresses, as SHA-256), the programs' own email templates, and the programs'
reminder setting.

Revision ID: 0010
Revises: 0011
Create Date: 2026-12-03 14:39:10.526052
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('email_suppressions',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_email_suppressions_program_id_programs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_suppressions')),
    sa.UniqueConstraint('program_id', 'address_hash', name=op.f('uq_email_suppressions_program_id_address_hash'))
    )
    op.create_table('email_templates',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('text_body', sa.Text(), nullable=True),
    sa.Column('html_body', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_email_templates_program_id_programs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_templates')),
    sa.UniqueConstraint('program_id', 'kind', name=op.f('uq_email_templates_program_id_kind'))
    )
    op.create_table('email_messages',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('referrer_id', sa.Uuid(), nullable=True),
    sa.Column('recipient', sa.String(length=16), nullable=False),
    sa.Column('to_address', sa.String(length=320), nullable=True),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sending_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('smtp_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=200), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_email_messages_program_id_programs')),
    sa.ForeignKeyConstraint(['referrer_id'], ['referrers.id'], name=op.f('fk_email_messages_referrer_id_referrers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_messages')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_email_messages_dedupe_key'))
    )
    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.create_index('ix_email_messages_program_id_address_hash', ['program_id', 'address_hash'], unique=False)
        batch_op.create_index('ix_email_messages_program_id_created_at', ['program_id', 'created_at'], unique=False)
        batch_op.create_index('ix_email_messages_referrer_id_kind_created_at', ['referrer_id', 'kind', 'created_at'], unique=False)
        batch_op.create_index('ix_email_messages_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)

    # In place on SQLite too (ADD/DROP COLUMN, SQLite 3.35+): recreating programs would trip the
    # foreign keys that point at it.
    with op.batch_alter_table('programs', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('reminder_after_days', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('programs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('reminder_after_days')

    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_email_messages_status_next_attempt_at')
        batch_op.drop_index('ix_email_messages_referrer_id_kind_created_at')
        batch_op.drop_index('ix_email_messages_program_id_created_at')
        batch_op.drop_index('ix_email_messages_program_id_address_hash')

    op.drop_table('email_messages')
    op.drop_table('email_templates')
    op.drop_table('email_suppressions')

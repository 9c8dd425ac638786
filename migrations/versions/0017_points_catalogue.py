"""points catalogue and redeemed coupons

Items a program's referrers may spend points on, and their redemptions (a negative points
entry and the item's reward entry in the ledger, which therefore may have no conversion and no
rule); fulfilments record when an order used their coupon, and what it took off.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('points_items',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=20, scale=4), nullable=False),
    sa.Column('fulfilment', sa.String(length=16), nullable=False),
    sa.Column('fulfilment_provider', sa.String(length=16), nullable=True),
    sa.Column('coupon_percent', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_points_items_program_id_programs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_items'))
    )
    with op.batch_alter_table('points_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_items_program_id'), ['program_id'], unique=False)

    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.alter_column('conversion_id', existing_type=sa.Uuid(), nullable=True)
        batch_op.alter_column('rule_id', existing_type=sa.Uuid(), nullable=True)
        batch_op.alter_column('rule_version', existing_type=sa.Integer(), nullable=True)

    op.create_table('points_redemptions',
    sa.Column('program_id', sa.Uuid(), nullable=False),
    sa.Column('referrer_id', sa.Uuid(), nullable=False),
    sa.Column('item_id', sa.Uuid(), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('debit_id', sa.Uuid(), nullable=False),
    sa.Column('reward_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['debit_id'], ['rewards.id'], name=op.f('fk_points_redemptions_debit_id_rewards')),
    sa.ForeignKeyConstraint(['item_id'], ['points_items.id'], name=op.f('fk_points_redemptions_item_id_points_items')),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_points_redemptions_program_id_programs')),
    sa.ForeignKeyConstraint(['referrer_id'], ['referrers.id'], name=op.f('fk_points_redemptions_referrer_id_referrers')),
    sa.ForeignKeyConstraint(['reward_id'], ['rewards.id'], name=op.f('fk_points_redemptions_reward_id_rewards')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_redemptions')),
    sa.UniqueConstraint('debit_id', name=op.f('uq_points_redemptions_debit_id')),
    sa.UniqueConstraint('reward_id', name=op.f('uq_points_redemptions_reward_id'))
    )
    with op.batch_alter_table('points_redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_redemptions_item_id'), ['item_id'], unique=False)
        batch_op.create_index('ix_points_redemptions_referrer_id_created_at', ['referrer_id', 'created_at'], unique=False)

    with op.batch_alter_table('fulfilments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('redeemed_amount', sa.Numeric(precision=20, scale=4), nullable=True))
        batch_op.add_column(sa.Column('redeemed_order', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_fulfilments_program_id_fulfilled_at', ['program_id', 'fulfilled_at'], unique=False)
        batch_op.create_index('ix_fulfilments_reference', ['reference'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fulfilments', schema=None) as batch_op:
        batch_op.drop_index('ix_fulfilments_reference')
        batch_op.drop_index('ix_fulfilments_program_id_fulfilled_at')
        batch_op.drop_column('redeemed_order')
        batch_op.drop_column('redeemed_amount')
        batch_op.drop_column('redeemed_at')

    # The entries of points redemptions have no conversion: they go with the catalogue.
    op.execute('DELETE FROM points_redemptions')
    op.execute(
        'DELETE FROM fulfilments WHERE reward_id IN (SELECT id FROM rewards WHERE conversion_id IS NULL)'
    )
    op.execute('DELETE FROM rewards WHERE conversion_id IS NULL')
    with op.batch_alter_table('points_redemptions', schema=None) as batch_op:
        batch_op.drop_index('ix_points_redemptions_referrer_id_created_at')
        batch_op.drop_index(batch_op.f('ix_points_redemptions_item_id'))

    op.drop_table('points_redemptions')
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.alter_column('rule_version', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('rule_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.alter_column('conversion_id', existing_type=sa.Uuid(), nullable=False)

    with op.batch_alter_table('points_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_items_program_id'))

    op.drop_table('points_items')

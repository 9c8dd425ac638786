"""Which ledger entries a batch of a method takes: one condition, for the batches and the
charities' running totals."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import aliased

from app.rewards.models import Reward
from app.rewards.states import EntryType, FulfilmentMethod, Recipient, RewardStatus


def due(
    program_id: UUID, method: FulfilmentMethod, currency: str, cutoff: datetime
) -> ColumnElement[bool]:
    """Entries owed to referrers by `method`, in no batch, approved by `cutoff` (a pending
    reward whose hold ended by then counts: the batch approves it)."""
    adjusted = aliased(Reward)
    of_method = select(adjusted.id).where(
        adjusted.program_id == program_id, adjusted.fulfilment_method == method
    )
    return and_(
        Reward.program_id == program_id,
        Reward.recipient == Recipient.REFERRER,
        Reward.unit == currency,
        Reward.payout_batch_id.is_(None),
        or_(
            and_(Reward.entry_type == EntryType.REWARD, Reward.fulfilment_method == method),
            and_(Reward.entry_type == EntryType.CLAWBACK, Reward.adjusts_reward_id.in_(of_method)),
        ),
        or_(
            and_(Reward.status == RewardStatus.APPROVED, Reward.approved_at <= cutoff),
            and_(
                Reward.status == RewardStatus.PENDING,
                Reward.entry_type == EntryType.REWARD,
                Reward.hold_until <= cutoff,
            ),
        ),
    )

"""Spending points on a catalogue item: race-safe, never below zero, delivered exactly once.

A redemption writes, in the request's transaction: a negative points entry (`spend`, born
approved, so it nets out of the approved points that are spendable, as a clawback nets out of
a payout), the item's reward entry (approved, in the program's currency, with the item's
method) and — for a method issued by a provider — its fulfilment job, which the dispatcher
issues like any other reward's (the reward's id is the idempotency key at the provider).

Spendable points are the referrer's approved points entries (pending ones past their hold
count: they read approved): earned, released and not yet spent, net of clawbacks. Two spends
of one referrer serialize on the referrer's row (locked first, as the purchase path locks
it), so the second sees the first's entry and the balance never goes below zero by spending.
A refund that reverses an approved points reward after its points were spent can still leave
the balance negative: later points net it out.
"""

from datetime import datetime
from decimal import Decimal
from uuid import UUID, uuid4

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, ReferrerPrincipal
from app.core.db import utcnow
from app.core.errors import AppError
from app.fulfilment import jobs as fulfilment
from app.points.models import PointsItem, PointsRedemption
from app.points.schemas import MyPoints, RedemptionCreate, RedemptionOut
from app.points.service import ItemNotFound, item_out
from app.programs.models import Program
from app.referrers.models import Referrer
from app.referrers.service import get_referrer
from app.rewards.models import Reward
from app.rewards.schemas import RewardOut
from app.rewards.service import POINTS, status_as_read
from app.rewards.states import EntryType, Recipient, RewardStatus, RuleKind
from app.webhooks.outbox import emit_rewards


class InsufficientPoints(AppError):
    status, code, title = 409, "insufficient_points", "Not enough points for that item"


class ItemInactive(AppError):
    status, code, title = 409, "points_item_inactive", "The catalogue item is not available"


REDEEM_ERRORS: tuple[type[AppError], ...] = (ItemNotFound, ItemInactive, InsufficientPoints)


async def spendable_points(session: AsyncSession, referrer_id: UUID, now: datetime) -> int:
    """The referrer's approved points (as a read shows them), net of spends and clawbacks."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Reward.amount), 0)).where(
            Reward.referrer_id == referrer_id,
            Reward.recipient == Recipient.REFERRER,
            Reward.unit == POINTS,
            status_as_read(now) == RewardStatus.APPROVED,
        )
    )
    return int(Decimal(total or 0))


async def redeem(
    session: AsyncSession, principal: Principal, referrer_id: UUID, data: RedemptionCreate
) -> RedemptionOut:
    """Spend the item's points for the referrer; 409 insufficient_points past the balance."""
    referrer, program = await get_referrer(session, principal, referrer_id)
    # Whoever may see the referrer may buy from the referrer's program's catalogue; another
    # program's item reads as one that does not exist.
    item = await session.scalar(
        select(PointsItem).where(PointsItem.id == data.item_id, PointsItem.program_id == program.id)
    )
    if item is None:
        raise ItemNotFound()
    if not item.active:
        raise ItemInactive("The item was withdrawn from the catalogue.")
    # The referrer's lock serializes their spends (NO KEY UPDATE: inserts referencing the
    # referrer, and the purchase path's own lock, queue behind it only as long as this runs).
    await session.scalar(
        select(Referrer.id).where(Referrer.id == referrer.id).with_for_update(key_share=True)
    )
    now = utcnow()
    balance = await spendable_points(session, referrer.id, now)
    if balance < item.points:
        raise InsufficientPoints(
            f"The item costs {item.points} points; the referrer has {balance} to spend."
        )
    redemption_id = uuid4()
    debit = _entry(referrer, program, now, EntryType.SPEND, RuleKind.POINTS, POINTS)
    debit.amount = debit.original_amount = Decimal(-item.points)
    debit.payout_reference = f"points redemption {redemption_id}"
    reward = _entry(referrer, program, now, EntryType.REWARD, RuleKind.FIXED, program.currency)
    reward.amount = reward.original_amount = item.amount
    reward.fulfilment_method = item.fulfilment
    session.add_all([debit, reward])
    await session.flush()
    session.add(
        PointsRedemption(
            id=redemption_id,
            created_at=now,
            program_id=program.id,
            referrer_id=referrer.id,
            item_id=item.id,
            points=item.points,
            debit_id=debit.id,
            reward_id=reward.id,
        )
    )
    # In this transaction: the job exists exactly when the spend does; issued after commit.
    await fulfilment.create_for(session, [(reward, item)], now)
    await emit_rewards(session, "reward.created", [debit, reward])
    await session.flush()
    briefs = await fulfilment.briefs_of(session, [reward])
    return RedemptionOut(
        id=redemption_id,
        program_id=program.id,
        referrer_id=referrer.id,
        item=item_out(item, program),
        points=item.points,
        points_left=balance - item.points,
        debit=RewardOut.model_validate(debit),
        reward=RewardOut.model_validate(reward).model_copy(
            update={"fulfilment": briefs.get(reward.id)}
        ),
        created_at=now,
    )


def _entry(
    referrer: Referrer,
    program: Program,
    now: datetime,
    entry_type: EntryType,
    kind: RuleKind,
    unit: str,
) -> Reward:
    """An approved entry of the referrer that no purchase and no rule paid."""
    return Reward(
        id=uuid4(),
        created_at=now,
        program_id=program.id,
        conversion_id=None,
        rule_id=None,
        rule_version=None,
        referrer_id=referrer.id,
        recipient=Recipient.REFERRER,
        recipient_id=referrer.external_id,
        entry_type=entry_type,
        kind=kind,
        unit=unit,
        status=RewardStatus.APPROVED,
        hold_until=now,
        approved_at=now,
    )


async def my_points(session: AsyncSession, principal: ReferrerPrincipal) -> MyPoints:
    """The session's referrer's spendable points and the program's active catalogue."""
    referrer, program = await get_referrer(session, principal, principal.referrer_id)
    items = await session.scalars(
        select(PointsItem)
        .where(PointsItem.program_id == program.id, PointsItem.active.is_(True))
        .order_by(PointsItem.points, PointsItem.created_at)
    )
    return MyPoints(
        points=await spendable_points(session, referrer.id, utcnow()),
        items=[item_out(item, program) for item in items],
    )

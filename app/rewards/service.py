"""The reward ledger: what a conversion pays, approvals, payouts, reversals and clawbacks."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Protocol, cast
from uuid import UUID, uuid4

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    distinct,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion, ConversionStatus
from app.core.access import Principal, get_visible, scoped
from app.core.db import StrEnumText, is_postgres, utcnow
from app.core.errors import AppError
from app.core.money import quantize
from app.core.pagination import PageParams, paginate
from app.fulfilment import jobs as fulfilment
from app.programs.models import Program
from app.referrers.models import Referrer
from app.rewards.models import ActiveRule, Reward
from app.rewards.schemas import Balance, BalanceLine, FulfilmentBrief, RewardOut
from app.rewards.states import (
    Action,
    EntryType,
    Recipient,
    RewardStatus,
    RuleKind,
    Trigger,
    next_status,
    reads_as,
    statuses_allowing,
)
from app.tracking.models import Referral
from app.webhooks.outbox import emit_reward_ids, emit_rewards

POINTS = "points"
SWEEP_BATCH = 1000


class RewardNotFound(AppError):
    status, code, title = 404, "reward_not_found", "Reward not found"


class RewardInBatch(AppError):
    status, code, title = 409, "reward_in_batch", "The reward is in an open payout batch"


def _not_batched(reward: Reward, verb: str) -> None:
    """A reward of an open batch is settled by the batch: mark it paid or cancel it there."""
    if reward.payout_batch_id is not None and reward.status != RewardStatus.PAID:
        raise RewardInBatch(
            f"The reward is in payout batch {reward.payout_batch_id}: it cannot be {verb} by "
            "itself; mark the batch paid, or cancel the batch first."
        )


class Referred(Protocol):
    """Who a reward pays for: the referrer's id and their id at the merchant."""

    @property
    def id(self) -> UUID: ...

    @property
    def external_id(self) -> str: ...


@dataclass(frozen=True)
class PaidConversion:
    """What the rules look at: the conversion, who referred it, and whether it is the first."""

    conversion: Conversion
    program: Program
    referrer: Referred
    referral: Referral
    is_first_purchase: bool


async def create_rewards(
    session: AsyncSession, rules: Sequence[ActiveRule], paid: PaidConversion, now: datetime
) -> list[Reward]:
    """Apply every active rule to an attributed conversion; the caller holds the referrer lock.

    The rewards are written by one INSERT (and are not read back): the returned objects are
    not in the session.
    """
    conversion = paid.conversion
    rows: list[dict[str, Any]] = []
    paid_by: list[tuple[Reward, ActiveRule]] = []
    successful_referrals: int | None = None
    capped = [rule.id for rule in rules if rule.max_rewards_per_referrer is not None]
    given = await rewards_given_by_rule(session, paid.referrer.id, capped)
    for rule in rules:
        if rule.trigger == Trigger.FIRST_PURCHASE and not paid.is_first_purchase:
            continue
        if rule.min_order_amount is not None and conversion.amount < rule.min_order_amount:
            continue
        cap = rule.max_rewards_per_referrer
        if cap is not None and given.get(rule.id, 0) >= cap:
            continue
        values: dict[str, Any] = {
            "amount": rule.amount,
            "percent": rule.percent,
            "points": rule.points,
        }
        if rule.tiers and rule.recipient == Recipient.REFERRER:
            if successful_referrals is None:
                successful_referrals = await count_successful_referrals(session, paid.referrer.id)
            values = _tier_values(rule.tiers, successful_referrals) or values
        value, unit = _reward_value(rule.kind, values, conversion)
        if value <= 0:
            continue
        hold_until = conversion.occurred_at + timedelta(days=rule.hold_days)
        due = hold_until <= now
        row: dict[str, Any] = {
            "id": uuid4(),
            "created_at": now,
            "program_id": conversion.program_id,
            "conversion_id": conversion.id,
            "rule_id": rule.id,
            "rule_version": rule.version,
            "referrer_id": paid.referrer.id,
            "recipient": rule.recipient,
            "recipient_id": (
                paid.referrer.external_id
                if rule.recipient == Recipient.REFERRER
                else paid.referral.customer_id
            ),
            "entry_type": EntryType.REWARD,
            "adjusts_reward_id": None,
            "kind": rule.kind,
            "fulfilment_method": rule.fulfilment,
            "unit": unit,
            "amount": value,
            "original_amount": value,
            # Born pending, and released at once when its hold is already over.
            "status": (
                next_status(EntryType.REWARD, RewardStatus.PENDING, Action.RELEASE)
                if due
                else RewardStatus.PENDING
            ),
            "hold_until": hold_until,
            "approved_at": now if due else None,
            "paid_at": None,
            "payout_reference": None,
            "reversed_at": None,
            "reversal_reason": None,
        }
        rows.append(row)
        paid_by.append((Reward(**row), rule))
    if rows:
        # One statement (one run of the rollup trigger) whatever the number of rewards: the
        # driver's multi-row INSERT (insertmanyvalues), compiled once per process.
        table = cast(Table, Reward.__table__)
        await session.execute(insert(table).returning(table.c.id), rows)
    rewards = [reward for reward, _ in paid_by]
    # In this transaction: a reward approved at birth is issued once this purchase commits.
    await fulfilment.create_for(session, paid_by, now)
    await emit_rewards(session, "reward.created", rewards)
    return rewards


def _reward_value(
    kind: RuleKind, values: dict[str, Any], conversion: Conversion
) -> tuple[Decimal, str]:
    if kind == RuleKind.POINTS:
        return Decimal(int(values["points"])), POINTS
    if kind == RuleKind.FIXED:
        return Decimal(values["amount"]), conversion.currency
    share = conversion.amount * Decimal(values["percent"]) / 100
    return quantize(share, conversion.currency), conversion.currency


def _tier_values(
    tiers: Sequence[dict[str, Any]], successful_referrals: int
) -> dict[str, Any] | None:
    tier = tier_reached(tiers, successful_referrals)
    if tier is None:
        return None
    return {
        "amount": tier.get("amount"),
        "percent": tier.get("percent"),
        "points": tier.get("points"),
    }


def _counts_toward_cap(referrer_id: UUID) -> ColumnElement[bool]:
    return and_(
        Reward.referrer_id == referrer_id,
        Reward.entry_type == EntryType.REWARD,
        Reward.status != RewardStatus.REVERSED,
    )


async def rewards_given_by_rule(
    session: AsyncSession, referrer_id: UUID, rule_ids: Sequence[UUID]
) -> dict[UUID, int]:
    """The referrer's rewards per rule as `max_rewards_per_referrer` counts them; one statement."""
    if not rule_ids:
        return {}
    rows = await session.execute(
        select(Reward.rule_id, func.count())
        .where(Reward.rule_id.in_(rule_ids), _counts_toward_cap(referrer_id))
        .group_by(Reward.rule_id)
    )
    return {rule_id: int(count) for rule_id, count in rows if rule_id is not None}


# A successful referral: a referral with at least one attributed purchase. Tiers count them
# (count_successful_referrals), and so do the referrer's progress and the leaderboard (app.me).
SUCCESSFUL_REFERRALS = func.count(distinct(Conversion.referral_id))
MAKES_A_REFERRAL_SUCCESSFUL = and_(
    Conversion.status == ConversionStatus.ATTRIBUTED, Conversion.referral_id.is_not(None)
)


async def count_successful_referrals(session: AsyncSession, referrer_id: UUID) -> int:
    """Referrals of the referrer with at least one attributed purchase (this one included)."""
    count = await session.scalar(
        select(SUCCESSFUL_REFERRALS).where(
            Conversion.referrer_id == referrer_id, MAKES_A_REFERRAL_SUCCESSFUL
        )
    )
    return int(count or 0)


def successful_referrals_by_referrer(program_id: UUID) -> Select[UUID | None, int]:
    """(referrer_id, successful_referrals) of every referrer of the program who has any."""
    return (
        select(Conversion.referrer_id, SUCCESSFUL_REFERRALS.label("successful_referrals"))
        .where(Conversion.program_id == program_id, MAKES_A_REFERRAL_SUCCESSFUL)
        .group_by(Conversion.referrer_id)
    )


def tier_reached(
    tiers: Sequence[dict[str, Any]], successful_referrals: int
) -> dict[str, Any] | None:
    """The tier a referrer with that many successful referrals is paid at; None: the base."""
    reached = [tier for tier in tiers if successful_referrals >= int(tier["from_referral"])]
    return max(reached, key=lambda t: int(t["from_referral"])) if reached else None


async def adjust_for_refund(session: AsyncSession, conversion: Conversion, now: datetime) -> None:
    """Bring the conversion's rewards in line with what is left after refunds.

    Percent rewards shrink in proportion to the refunded share; fixed and points rewards go
    only on a full refund. Unpaid rewards change in place (or are reversed at zero); paid ones
    are offset by a negative clawback entry, so the ledger still sums to what is owed.
    """
    rewards = list(
        await session.scalars(
            select(Reward)
            .where(Reward.conversion_id == conversion.id, Reward.entry_type == EntryType.REWARD)
            .order_by(Reward.created_at, Reward.id)
            .with_for_update()
        )
    )
    remaining = conversion.amount - conversion.refunded_amount
    reversed_ids: list[UUID] = []
    for reward in rewards:
        if reward.status == RewardStatus.REVERSED:
            continue
        target = _target_after_refund(reward, remaining, conversion.amount)
        # A reward held by an open payout batch may already be on its way: like a paid one,
        # it is offset by a clawback entry that nets out of the next batch.
        if reward.status != RewardStatus.PAID and reward.payout_batch_id is None:
            if target <= 0:
                _reverse(reward, now, "refund", Action.REFUND)
                reversed_ids.append(reward.id)
            else:
                reward.amount = target
            continue
        clawed = await session.scalar(
            select(func.coalesce(func.sum(Reward.amount), 0)).where(
                Reward.adjusts_reward_id == reward.id, Reward.status != RewardStatus.REVERSED
            )
        )
        delta = target - (reward.amount + Decimal(clawed or 0))
        if delta < 0:
            session.add(
                Reward(
                    created_at=now,
                    program_id=reward.program_id,
                    conversion_id=reward.conversion_id,
                    rule_id=reward.rule_id,
                    rule_version=reward.rule_version,
                    referrer_id=reward.referrer_id,
                    recipient=reward.recipient,
                    recipient_id=reward.recipient_id,
                    entry_type=EntryType.CLAWBACK,
                    adjusts_reward_id=reward.id,
                    kind=reward.kind,
                    unit=reward.unit,
                    amount=delta,
                    original_amount=delta,
                    # Owed back at once: it nets out of the next payout.
                    status=RewardStatus.APPROVED,
                    hold_until=now,
                    approved_at=now,
                )
            )
            # Clawed back in full: an unused coupon is disabled at its provider.
            await fulfilment.clawed_back(session, reward, target, now)
    await session.flush()
    await fulfilment.cancel(session, reversed_ids, now, "reversed by a refund")
    await emit_rewards(session, "reward.reversed", [r for r in rewards if r.reversed_at == now])


def _target_after_refund(reward: Reward, remaining: Decimal, amount: Decimal) -> Decimal:
    if remaining <= 0:
        return Decimal(0)
    if reward.kind != RuleKind.PERCENT:
        return reward.original_amount
    # Multiply before dividing, with room to spare: an exact half cent must round half-even,
    # not be pushed over by a rounded share (0.03 * 0.05 / 0.30 is 0.005, so 0.00).
    with localcontext() as context:
        context.prec = 60
        share = reward.original_amount * remaining / amount
    return quantize(share, reward.unit)


def _reverse(reward: Reward, now: datetime, reason: str, action: Action) -> None:
    reward.status = next_status(reward.entry_type, reward.status, action)
    reward.reversed_at = now
    reward.reversal_reason = reason


async def approve_due(session: AsyncSession, now: datetime) -> int:
    """Approve pending rewards whose hold has ended; rows locked elsewhere are left for later.

    Safe with several replicas: on Postgres the rows are claimed with FOR UPDATE SKIP LOCKED.
    """
    releasable = statuses_allowing(EntryType.REWARD, Action.RELEASE)
    query = select(Reward.id).where(
        Reward.entry_type == EntryType.REWARD,
        Reward.status.in_(releasable),
        Reward.hold_until <= now,
    )
    query = query.limit(SWEEP_BATCH)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    ids = list(await session.scalars(query))
    if not ids:
        return 0
    result = await session.execute(
        update(Reward)
        .where(Reward.id.in_(ids), Reward.status.in_(releasable))
        .values(status=RewardStatus.APPROVED, approved_at=Reward.hold_until)
        .execution_options(synchronize_session=False)
    )
    await fulfilment.release(session, ids, now)
    await emit_reward_ids(session, "reward.approved", ids)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def get_reward(
    session: AsyncSession, principal: Principal, reward_id: UUID, *, for_update: bool = False
) -> Reward:
    query = select(Reward).where(Reward.id == reward_id)
    if for_update:
        query = query.with_for_update()
    query = query.execution_options(populate_existing=True)
    return await get_visible(session, query, principal, RewardNotFound, Reward.program_id)


def status_as_read(now: datetime) -> ColumnElement[RewardStatus]:
    """Reward.status as a read shows it at `now` (see states.reads_as), for filters and sums."""
    releasable = statuses_allowing(EntryType.REWARD, Action.RELEASE)
    due = and_(
        Reward.entry_type == EntryType.REWARD,
        Reward.status.in_(releasable),
        Reward.hold_until <= now,
    )
    released = next_status(EntryType.REWARD, RewardStatus.PENDING, Action.RELEASE)
    return type_coerce(
        case((due, released.value), else_=Reward.status), StrEnumText(RewardStatus, 16)
    )


def reward_out(reward: Reward, now: datetime, delivery: FulfilmentBrief | None = None) -> RewardOut:
    """The entry as a read shows it: a reward past its hold reads approved since hold_until."""
    out = RewardOut.model_validate(reward).model_copy(update={"fulfilment": delivery})
    shown = reads_as(reward.entry_type, reward.status, reward.hold_until, now)
    if shown != reward.status:
        out = out.model_copy(update={"status": shown, "approved_at": reward.hold_until})
    return out


async def _answer(session: AsyncSession, reward: Reward) -> RewardOut:
    """A reward just changed, with its fulfilment."""
    briefs = await fulfilment.briefs_of(session, [reward])
    return RewardOut.model_validate(reward).model_copy(update={"fulfilment": briefs.get(reward.id)})


async def approve(session: AsyncSession, principal: Principal, reward_id: UUID) -> RewardOut:
    """pending → approved, before the hold ends; its fulfilment (if any) becomes due."""
    reward = await get_reward(session, principal, reward_id, for_update=True)
    reward.status = next_status(reward.entry_type, reward.status, Action.APPROVE)
    reward.approved_at = utcnow()
    await session.flush()
    await fulfilment.release(session, [reward.id], reward.approved_at)
    await emit_rewards(session, "reward.approved", [reward])
    return await _answer(session, reward)


async def mark_paid(
    session: AsyncSession, principal: Principal, reward_id: UUID, payout_reference: str | None
) -> RewardOut:
    """approved → paid (a pending reward whose hold has ended counts as approved).

    Paid by hand: a fulfilment not yet issued is cancelled (one that is out is taken back).
    """
    reward = await get_reward(session, principal, reward_id, for_update=True)
    _not_batched(reward, "paid")
    now = utcnow()
    if reward.status == RewardStatus.PENDING and reward.hold_until <= now:
        reward.status = next_status(reward.entry_type, reward.status, Action.RELEASE)
        reward.approved_at = reward.hold_until
    reward.status = next_status(reward.entry_type, reward.status, Action.PAY)
    reward.paid_at = now
    reward.payout_reference = payout_reference
    await session.flush()
    await fulfilment.cancel(session, [reward.id], now, "paid by hand")
    await emit_rewards(session, "reward.paid", [reward])
    return await _answer(session, reward)


async def reverse(
    session: AsyncSession, principal: Principal, reward_id: UUID, reason: str
) -> RewardOut:
    """pending or approved → reversed; a paid reward is clawed back by a refund instead.

    Its fulfilment, not yet issued, is cancelled in the same transaction: nothing is issued.
    """
    reward = await get_reward(session, principal, reward_id, for_update=True)
    _not_batched(reward, "reversed")
    now = utcnow()
    _reverse(reward, now, reason, Action.REVERSE)
    await session.flush()
    await fulfilment.cancel(session, [reward.id], now, f"reversed: {reason}")
    await emit_rewards(session, "reward.reversed", [reward])
    return await _answer(session, reward)


@dataclass(frozen=True)
class RewardFilters:
    program_id: UUID | None = None
    referrer_id: UUID | None = None
    conversion_id: UUID | None = None
    status: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _filtered(principal: Principal, filters: RewardFilters, now: datetime) -> Select[Any]:
    query = scoped(select(Reward), principal, Reward.program_id, Reward.referrer_id)
    conditions = [
        Reward.program_id == filters.program_id if filters.program_id else None,
        Reward.referrer_id == filters.referrer_id if filters.referrer_id else None,
        Reward.conversion_id == filters.conversion_id if filters.conversion_id else None,
        status_as_read(now) == filters.status if filters.status else None,
        Reward.created_at >= filters.created_from if filters.created_from else None,
        Reward.created_at < filters.created_to if filters.created_to else None,
    ]
    return query.where(*(condition for condition in conditions if condition is not None))


async def list_rewards(
    session: AsyncSession, principal: Principal, filters: RewardFilters, params: PageParams
) -> tuple[list[RewardOut], str | None]:
    """Ledger entries matching the filters, as a read shows them (states.reads_as)."""
    now = utcnow()
    rows, next_cursor = await paginate(session, _filtered(principal, filters, now), Reward, params)
    briefs = await fulfilment.briefs_of(session, rows)
    return [reward_out(row, now, briefs.get(row.id)) for row in rows], next_cursor


async def rewards_of(
    session: AsyncSession, conversion_ids: Sequence[UUID]
) -> dict[UUID, list[RewardOut]]:
    """The ledger entries of each conversion, oldest first, with their fulfilments: two
    statements whatever the number of conversions."""
    now = utcnow()
    found: dict[UUID, list[RewardOut]] = {conversion_id: [] for conversion_id in conversion_ids}
    if not found:
        return found
    rows = list(
        await session.scalars(
            select(Reward)
            .where(Reward.conversion_id.in_(found))
            .order_by(Reward.created_at, Reward.id)
            .execution_options(populate_existing=True)
        )
    )
    briefs = await fulfilment.briefs_of(session, rows)
    for row in rows:
        assert row.conversion_id is not None  # chosen by conversion
        found[row.conversion_id].append(reward_out(row, now, briefs.get(row.id)))
    return found


async def rewards_out(
    session: AsyncSession, rewards: Sequence[Reward], now: datetime
) -> list[RewardOut]:
    """Rewards just written, as `rewards_of` answers them (oldest first, with fulfilments),
    without reading them back."""
    ordered = sorted(rewards, key=lambda reward: (reward.created_at, reward.id))
    briefs = await fulfilment.briefs_of(session, ordered)
    return [reward_out(reward, now, briefs.get(reward.id)) for reward in ordered]


async def balance(
    session: AsyncSession, referrer: Referrer, now: datetime | None = None
) -> Balance:
    """Per unit (currency or points): pending, approved, paid, owed and payable."""
    shown = status_as_read(now or utcnow())
    rows = await session.execute(
        select(Reward.unit, shown, func.sum(Reward.amount))
        .where(Reward.referrer_id == referrer.id, Reward.recipient == Recipient.REFERRER)
        .group_by(Reward.unit, shown)
    )
    totals: dict[str, dict[str, Decimal]] = {}
    for unit, status, amount in rows:
        totals.setdefault(unit, {})[status] = Decimal(amount or 0)
    lines = []
    for unit in sorted(totals):
        by_status = totals[unit]
        pending = _money(by_status.get("pending"), unit)
        approved = _money(by_status.get("approved"), unit)
        lines.append(
            BalanceLine(
                unit=unit,
                pending=pending,
                approved=approved,
                paid=_money(by_status.get("paid"), unit),
                owed=pending + approved,
                payable=approved,
            )
        )
    return Balance(referrer_id=referrer.id, balances=lines)


def _money(amount: Decimal | None, unit: str) -> Decimal:
    if unit == POINTS:
        return Decimal(int(amount or 0))
    return quantize(amount or Decimal(0), unit)

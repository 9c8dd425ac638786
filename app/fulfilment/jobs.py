"""What the ledger asks of fulfilment, inside its own transaction (the fulfilment outbox).

app.rewards calls these where rewards are created, approved, reversed, paid by hand and
clawed back, so that a job exists exactly when its approval was committed and is cancelled
with the reversal that makes it moot. Rule checks against the program's providers live here
too. The dispatcher (app.fulfilment.dispatcher) does the provider calls later.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from uuid import UUID, uuid4

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.core.money import has_valid_precision, minor_unit
from app.fulfilment.models import Fulfilment, FulfilmentCredential
from app.fulfilment.states import FulfilmentStatus, Move, moved, statuses_allowing
from app.payouts.models import Charity
from app.programs.models import Program
from app.referrers.codes import generate_code
from app.rewards.models import Reward
from app.rewards.schemas import FulfilmentBrief, RuleCreate
from app.rewards.states import (
    PROVIDERS_FOR,
    FulfilmentMethod,
    FulfilmentProvider,
    Recipient,
    RewardStatus,
    RuleKind,
)

# Letters and digits only (Shopify gift card codes allow no more), 3 + 13 characters: 64 bits.
CODE_PREFIX = "REF"
CODE_RANDOM_LENGTH = 13
CODED = frozenset({FulfilmentMethod.COUPON, FulfilmentMethod.GIFT_CARD})
# Paid by app.payouts batches: they stay approved in the ledger until a batch settles them.
PAID_IN_BATCHES = frozenset({FulfilmentMethod.CASH, FulfilmentMethod.DONATION})
# Issued at the provider: the brief shows the code from then on.
ISSUED = frozenset(
    {
        FulfilmentStatus.FULFILLED,
        FulfilmentStatus.REVOKING,
        FulfilmentStatus.REVOKED,
        FulfilmentStatus.KEPT,
        FulfilmentStatus.REVOKE_FAILED,
    }
)


class InvalidFulfilment(AppError):
    status, code, title = 422, "invalid_fulfilment", "The rule's fulfilment is not valid"


class ProviderNotConfigured(AppError):
    status, code, title = (
        422,
        "fulfilment_provider_not_configured",
        "The program has not configured that fulfilment provider",
    )


class ValueNotExpressible(AppError):
    status, code, title = (
        422,
        "fulfilment_value_not_expressible",
        "The provider cannot issue that value",
    )


class Terms(Protocol):
    """How a reward is delivered: a rule's version, or a points catalogue item (app.points)."""

    @property
    def fulfilment(self) -> FulfilmentMethod: ...
    @property
    def fulfilment_provider(self) -> FulfilmentProvider | None: ...
    @property
    def coupon_percent(self) -> Decimal | None: ...


class NoCharities(AppError):
    status, code, title = (
        422,
        "program_has_no_charities",
        "Donation rewards need the program's list of charities",
    )


RULE_ERRORS: tuple[type[AppError], ...] = (
    InvalidFulfilment,
    ProviderNotConfigured,
    ValueNotExpressible,
    NoCharities,
)


def needs_provider(method: FulfilmentMethod) -> bool:
    return bool(PROVIDERS_FOR[method])


async def check_rule(session: AsyncSession, program: Program, rule: RuleCreate) -> None:
    """Refuse a rule whose rewards its provider could not issue, before anything is stored."""
    if rule.fulfilment != FulfilmentMethod.LEDGER and rule.kind == RuleKind.POINTS:
        check_method(rule.fulfilment, rule.fulfilment_provider, rule.coupon_percent)
        raise ValueNotExpressible(
            f"Points cannot be paid as {rule.fulfilment}; they stay in the ledger."
        )
    check_method(rule.fulfilment, rule.fulfilment_provider, rule.coupon_percent)
    if rule.fulfilment in PAID_IN_BATCHES and rule.recipient != Recipient.REFERRER:
        raise InvalidFulfilment(
            f"{rule.fulfilment} rewards are paid to referrers in batches; a referee's reward is "
            "a coupon, store credit or gift card."
        )
    amounts = [rule.amount, *(tier.amount for tier in rule.tiers)]
    await check_terms(session, program, rule, amounts)


def check_method(
    method: FulfilmentMethod, provider: FulfilmentProvider | None, coupon_percent: Decimal | None
) -> None:
    allowed = PROVIDERS_FOR[method]
    if not allowed and provider is not None:
        raise InvalidFulfilment(f"{method} rewards take no fulfilment_provider.")
    if allowed and provider is None:
        names = ", ".join(sorted(allowed))
        raise InvalidFulfilment(f"A {method} rule needs a fulfilment_provider: one of {names}.")
    if provider is not None and provider not in allowed:
        names = ", ".join(sorted(allowed))
        raise InvalidFulfilment(f"{provider} cannot issue {method} rewards; use {names}.")
    if coupon_percent is not None and method != FulfilmentMethod.COUPON:
        raise InvalidFulfilment("coupon_percent is for coupon rules only.")


async def check_terms(
    session: AsyncSession, program: Program, terms: Terms, amounts: Iterable[Decimal | None]
) -> None:
    """Refuse terms (a rule's, a points item's) whose rewards the provider could not issue:
    the wrong provider for the method, a value finer than the currency's minor unit or an
    impossible percent, a provider the program has no credentials for."""
    method, provider = terms.fulfilment, terms.fulfilment_provider
    check_method(method, provider, terms.coupon_percent)
    if method == FulfilmentMethod.LEDGER:
        return
    currency = program.currency
    step = Decimal(1).scaleb(-minor_unit(currency))
    for amount in amounts:
        if amount is not None and not has_valid_precision(amount, currency):
            raise ValueNotExpressible(
                f"{amount} {currency} is finer than the currency's minor unit ({step}): "
                f"a {method} cannot carry it."
            )
    percent = terms.coupon_percent
    if percent is not None and not (0 < percent <= 100 and has_valid_precision(percent, "USD")):
        raise ValueNotExpressible(
            "coupon_percent must be more than 0 and at most 100, with at most 2 decimals."
        )
    if method == FulfilmentMethod.DONATION and not await _has_charities(session, program.id):
        raise NoCharities(
            "Referrers choose the charity their donation rewards go to: add one with "
            f"POST /v1/programs/{program.id}/charities first."
        )
    if provider is not None and not await _configured(session, program.id, provider):
        raise ProviderNotConfigured(
            f"The program has no {provider} credentials: add them with "
            f"POST /v1/programs/{program.id}/fulfilment-providers first."
        )


async def _configured(session: AsyncSession, program_id: UUID, provider: str) -> bool:
    found = await session.scalar(
        select(FulfilmentCredential.id).where(
            FulfilmentCredential.program_id == program_id,
            FulfilmentCredential.provider == provider,
        )
    )
    return found is not None


async def _has_charities(session: AsyncSession, program_id: UUID) -> bool:
    found = await session.scalar(
        select(Charity.id)
        .where(Charity.program_id == program_id, Charity.active.is_(True))
        .limit(1)
    )
    return found is not None


def new_code() -> str:
    return CODE_PREFIX + generate_code(CODE_RANDOM_LENGTH)


async def create_for(
    session: AsyncSession, paid: Sequence[tuple[Reward, Terms]], now: datetime
) -> None:
    """One fulfilment per new reward whose rule (or points item) has a provider: pending if
    the reward was born approved (the dispatcher may issue it at once), else waiting."""
    rows: list[dict[str, object]] = [
        {
            "id": uuid4(),
            "created_at": now,
            "updated_at": now,
            "program_id": reward.program_id,
            "reward_id": reward.id,
            "method": rule.fulfilment,
            "provider": rule.fulfilment_provider,
            "status": (
                FulfilmentStatus.PENDING
                if reward.status == RewardStatus.APPROVED
                else FulfilmentStatus.WAITING
            ),
            "code": new_code() if rule.fulfilment in CODED else None,
            "percent_off": rule.coupon_percent,
            "currency": reward.unit,
            "details": {},
            "attempts": 0,
            "in_flight": False,
            "due_since": now if reward.status == RewardStatus.APPROVED else None,
            "next_attempt_at": now if reward.status == RewardStatus.APPROVED else None,
        }
        for reward, rule in paid
        if needs_provider(rule.fulfilment) and rule.fulfilment_provider is not None
    ]
    if rows:
        await session.execute(insert(Fulfilment), rows)


async def release(session: AsyncSession, reward_ids: Sequence[UUID], now: datetime) -> None:
    """The rewards were approved: their waiting fulfilments become due now."""
    if not reward_ids:
        return
    await session.execute(
        update(Fulfilment)
        .where(
            Fulfilment.reward_id.in_(reward_ids),
            Fulfilment.status.in_(statuses_allowing(Move.RELEASE)),
        )
        .values(
            status=FulfilmentStatus.PENDING,
            due_since=now,
            next_attempt_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def cancel(
    session: AsyncSession, reward_ids: Iterable[UUID], now: datetime, reason: str
) -> None:
    """The rewards were reversed or paid by hand: nothing more is to be issued for them.

    An attempt already out records what it issued and then takes it back (dispatcher).
    """
    ids = list(reward_ids)
    if not ids:
        return
    await session.execute(
        update(Fulfilment)
        .where(
            Fulfilment.reward_id.in_(ids),
            Fulfilment.status.in_(statuses_allowing(Move.CANCEL)),
        )
        .values(
            status=FulfilmentStatus.CANCELLED,
            error=reason[:500],
            next_attempt_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def clawed_back(session: AsyncSession, reward: Reward, owed: Decimal, now: datetime) -> None:
    """A paid reward was clawed back by a refund; `owed` is what is left of it after that.

    A coupon clawed back in full is disabled at its provider (if still unused: the dispatcher
    checks). Anything else (a partial clawback, store credit, a gift card) cannot be taken
    back: the approved clawback entry stays in the ledger, and the next payout nets it out.
    """
    row = await session.scalar(
        select(Fulfilment).where(Fulfilment.reward_id == reward.id).with_for_update()
    )
    if row is None or owed > 0:
        return
    move = Move.REVOKE if row.method == FulfilmentMethod.COUPON else Move.KEEP
    target = moved(row.status, move)
    if target is None:
        return
    row.status = target
    row.updated_at = now
    if target == FulfilmentStatus.REVOKING:
        row.attempts, row.due_since, row.next_attempt_at, row.error = 0, now, now, None
    else:
        row.error = "clawed back: a store credit or gift card cannot be taken back"


async def briefs_of(
    session: AsyncSession, rewards: Iterable[Reward]
) -> dict[UUID, FulfilmentBrief]:
    """The fulfilment of each reward that has one: one statement, none when no reward is paid
    through a provider (the purchase path of a ledger-only program pays nothing for this)."""
    reward_ids = {reward.id for reward in rewards if needs_provider(reward.fulfilment_method)}
    if not reward_ids:
        return {}
    rows = await session.scalars(
        select(Fulfilment)
        .where(Fulfilment.reward_id.in_(reward_ids))
        .execution_options(populate_existing=True)
    )
    return {row.reward_id: brief(row) for row in rows}


def brief(row: Fulfilment) -> FulfilmentBrief:
    return FulfilmentBrief(
        id=row.id,
        method=row.method,
        provider=row.provider,
        status=row.status,
        code=row.code if row.status in ISSUED else None,
        reference=row.reference,
        error=row.error,
    )

"""Lifecycle emails into the outbox, inside the transaction of the event that causes them.

The events outbox (app.webhooks.outbox) calls these with each event it emits, so an email is
queued exactly when its event is committed; the dispatcher (app.emails.dispatcher) sends it
later, never inside a request. One row per (kind, object, recipient): the unique `dedupe_key`
makes a repeated event queue nothing. An address that unsubscribed from the program or was
erased gets a `suppressed` row without personal data (the decision is kept, the email is not).

Nothing happens unless the process has email delivery configured: `switch_on` marks the
sessions of the app's sessionmaker (REFERRAL_SMTP_URL set), so the request paths pay for no
lookup when emails are off, and sessions of the CLI or the demo never queue any.
"""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from babel.numbers import format_currency, format_decimal
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import insert_ignoring_conflicts, transaction_cache, utcnow
from app.core.money import for_display
from app.emails.models import (
    EmailKind,
    EmailMessage,
    EmailSuppression,
    EmailTemplate,
    MessageStatus,
)
from app.emails.tokens import address_hash
from app.referrers.models import Code, Referrer
from app.rewards.models import Reward
from app.rewards.states import EntryType, Recipient
from app.tracking.models import Referral

EMAILS_ON = "emails.on"
_DISABLED = "emails.disabled_kinds"

REWARD_EMAILS = {
    "reward.created": EmailKind.REWARD_EARNED,
    "reward.approved": EmailKind.REWARD_APPROVED,
    "reward.paid": EmailKind.REWARD_PAID,
    "reward.fulfilled": EmailKind.REWARD_FULFILLED,
}


def switch_on(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Sessions made by `sessionmaker` from now on queue lifecycle emails."""
    sessionmaker.configure(info={EMAILS_ON: True})


def emails_on(session: AsyncSession) -> bool:
    return bool(session.info.get(EMAILS_ON))


async def queue_enrolled(session: AsyncSession, referrer: Referrer, code: Code) -> None:
    """The welcome email of a referrer who just joined: their link, code and QR code."""
    if not emails_on(session) or not referrer.email:
        return
    await _queue(
        session,
        referrer.program_id,
        EmailKind.ENROLLED,
        object_id=str(referrer.id),
        recipient="referrer",
        address=referrer.email,
        referrer_id=referrer.id,
        context={"recipient": {"name": referrer.name}, "code": code.code},
    )


async def queue_referral_redeemed(session: AsyncSession, referral: Referral, code: str) -> None:
    """Tell the referrer that someone redeemed their code (nothing about who: privacy)."""
    if not emails_on(session) or referral.source != "redemption":
        return
    referrer = await session.get(Referrer, referral.referrer_id)
    if referrer is None or not referrer.email:
        return
    await _queue(
        session,
        referral.program_id,
        EmailKind.REFERRAL_REDEEMED,
        object_id=str(referral.id),
        recipient="referrer",
        address=referrer.email,
        referrer_id=referrer.id,
        context={"recipient": {"name": referrer.name}, "code": code},
    )


async def queue_reward_emails(
    session: AsyncSession,
    event_type: str,
    rewards: Sequence[Reward],
    fulfilment: dict[str, Any] | None = None,
) -> None:
    """Earned, approved, paid and fulfilled emails, to whoever the reward is for; a fulfilled
    one shows what the provider issued (`fulfilment`: the coupon or gift card code, the
    reference).

    A referrer's reward goes to the referrer; a referee's reward to the referee, at the email
    their referral was recorded with (a referee is never told anything about their referrer's
    rewards, nor a referrer about the referee's). Clawbacks send nothing.
    """
    kind = REWARD_EMAILS.get(event_type)
    if kind is None or not emails_on(session):
        return
    for reward in rewards:
        if reward.entry_type != EntryType.REWARD:
            continue
        context: dict[str, Any] = {"reward": reward_context(reward)}
        if fulfilment is not None:
            context["fulfilment"] = fulfilment
        if reward.recipient == Recipient.REFERRER:
            referrer = await session.get(Referrer, reward.referrer_id)
            if referrer is None or not referrer.email:
                continue
            code = await session.scalar(
                select(Code.code).where(Code.referrer_id == referrer.id, Code.is_default.is_(True))
            )
            address, name = referrer.email, referrer.name
            context |= {"code": code}
        else:
            address = await session.scalar(
                select(Referral.email).where(
                    Referral.program_id == reward.program_id,
                    Referral.customer_id == reward.recipient_id,
                )
            )
            if not address:
                continue
            name = None
        context["recipient"] = {"name": name}
        await _queue(
            session,
            reward.program_id,
            kind,
            object_id=str(reward.id),
            recipient=reward.recipient.value,
            address=address,
            referrer_id=reward.referrer_id,
            context=context,
        )


async def queue_reminder(
    session: AsyncSession, referrer: Referrer, code: str, period: int, days: int
) -> bool:
    """The reminder of one referrer for one `days`-long period; False if it was queued before."""
    assert referrer.email is not None
    return await _queue(
        session,
        referrer.program_id,
        EmailKind.REMINDER,
        object_id=f"{referrer.id}/{period}",
        recipient="referrer",
        address=referrer.email,
        referrer_id=referrer.id,
        context={"recipient": {"name": referrer.name}, "code": code, "days": days},
    )


def reward_context(reward: Reward) -> dict[str, Any]:
    """The reward as its emails show it; amounts as text (JSON has no decimals)."""
    value = for_display(reward.amount, reward.unit)
    return {
        "amount": format_amount(value, reward.unit),
        "value": str(value),
        "unit": reward.unit,
        "status": reward.status.value,
        "available_on": reward.hold_until.date().isoformat(),
        "payout_reference": reward.payout_reference,
    }


def format_amount(value: Decimal, unit: str) -> str:
    if unit == "points":
        return f"{format_decimal(value, locale='en_US')} points"
    return str(format_currency(value, unit, locale="en_US"))


async def disabled_kinds(session: AsyncSession, program_id: UUID) -> set[EmailKind]:
    """The kinds of email the program turned off (cached for the transaction)."""
    cache = transaction_cache(session, _DISABLED)
    if program_id not in cache:
        rows = await session.scalars(
            select(EmailTemplate.kind).where(
                EmailTemplate.program_id == program_id, EmailTemplate.enabled.is_(False)
            )
        )
        cache[program_id] = set(rows)
    kinds: set[EmailKind] = cache[program_id]
    return kinds


async def is_suppressed(session: AsyncSession, program_id: UUID, digest: str) -> bool:
    found = await session.scalar(
        select(EmailSuppression.id).where(
            EmailSuppression.program_id == program_id, EmailSuppression.address_hash == digest
        )
    )
    return found is not None


async def _queue(
    session: AsyncSession,
    program_id: UUID,
    kind: EmailKind,
    *,
    object_id: str,
    recipient: str,
    address: str,
    referrer_id: UUID | None,
    context: dict[str, Any],
) -> bool:
    """Queue one email unless its dedupe key was queued before; True when a row was written."""
    if kind in await disabled_kinds(session, program_id):
        return False
    digest = address_hash(address)
    suppressed = await is_suppressed(session, program_id, digest)
    now = utcnow()
    result = await session.execute(
        insert_ignoring_conflicts(
            session,
            EmailMessage.__table__,
            {
                "id": uuid4(),
                "created_at": now,
                "updated_at": now,
                "program_id": program_id,
                "kind": kind.value,
                "dedupe_key": f"{kind.value}:{object_id}:{recipient}",
                "referrer_id": referrer_id,
                "recipient": recipient,
                # A suppressed row keeps the decision, not the person's data.
                "to_address": None if suppressed else address,
                "address_hash": digest,
                "context": {} if suppressed else context,
                "status": (MessageStatus.SUPPRESSED if suppressed else MessageStatus.PENDING).value,
                "error": "unsubscribed or erased" if suppressed else None,
                "attempts": 0,
                "next_attempt_at": now,
            },
        ).returning(EmailMessage.__table__.c.id)
    )
    return result.scalar() is not None

"""GDPR erasure: a person's personal fields go, the numbers they are part of stay.

Every copy of a person held by the service, and what erasure does to it (README "Erasure"):

- rows naming them — clicks, referrals, conversions, referrers (as the merchant's customer id
  or external id), rewards (`recipient_id`) — keep their place in every count; the id becomes
  a keyed pseudonym, emails, names, metadata, IPs, user agents and URLs are cleared, and so
  are a referrer's payout details and chosen charity (payout batch lines hold no copy);
- copies of those rows kept as JSON — stored Idempotency-Key answers (replayed for 24 hours),
  webhook events and the endpoints' answers to them (shown by the deliveries endpoint), kept
  Stripe and Shopify events — are rewritten by app.customers.redaction.

Only the programs the key may see are touched (a stored answer counts when it names one of
them, or when the erasure covers every program).
"""

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Text, cast, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.core.access import Principal, program_scope
from app.core.config import Settings
from app.core.db import is_postgres, utcnow
from app.customers.redaction import Person, pseudonym, redact, redact_detail
from app.customers.schemas import ErasureOut
from app.emails.service import forget_recipient
from app.idempotency.models import IdempotencyRecord
from app.integrations.models import IntegrationEvent
from app.referrer_sessions.models import ReferrerSession
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.tracking.models import Click, Referral
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent

# A person erased, back, and erased again must not collide with their first stand-in.
MAX_GENERATIONS = 100
JSON_TYPES = ("application/json", "application/problem+json")


async def erase_customer(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    customer_id: str,
    program_id: UUID | None,
) -> ErasureOut:
    """Anonymise everything held about `customer_id` in the programs the key may see."""
    programs = program_scope(principal, program_id)
    # First, while their addresses are still there: no email to this person, ever again.
    await forget_recipient(session, customer_id, programs)

    def scoped(statement: Any, column: Any) -> Any:
        return statement if programs is None else statement.where(column.in_(programs))

    person = Person(
        customer_id=customer_id,
        replacement=await _free_pseudonym(session, settings, customer_id, scoped),
        emails=await _emails(session, customer_id, scoped),
    )

    async def run(model: Any, match: ColumnElement[bool], values: dict[str, object]) -> int:
        statement = scoped(update(model).where(match), model.program_id)
        result = await session.execute(
            statement.values(**values).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    replacement = person.replacement
    clicks = await run(
        Click,
        Click.customer_id == customer_id,
        {
            "customer_id": replacement,
            "ip_hash": None,
            "user_agent": None,
            "visitor_id": None,
            "referring_url": None,
            "landing_url": None,
        },
    )
    referrals = await run(
        Referral, Referral.customer_id == customer_id, {"customer_id": replacement, "email": None}
    )
    conversions = await run(
        Conversion,
        Conversion.customer_id == customer_id,
        {"customer_id": replacement, "email": None, "metadata_": {}},
    )
    # An erased referrer's sessions end: nothing of theirs is read through a token any more.
    await run(
        ReferrerSession,
        ReferrerSession.referrer_id.in_(
            select(Referrer.id).where(Referrer.external_id == customer_id)
        )
        & ReferrerSession.revoked_at.is_(None),
        {"revoked_at": utcnow()},
    )
    referrers = await run(
        Referrer,
        Referrer.external_id == customer_id,
        {
            "external_id": replacement,
            "email": None,
            "name": None,
            "leaderboard_name": None,
            "metadata_": {},
            "payout_method": None,
            "payout_recipient": None,
            "charity_id": None,
        },
    )
    rewards = await run(Reward, Reward.recipient_id == customer_id, {"recipient_id": replacement})
    return ErasureOut(
        customer_id=customer_id,
        replaced_by=replacement,
        clicks=clicks,
        referrals=referrals,
        conversions=conversions,
        referrers=referrers,
        rewards=rewards,
        webhook_events=await _redact_webhook_events(session, person, scoped),
        idempotency_answers=await _redact_idempotency_answers(session, person, programs),
        integration_events=await _redact_integration_events(session, person, scoped),
    )


async def _free_pseudonym(
    session: AsyncSession, settings: Settings, customer_id: str, scoped: Any
) -> str:
    """The person's pseudonym, unless rows of an earlier erasure already hold it where this
    erasure would give it to a referral or referrer too (both are unique per program)."""
    for generation in range(MAX_GENERATIONS):
        candidate = pseudonym(settings.pseudonym_key, customer_id, generation)
        clash = None
        for model, column in ((Referral, Referral.customer_id), (Referrer, Referrer.external_id)):
            mine = scoped(select(model.program_id).where(column == customer_id), model.program_id)
            clash = clash or await session.scalar(
                select(model.id).where(column == candidate, model.program_id.in_(mine)).limit(1)
            )
        if clash is None:
            return candidate
    raise RuntimeError("no free pseudonym")  # pragma: no cover - 100 erasures of one id


async def _emails(session: AsyncSession, customer_id: str, scoped: Any) -> frozenset[str]:
    """Every email held for the person, so that copies of it go too."""
    found = {customer_id.lower()} if "@" in customer_id else set()
    for model, column in (
        (Referral, Referral.customer_id),
        (Conversion, Conversion.customer_id),
        (Referrer, Referrer.external_id),
    ):
        statement = scoped(
            select(model.email).where(column == customer_id, model.email.is_not(None)).distinct(),
            model.program_id,
        )
        found.update(email.lower() for email in await session.scalars(statement))
    return frozenset(found)


def _mentions(text: Any, person: Person) -> ColumnElement[bool]:
    """A cheap pre-filter: rows whose text contains the person's id or an email."""
    conditions = [
        true() if needle is None else func.lower(text).contains(needle, autoescape=True)
        for needle in person.needles()
    ]
    return or_(*conditions)


async def _redact_webhook_events(session: AsyncSession, person: Person, scoped: Any) -> int:
    """Webhook payloads, and what endpoints answered to them (an echo would repeat them)."""
    events = await session.scalars(
        scoped(
            select(WebhookEvent).where(_mentions(cast(WebhookEvent.payload, Text), person)),
            WebhookEvent.program_id,
        )
    )
    changed: list[UUID] = []
    for event in events:
        redacted = redact(event.payload, person)
        if redacted != event.payload:
            event.payload = redacted
            changed.append(event.id)
    if changed:
        deliveries = select(WebhookDelivery.id).where(WebhookDelivery.event_id.in_(changed))
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_(changed))
            .values(response_excerpt=None)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(deliveries))
            .values(response_excerpt=None)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    return len(changed)


async def _redact_idempotency_answers(
    session: AsyncSession, person: Person, programs: frozenset[UUID] | None
) -> int:
    """Stored answers are replayed as they are: rewrite those that name the person."""
    body = (
        func.convert_from(IdempotencyRecord.response_body, "UTF8")
        if is_postgres(session)
        else cast(IdempotencyRecord.response_body, Text)
    )
    records = await session.scalars(select(IdempotencyRecord).where(_mentions(body, person)))
    changed = 0
    for record in records:
        parsed = _json(record)
        if parsed is None:
            continue
        if programs is not None and not _names_a_program(parsed, programs):
            continue
        redacted = redact(parsed, person)
        if redacted != parsed:
            record.response_body = json.dumps(
                redacted, ensure_ascii=False, separators=(",", ":")
            ).encode()
            changed += 1
    await session.flush()
    return changed


def _json(record: IdempotencyRecord) -> Any:
    if record.response_content_type.split(";")[0].strip() not in JSON_TYPES:
        return None
    try:
        return json.loads(record.response_body)
    except ValueError:
        return None


def _names_a_program(document: Any, programs: frozenset[UUID]) -> bool:
    wanted = {str(program) for program in programs}
    if isinstance(document, dict):
        if str(document.get("program_id")) in wanted:
            return True
        return any(_names_a_program(value, programs) for value in document.values())
    if isinstance(document, list):
        return any(_names_a_program(value, programs) for value in document)
    return False


async def _redact_integration_events(session: AsyncSession, person: Person, scoped: Any) -> int:
    """Stripe and Shopify events kept parked or rejected hold the purchase as it was mapped."""
    text = (
        func.coalesce(cast(IntegrationEvent.payload, Text), "")
        + " "
        + func.coalesce(IntegrationEvent.detail, "")
    )
    events: Sequence[IntegrationEvent] = list(
        await session.scalars(
            scoped(
                select(IntegrationEvent).where(_mentions(text, person)),
                IntegrationEvent.program_id,
            )
        )
    )
    changed = 0
    for event in events:
        payload = redact(event.payload, person) if event.payload is not None else None
        detail = redact_detail(event.detail, person)
        if payload != event.payload or detail != event.detail:
            event.payload, event.detail = payload, detail
            changed += 1
    await session.flush()
    return changed

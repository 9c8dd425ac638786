"""Platform events → conversions and refunds, once each, whatever the order they arrive in.

Each verified event is claimed by (program, provider, event id) in the request's transaction,
so a redelivery is answered `duplicate` and changes nothing. A purchase goes through
app.conversions.service.record_conversion (idempotent on event_id); the platform ids it
carries (checkout session, payment intent, invoice, order) are kept so that its refunds find
it. A refund that arrives before its purchase is parked (acknowledged and stored with the
event) and applied when the purchase is recorded: answering an error instead would make
Shopify drop the subscription after a few failures.
"""

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from pydantic import ValidationError
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion, Refund
from app.conversions.schemas import ConversionCreate, RefundCreate
from app.conversions.service import EventConflict, record_conversion, refund
from app.core.access import ApiKeyPrincipal, KeyKind, Principal
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, is_postgres, utcnow
from app.core.errors import AppError, NotFound, Unprocessable
from app.core.money import quantize
from app.core.pagination import PageParams, paginate
from app.fulfilment.redeemed import UsedDiscount, mark_redeemed
from app.integrations.models import IntegrationEvent, IntegrationReference, IntegrationSecret
from app.integrations.schemas import IntegrationEventOut, SecretOut
from app.programs.service import get_program
from app.referrers.codes import normalize
from app.referrers.models import Code

MAX_SECRETS = 10
MAX_CODE_LENGTH = 64
# Stands for "the platform" where a service wants a caller; no API key has this id.
PLATFORM_KEY_ID = UUID(int=0)


class InvalidSignature(AppError):
    status, code, title = 400, "invalid_signature", "The webhook signature is not valid"


class InvalidPayload(AppError):
    status, code, title = 400, "invalid_payload", "The webhook body is not a valid event"


class TooManySecrets(AppError):
    status, code, title = 409, "too_many_secrets", "The program has too many secrets"


@dataclass(frozen=True)
class PlatformPurchase:
    """A paid order as the platform described it, in this service's terms."""

    event_id: str
    customer_id: str | None
    email: str | None
    amount: Decimal
    currency: str
    occurred_at: datetime | None
    # Candidate referral codes, best first; the first one the program knows is used.
    codes: list[str]
    click_id: UUID | None
    references: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    # The discounts the order used: a coupon this service minted is marked redeemed.
    discounts: list[UsedDiscount] = field(default_factory=list)


@dataclass(frozen=True)
class PlatformRefund:
    """Money given back on a purchase, found by any of its platform references."""

    refund_id: str
    references: list[str]
    currency: str | None
    amount: Decimal | None = None  # this refund alone (Shopify)
    refunded_total: Decimal | None = None  # everything refunded so far (Stripe)
    reason: str | None = None
    remainder: bool = False  # all that is not refunded yet (a cancelled order)


@dataclass(frozen=True)
class Skipped:
    """Nothing to record: `ignored` (not for us) or `rejected` (unusable; detail says why)."""

    outcome: str
    detail: str


Mapped = PlatformPurchase | PlatformRefund | Skipped


def platform_principal(program_id: UUID) -> ApiKeyPrincipal:
    """Platform webhooks act as a secret key limited to the program they were sent for."""
    return ApiKeyPrincipal(
        key_id=PLATFORM_KEY_ID, kind=KeyKind.SECRET, program_ids=frozenset({program_id})
    )


# --- secrets ----------------------------------------------------------------------------------


def _prefix(provider: str, secret: str) -> str:
    shown = len("whsec_") + 4 if provider == "stripe" and secret.startswith("whsec_") else 4
    return secret[:shown]


async def add_secrets(
    session: AsyncSession, principal: Principal, program_id: UUID, provider: str, given: list[str]
) -> list[SecretOut]:
    """Add signing secrets (adding one twice is harmless); returns all of the program's."""
    program = await get_program(session, principal, program_id)
    if provider == "stripe" and any(not secret.startswith("whsec_") for secret in given):
        raise Unprocessable("Stripe signing secrets start with whsec_.")
    for secret in dict.fromkeys(given):
        await session.execute(
            insert_ignoring_conflicts(
                session,
                IntegrationSecret.__table__,
                {
                    "id": uuid4(),
                    "created_at": utcnow(),
                    "program_id": program.id,
                    "provider": provider,
                    "secret": secret,
                    "prefix": _prefix(provider, secret),
                },
            )
        )
    rows = await _secret_rows(session, program.id, provider)
    if len(rows) > MAX_SECRETS:
        raise TooManySecrets(f"At most {MAX_SECRETS} secrets per provider; delete old ones first.")
    return [SecretOut.model_validate(row) for row in rows]


async def list_secrets(
    session: AsyncSession, principal: Principal, program_id: UUID, provider: str
) -> list[SecretOut]:
    program = await get_program(session, principal, program_id)
    return [
        SecretOut.model_validate(row) for row in await _secret_rows(session, program.id, provider)
    ]


async def delete_secret(
    session: AsyncSession, principal: Principal, program_id: UUID, provider: str, secret_id: UUID
) -> None:
    program = await get_program(session, principal, program_id)
    result = await session.execute(
        delete(IntegrationSecret).where(
            IntegrationSecret.id == secret_id,
            IntegrationSecret.program_id == program.id,
            IntegrationSecret.provider == provider,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound("No such secret for this program and provider.")


async def _secret_rows(
    session: AsyncSession, program_id: UUID, provider: str
) -> list[IntegrationSecret]:
    return list(
        await session.scalars(
            select(IntegrationSecret)
            .where(
                IntegrationSecret.program_id == program_id, IntegrationSecret.provider == provider
            )
            .order_by(IntegrationSecret.created_at, IntegrationSecret.id)
        )
    )


async def signing_secrets(session: AsyncSession, program_id: UUID, provider: str) -> list[str]:
    """The program's secrets for the provider (none when the program does not exist)."""
    return [row.secret for row in await _secret_rows(session, program_id, provider)]


# --- events -----------------------------------------------------------------------------------


async def list_events(
    session: AsyncSession, principal: Principal, program_id: UUID, provider: str, params: PageParams
) -> tuple[list[IntegrationEventOut], str | None]:
    program = await get_program(session, principal, program_id)
    query = select(IntegrationEvent).where(
        IntegrationEvent.program_id == program.id, IntegrationEvent.provider == provider
    )
    rows, next_cursor = await paginate(session, query, IntegrationEvent, params)
    return [IntegrationEventOut.model_validate(row) for row in rows], next_cursor


async def process(
    session: AsyncSession,
    settings: Settings,
    program_id: UUID,
    provider: str,
    external_id: str,
    topic: str,
    mapped: Mapped,
) -> IntegrationEventOut:
    """Apply one verified event once; a redelivery is answered `duplicate` and changes nothing."""
    now = utcnow()
    event_row_id = await session.scalar(
        insert_ignoring_conflicts(
            session,
            IntegrationEvent.__table__,
            {
                "id": uuid4(),
                "created_at": now,
                "updated_at": now,
                "program_id": program_id,
                "provider": provider,
                "external_id": external_id[:255],
                "topic": topic[:100],
                "outcome": "ignored",
            },
        ).returning(IntegrationEvent.__table__.c.id)
    )
    if event_row_id is None:
        seen = await session.scalar(
            select(IntegrationEvent).where(
                IntegrationEvent.program_id == program_id,
                IntegrationEvent.provider == provider,
                IntegrationEvent.external_id == external_id[:255],
            )
        )
        assert seen is not None
        out = IntegrationEventOut.model_validate(seen)
        return out.model_copy(update={"outcome": "duplicate", "detail": "seen before"})
    event = await session.get(IntegrationEvent, event_row_id)
    assert event is not None
    principal = platform_principal(program_id)
    if isinstance(mapped, Skipped):
        event.outcome, event.detail = mapped.outcome, mapped.detail[:500]
    elif isinstance(mapped, PlatformPurchase):
        await _record_purchase(session, settings, principal, event, mapped)
        # Whether or not the order earns anything, a minted coupon it used was redeemed.
        await mark_redeemed(
            session, program_id, provider, mapped.event_id, mapped.currency, mapped.discounts, now
        )
    else:
        await _record_refund(session, principal, event, mapped)
    await session.flush()
    return IntegrationEventOut.model_validate(event)


async def _lock_references(
    session: AsyncSession, program_id: UUID, provider: str, references: list[str]
) -> None:
    """Serialize a purchase and its refunds on Postgres (SQLite has one writer anyway).

    Without it a refund could miss a purchase committing at the same moment, and be parked
    after the purchase looked for parked refunds.
    """
    if not is_postgres(session):
        return
    for reference in sorted(set(references)):
        digest = hashlib.sha256(f"{program_id}:{provider}:{reference}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


async def _known_code(session: AsyncSession, program_id: UUID, candidates: list[str]) -> str | None:
    """The first candidate that is a code of the program, else the first (for the record)."""
    usable = [c.strip() for c in candidates if c and 0 < len(c.strip()) <= MAX_CODE_LENGTH]
    if not usable:
        return None
    found = set(
        await session.scalars(
            select(Code.normalized).where(
                Code.program_id == program_id, Code.normalized.in_({normalize(c) for c in usable})
            )
        )
    )
    return next((c for c in usable if normalize(c) in found), usable[0])


async def _record_purchase(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    event: IntegrationEvent,
    purchase: PlatformPurchase,
) -> None:
    program_id = event.program_id
    if purchase.amount <= 0:
        event.outcome, event.detail = "ignored", "nothing was paid"
        return
    customer_id = purchase.customer_id or purchase.email
    if not customer_id:
        event.outcome, event.detail = "rejected", "the event names no customer"
        return
    await _lock_references(session, program_id, event.provider, purchase.references)
    try:
        data = ConversionCreate(
            program_id=program_id,
            event_id=purchase.event_id,
            customer_id=customer_id[:200],
            amount=purchase.amount,
            currency=purchase.currency,
            occurred_at=purchase.occurred_at,
            code=await _known_code(session, program_id, purchase.codes),
            click_id=purchase.click_id,
            email=purchase.email if purchase.email and len(purchase.email) <= 320 else None,
            metadata={k: v for k, v in purchase.metadata.items() if v is not None},
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _reject(event, f"{where}: {first['msg']}", purchase)
        return
    try:
        async with session.begin_nested():
            conversion, created = await record_conversion(session, principal, data, settings)
    except EventConflict:
        # The same platform object through another event type (say, the invoice of a
        # subscription checkout): the first one recorded stands.
        existing = await session.scalar(
            select(Conversion.id).where(
                Conversion.program_id == program_id, Conversion.event_id == purchase.event_id
            )
        )
        event.outcome, event.detail = "duplicate", "the purchase was recorded by another event"
        event.conversion_id = existing
        return
    except AppError as exc:
        _reject(event, f"{exc.code}: {exc.detail}", purchase)
        return
    event.conversion_id = conversion.id
    if created:
        event.outcome = "recorded"
    else:
        # Another topic of the same order (orders/create, then orders/paid) said the same.
        event.outcome, event.detail = "duplicate", "the purchase was recorded by another event"
    for reference in dict.fromkeys(purchase.references):
        await session.execute(
            insert_ignoring_conflicts(
                session,
                IntegrationReference.__table__,
                {
                    "id": uuid4(),
                    "created_at": utcnow(),
                    "program_id": program_id,
                    "provider": event.provider,
                    "reference": reference[:255],
                    "conversion_id": conversion.id,
                },
            )
        )
    await _apply_parked_refunds(session, principal, event, purchase.references, conversion.id)


def _reject(event: IntegrationEvent, detail: str, mapped: Any) -> None:
    event.outcome, event.detail = "rejected", detail[:500]
    event.payload = _jsonable(asdict(mapped))


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, Decimal | UUID):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        return value

    converted: dict[str, Any] = convert(values)
    return converted


async def _apply_parked_refunds(
    session: AsyncSession,
    principal: Principal,
    purchase_event: IntegrationEvent,
    references: list[str],
    conversion_id: UUID,
) -> None:
    parked = list(
        await session.scalars(
            select(IntegrationEvent)
            .where(
                IntegrationEvent.program_id == purchase_event.program_id,
                IntegrationEvent.provider == purchase_event.provider,
                IntegrationEvent.awaiting.in_(references),
                IntegrationEvent.outcome == "parked",
            )
            .order_by(IntegrationEvent.created_at, IntegrationEvent.id)
            .with_for_update()
        )
    )
    for event in parked:
        stored = dict(event.payload or {})
        refund_data = PlatformRefund(
            refund_id=stored["refund_id"],
            references=list(stored["references"]),
            currency=stored.get("currency"),
            amount=Decimal(stored["amount"]) if stored.get("amount") is not None else None,
            refunded_total=(
                Decimal(stored["refunded_total"])
                if stored.get("refunded_total") is not None
                else None
            ),
            reason=stored.get("reason"),
            remainder=bool(stored.get("remainder", False)),
        )
        event.awaiting, event.payload = None, None
        await _apply_refund(session, principal, event, conversion_id, refund_data)
        event.updated_at = utcnow()


async def _record_refund(
    session: AsyncSession, principal: Principal, event: IntegrationEvent, data: PlatformRefund
) -> None:
    await _lock_references(session, event.program_id, event.provider, data.references)
    conversion_id = await session.scalar(
        select(IntegrationReference.conversion_id)
        .where(
            IntegrationReference.program_id == event.program_id,
            IntegrationReference.provider == event.provider,
            IntegrationReference.reference.in_(data.references),
        )
        .limit(1)
    )
    if conversion_id is None:
        event.outcome = "parked"
        event.detail = "waiting for the purchase; applied when it arrives"
        event.awaiting = data.references[0][:255]
        event.payload = _jsonable(asdict(data))
        return
    await _apply_refund(session, principal, event, conversion_id, data)


async def _apply_refund(
    session: AsyncSession,
    principal: Principal,
    event: IntegrationEvent,
    conversion_id: UUID,
    data: PlatformRefund,
) -> None:
    event.conversion_id = conversion_id
    conversion = await session.scalar(
        select(Conversion)
        .where(Conversion.id == conversion_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert conversion is not None
    if data.currency is not None and data.currency != conversion.currency:
        _reject(
            event, f"the refund is in {data.currency}, the purchase in {conversion.currency}", data
        )
        return
    seen = await session.scalar(
        select(Refund.id).where(
            Refund.conversion_id == conversion.id, Refund.refund_id == data.refund_id
        )
    )
    if data.remainder:
        amount = conversion.amount - conversion.refunded_amount
    elif data.refunded_total is not None:
        # Stripe says how much is refunded in all: refund what is not refunded yet.
        amount = data.refunded_total - conversion.refunded_amount
    else:
        amount = data.amount or Decimal(0)
    # Stored amounts carry four decimals; the refund is in the currency's minor unit.
    amount = quantize(
        min(amount, conversion.amount - conversion.refunded_amount), conversion.currency
    )
    if seen is not None or amount <= 0:
        event.outcome, event.detail = "ignored", "already refunded"
        return
    try:
        async with session.begin_nested():
            await refund(
                session,
                principal,
                conversion.id,
                RefundCreate(
                    amount=amount,
                    refund_id=data.refund_id[:200],
                    reason=data.reason[:500] if data.reason else None,
                ),
            )
    except AppError as exc:
        _reject(event, f"{exc.code}: {exc.detail}", data)
        return
    event.outcome, event.detail = "refunded", None

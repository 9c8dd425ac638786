"""Purchases in: idempotent on event_id, attributed, rewarded once; refunds adjust the ledger."""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from app.conversions.attribution import Decision, Purchase, attribute
from app.conversions.models import Conversion, ConversionStatus, Refund
from app.conversions.schemas import (
    Attribution,
    Candidate,
    ConversionCreate,
    ConversionOut,
    RefundCreate,
    RefundOut,
)
from app.core.access import Principal, get_visible, scoped
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, utcnow
from app.core.errors import AppError
from app.core.money import for_display, has_valid_precision, minor_unit
from app.core.pagination import PageParams, paginate
from app.programs.models import Program
from app.programs.service import ProgramNotFound
from app.referrers.enrolment import buyer_share, enrol_buyer
from app.referrers.models import Code, Referrer
from app.referrers.schemas import Share
from app.rewards import service as ledger
from app.rewards.models import Reward
from app.rewards.rules import RulesVersion, rules_for, rules_version_columns
from app.rewards.schemas import RewardOut
from app.tracking.models import Click, Referral
from app.webhooks.outbox import any_endpoint_column, emit, emit_referral_created, knows_endpoints

FUTURE_TOLERANCE = timedelta(minutes=5)


class ConversionNotFound(AppError):
    status, code, title = 404, "conversion_not_found", "Conversion not found"


class EventConflict(AppError):
    status, code, title = 409, "event_id_conflict", "The event_id was used with another body"


class RefundConflict(AppError):
    status, code, title = 409, "refund_id_conflict", "The refund_id was used with another body"


class CurrencyMismatch(AppError):
    status, code, title = 422, "currency_mismatch", "The currency is not the program's"


class InvalidAmount(AppError):
    status, code, title = 422, "invalid_amount", "The amount is not valid"


class OccurredInFuture(AppError):
    status, code, title = 422, "occurred_in_future", "occurred_at is in the future"


class AlreadyRefunded(AppError):
    status, code, title = 409, "already_refunded", "The conversion is fully refunded"


class RefundTooLarge(AppError):
    status, code, title = 422, "refund_exceeds_amount", "Refunds would exceed the amount"


def request_hash(body: Any) -> str:
    """A fingerprint of the body as sent (defaults left out), to tell retries from conflicts."""
    canonical = json.dumps(
        body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record_conversion(
    session: AsyncSession, principal: Principal, data: ConversionCreate, settings: Settings
) -> tuple[ConversionOut, bool]:
    """Record a purchase once per (program, event_id), attribute it, and create its rewards.

    Returns the conversion and whether this call created it; a retry of the same body returns
    the first result, the same event_id with another body is EventConflict.

    A lean path (ARCHITECTURE.md): the program, its rules version and whether any webhook
    endpoint listens come from one statement; the rules from the in-process cache; nothing
    written is read back, and the answer is built from what was written.
    """
    # Key-share: the currency read here stays the program's until this purchase commits.
    program, rules_version = await _purchase_program(session, principal, data.program_id)
    if data.currency != program.currency:
        raise CurrencyMismatch(f"The program counts in {program.currency}, not {data.currency}.")
    if not has_valid_precision(data.amount, data.currency):
        raise InvalidAmount(
            f"{data.amount} has more decimals than {data.currency} allows "
            f"({minor_unit(data.currency)})."
        )
    now = utcnow()
    # In UTC, as the database gives it back: the answer is built from these values.
    occurred_at = (data.occurred_at or now).astimezone(UTC)
    if occurred_at > now + FUTURE_TOLERANCE:
        raise OccurredInFuture("occurred_at may not be in the future.")
    fingerprint = request_hash(data)
    values: dict[str, Any] = {
        "id": uuid4(),
        "created_at": now,
        "program_id": program.id,
        "event_id": data.event_id,
        "request_hash": fingerprint,
        "customer_id": data.customer_id,
        "email": data.email,
        "amount": data.amount,
        "currency": data.currency,
        "occurred_at": occurred_at,
        "status": ConversionStatus.UNATTRIBUTED,
        "attribution_reason": "organic",
        "attribution": {},
        "refunded_amount": Decimal(0),
        "metadata_": data.metadata or {},
    }
    # Claim the event_id first: a concurrent duplicate waits on this row, then sees it.
    columns = {"metadata" if key == "metadata_" else key: value for key, value in values.items()}
    claimed = await session.scalar(
        insert_ignoring_conflicts(session, Conversion.__table__, columns).returning(
            Conversion.__table__.c.id
        )
    )
    if claimed is None:
        existing = await session.scalar(
            select(Conversion).where(
                Conversion.program_id == program.id, Conversion.event_id == data.event_id
            )
        )
        assert existing is not None
        if existing.request_hash != fingerprint:
            raise EventConflict(f"event_id {data.event_id!r} was recorded with another body.")
        share = await buyer_share(session, settings, program, existing.customer_id)
        return _with_share(await conversion_out(session, existing), share), False
    # The row just written, in the session without reading it back: changes flush as UPDATEs.
    conversion = Conversion(
        **values, referrer_id=None, code_id=None, click_id=None, referral_id=None
    )
    make_transient_to_detached(conversion)
    session.add(conversion)
    decision = await attribute(
        session,
        Purchase(
            program=program,
            customer_id=data.customer_id,
            email=data.email,
            occurred_at=occurred_at,
            code=data.code,
            click_id=data.click_id,
        ),
    )
    rewards = await _apply(session, program, rules_version, conversion, decision, now)
    code = decision.winner.code if decision.winner is not None else None
    share = await enrol_buyer(session, settings, program, conversion)
    out = _conversion_out(conversion, code, await ledger.rewards_out(session, rewards, now))
    return _with_share(out, share), True


def _with_share(out: ConversionOut, share: Share | None) -> ConversionOut:
    return out if share is None else out.model_copy(update={"share": share})


async def _purchase_program(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> tuple[Program, RulesVersion]:
    """The program, locked key-share (as `get_program(key_share=True)`), with its rules version;
    whether any webhook endpoint is enabled is kept for the transaction's events."""
    query = (
        select(Program, *rules_version_columns(Program.id), any_endpoint_column())
        .where(Program.id == program_id)
        .with_for_update(read=True, key_share=True, of=Program)
    )
    row = (await session.execute(scoped(query, principal, Program.id))).first()
    if row is None:
        raise ProgramNotFound()
    program, version_sum, updated_at, any_endpoint = row
    knows_endpoints(session, any_endpoint)
    return program, (int(version_sum), updated_at)


async def _apply(
    session: AsyncSession,
    program: Program,
    rules_version: RulesVersion,
    conversion: Conversion,
    decision: Decision,
    now: datetime,
) -> list[Reward]:
    conversion.attribution = _attribution_record(program, decision)
    conversion.attribution_reason = decision.reason
    winner = decision.winner
    if winner is None:
        await session.flush()
        return []
    assert winner.referrer_id is not None and winner.code_id is not None
    assert decision.payee is not None
    rules = await rules_for(session, program.id, rules_version)
    # Locks, always in this order: the referrer, then the customer's referral ("first
    # purchase"). The referrer is locked only when a rule counts per referrer (caps, tiers):
    # otherwise a popular referrer's purchases need not queue behind each other.
    # NO KEY UPDATE leaves inserts that reference the referrer unblocked.
    referrer: ledger.Referred = decision.payee
    if any(rule.max_rewards_per_referrer is not None or rule.tiers for rule in rules):
        locked = await session.scalar(
            select(Referrer)
            .where(Referrer.id == winner.referrer_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        assert locked is not None
        referrer = locked
    referral, is_first_purchase = await _referral_for(
        session, program, conversion, winner.referrer_id, winner
    )
    conversion.status = ConversionStatus.ATTRIBUTED
    conversion.referrer_id = referrer.id
    conversion.code_id = winner.code_id
    conversion.click_id = winner.click_id
    conversion.referral_id = referral.id if referral.referrer_id == referrer.id else None
    if winner.click_id is not None and not decision.click_has_customer:
        await session.execute(
            update(Click)
            .where(Click.id == winner.click_id, Click.customer_id.is_(None))
            .values(customer_id=conversion.customer_id)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    paid = ledger.PaidConversion(
        conversion=conversion,
        program=program,
        referrer=referrer,
        referral=referral,
        is_first_purchase=is_first_purchase,
    )
    rewards = await ledger.create_rewards(session, rules, paid, now)
    code = winner.code

    async def attributed() -> ConversionOut:
        return _conversion_out(conversion, code, await ledger.rewards_out(session, rewards, now))

    await emit(session, program.id, "conversion.attributed", attributed)
    return rewards


async def _referral_for(
    session: AsyncSession, program: Program, conversion: Conversion, referrer_id: UUID, winner: Any
) -> tuple[Referral, bool]:
    """The customer's referral, made by this purchase when they had none; locked. And whether
    this is the customer's first attributed purchase.

    A referral this statement made is locked by its insert, and its customer can have no
    earlier attributed purchase in flight (that purchase would hold the referral), so the
    committed ones, read in the same statement, decide "first". Otherwise the referral is
    locked first and the earlier purchases read after the lock.
    """
    referral_id = uuid4()
    values = {
        "id": referral_id,
        "created_at": utcnow(),
        "occurred_at": conversion.occurred_at,
        "program_id": program.id,
        "referrer_id": referrer_id,
        "code_id": winner.code_id,
        "click_id": winner.click_id,
        "customer_id": conversion.customer_id,
        "email": conversion.email,
        "source": "conversion",
    }
    earlier = exists().where(*_earlier_purchases(program, conversion))
    made = await session.scalar(
        insert_ignoring_conflicts(session, Referral.__table__, values).returning(earlier)
    )
    if made is not None:
        referral = Referral(**values)
        make_transient_to_detached(referral)
        session.add(referral)
        await emit_referral_created(session, referral.id)
        return referral, not made
    existing = await session.scalar(
        select(Referral)
        .where(Referral.program_id == program.id, Referral.customer_id == conversion.customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert existing is not None
    found = await session.scalar(
        select(Conversion.id).where(*_earlier_purchases(program, conversion)).limit(1)
    )
    return existing, found is None


def _earlier_purchases(program: Program, conversion: Conversion) -> list[Any]:
    return [
        Conversion.program_id == program.id,
        Conversion.customer_id == conversion.customer_id,
        Conversion.status == ConversionStatus.ATTRIBUTED,
        Conversion.id != conversion.id,
    ]


def _attribution_record(program: Program, decision: Decision) -> dict[str, Any]:
    return {
        "model": program.attribution_model,
        "window_days": program.attribution_window_days,
        "candidates": [
            {
                "kind": touch.kind,
                "source": touch.source,
                "id": touch.id,
                "referrer_id": str(touch.referrer_id) if touch.referrer_id else None,
                "code": touch.code,
                "occurred_at": touch.occurred_at.isoformat() if touch.occurred_at else None,
                "outcome": touch.outcome,
                "reason": touch.reason,
            }
            for touch in decision.candidates
        ],
    }


async def conversion_out(session: AsyncSession, conversion: Conversion) -> ConversionOut:
    return (await conversions_out(session, [conversion]))[0]


async def conversions_out(
    session: AsyncSession, conversions: Sequence[Conversion]
) -> list[ConversionOut]:
    """The answers for a page of conversions: two statements whatever the page size."""
    code_ids = {c.code_id for c in conversions if c.code_id is not None}
    codes: dict[UUID, str] = {}
    if code_ids:
        found = await session.execute(select(Code.id, Code.code).where(Code.id.in_(code_ids)))
        codes = {code_id: code for code_id, code in found}
    rewards = await ledger.rewards_of(session, [c.id for c in conversions])
    return [
        _conversion_out(c, codes.get(c.code_id) if c.code_id else None, rewards[c.id])
        for c in conversions
    ]


def _conversion_out(
    conversion: Conversion, code: str | None, rewards: list[RewardOut]
) -> ConversionOut:
    return ConversionOut(
        id=conversion.id,
        program_id=conversion.program_id,
        event_id=conversion.event_id,
        customer_id=conversion.customer_id,
        amount=conversion.amount,
        currency=conversion.currency,
        occurred_at=conversion.occurred_at,
        status=conversion.status,
        attribution_reason=conversion.attribution_reason,
        referrer_id=conversion.referrer_id,
        referral_id=conversion.referral_id,
        code=code,
        click_id=conversion.click_id,
        refunded_amount=conversion.refunded_amount,
        metadata=conversion.metadata_,
        rewards=rewards,
        created_at=conversion.created_at,
    )


async def get_conversion(
    session: AsyncSession, principal: Principal, conversion_id: UUID, *, for_update: bool = False
) -> Conversion:
    query = select(Conversion).where(Conversion.id == conversion_id)
    if for_update:
        query = query.with_for_update()
    query = query.execution_options(populate_existing=True)
    return await get_visible(session, query, principal, ConversionNotFound, Conversion.program_id)


async def read_conversion(
    session: AsyncSession, principal: Principal, conversion_id: UUID
) -> ConversionOut:
    conversion = await get_conversion(session, principal, conversion_id)
    return await conversion_out(session, conversion)


async def explain_attribution(
    session: AsyncSession, principal: Principal, conversion_id: UUID
) -> Attribution:
    """Which touch won the conversion, which lost, and why."""
    conversion = await get_conversion(session, principal, conversion_id)
    record = conversion.attribution
    candidates = [Candidate.model_validate(c) for c in record.get("candidates", [])]
    return Attribution(
        conversion_id=conversion.id,
        status=conversion.status,
        reason=conversion.attribution_reason,
        model=record.get("model", ""),
        window_days=int(record.get("window_days", 0)),
        winner=next((c for c in candidates if c.outcome == "won"), None),
        candidates=candidates,
    )


@dataclass(frozen=True)
class ConversionFilters:
    program_id: UUID | None = None
    referrer_id: UUID | None = None
    customer_id: str | None = None
    status: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


async def list_conversions(
    session: AsyncSession, principal: Principal, filters: ConversionFilters, params: PageParams
) -> tuple[list[ConversionOut], str | None]:
    query = scoped(select(Conversion), principal, Conversion.program_id)
    conditions = [
        Conversion.program_id == filters.program_id if filters.program_id else None,
        Conversion.referrer_id == filters.referrer_id if filters.referrer_id else None,
        Conversion.customer_id == filters.customer_id if filters.customer_id else None,
        Conversion.status == filters.status if filters.status else None,
        Conversion.occurred_at >= filters.occurred_from if filters.occurred_from else None,
        Conversion.occurred_at < filters.occurred_to if filters.occurred_to else None,
    ]
    query = query.where(*(condition for condition in conditions if condition is not None))
    rows, next_cursor = await paginate(session, query, Conversion, params)
    return await conversions_out(session, rows), next_cursor


async def refund(
    session: AsyncSession, principal: Principal, conversion_id: UUID, data: RefundCreate
) -> tuple[RefundOut, bool]:
    """Refund part or all of a conversion and adjust its rewards; idempotent on refund_id."""
    conversion = await get_conversion(session, principal, conversion_id, for_update=True)
    fingerprint = request_hash(data)
    if data.refund_id is not None:
        existing = await session.scalar(
            select(Refund).where(
                Refund.conversion_id == conversion.id, Refund.refund_id == data.refund_id
            )
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise RefundConflict(f"refund_id {data.refund_id!r} was used with another body.")
            return _refund_out(existing, conversion), False
    remaining = conversion.amount - conversion.refunded_amount
    if remaining <= 0:
        raise AlreadyRefunded("Nothing is left to refund.")
    # Only the caller's amount is checked: what remains carries the column's four decimals.
    if data.amount is not None and not has_valid_precision(data.amount, conversion.currency):
        raise InvalidAmount(
            f"{data.amount} has more decimals than {conversion.currency} allows "
            f"({minor_unit(conversion.currency)})."
        )
    amount = data.amount if data.amount is not None else remaining
    if amount > remaining:
        # The column keeps four decimals; people read the currency's own ("60.00 USD").
        left = for_display(remaining, conversion.currency)
        raise RefundTooLarge(f"At most {left} {conversion.currency} is left to refund.")
    now = utcnow()
    conversion.refunded_amount = conversion.refunded_amount + amount
    row = Refund(
        created_at=now,
        conversion_id=conversion.id,
        refund_id=data.refund_id,
        request_hash=fingerprint,
        amount=amount,
        refunded_total=conversion.refunded_amount,
        reason=data.reason,
    )
    session.add(row)
    await session.flush()
    await ledger.adjust_for_refund(session, conversion, now)
    await emit(
        session,
        conversion.program_id,
        "conversion.refunded",
        lambda: conversion_out(session, conversion),
        extra={"refund": _refund_out(row, conversion)},
    )
    return _refund_out(row, conversion), True


def _refund_out(row: Refund, conversion: Conversion) -> RefundOut:
    return RefundOut(
        id=row.id,
        conversion_id=row.conversion_id,
        refund_id=row.refund_id,
        amount=row.amount,
        currency=conversion.currency,
        refunded_total=row.refunded_total,
        reason=row.reason,
        created_at=row.created_at,
    )

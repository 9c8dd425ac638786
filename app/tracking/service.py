"""Clicks (through links and the API) and redemptions of codes into referrals."""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import ApiKeyPrincipal, KeyKind, Principal
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, utcnow
from app.core.errors import AppError
from app.programs.models import Program, ProgramStatus, RedemptionProof
from app.programs.service import ensure_active
from app.programs.tokens import check_token
from app.referrers.codes import code_state
from app.referrers.models import Code, Referrer
from app.referrers.service import CodeCache, find_code, increment_redemptions
from app.tracking.bots import is_bot
from app.tracking.click_writer import ClickWriter, claim_unique_visits
from app.tracking.models import Click, Referral
from app.tracking.schemas import ClickCreate, ClickOut, RedemptionCreate, RedemptionOut
from app.webhooks.outbox import emit_referral_created


class CodeDisabled(AppError):
    status, code, title = 409, "code_disabled", "The code is disabled"


class CodeExpired(AppError):
    status, code, title = 409, "code_expired", "The code has expired"


class CodeExhausted(AppError):
    status, code, title = 409, "code_exhausted", "The code has no redemptions left"


class SelfReferral(AppError):
    status, code, title = 422, "self_referral", "A referrer cannot redeem their own code"


class AlreadyReferred(AppError):
    status, code, title = 409, "already_referred", "The customer is already referred"


# Without the customer's id: a stored Idempotency-Key answer keeps no personal data of its own.
ALREADY_REFERRED = "The customer is already referred in this program."


class ClickNotFound(AppError):
    status, code, title = 422, "click_not_found", "No such click in this program"


class RedemptionProofRequired(AppError):
    status, code, title = 422, "redemption_proof_required", "The redemption needs a proof"


class ClickCodeMismatch(AppError):
    status, code, title = 422, "click_code_mismatch", "The click was on another code"


class ClickAlreadyUsed(AppError):
    status, code, title = 409, "click_already_used", "The click belongs to another customer"


@dataclass(frozen=True)
class Visit:
    """What the HTTP layer knows of the visitor; the IP is hashed before it goes anywhere."""

    ip: str | None
    user_agent: str | None


def hash_ip(settings: Settings, ip: str | None) -> str | None:
    if not ip:
        return None
    return hmac.new(settings.ip_hash_salt.encode(), ip.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ClickDetails:
    """Where the visit came from; every field is optional."""

    landing_url: str | None = None
    referring_url: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    visitor_id: str | None = None


async def record_click(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    data: ClickCreate,
    visit: Visit,
    writer: ClickWriter | None = None,
    cache: CodeCache | None = None,
) -> ClickOut:
    """Store one visit reported by a widget; refused when the program is not active."""
    code, program = await find_code(session, principal, data.code, cache=cache)
    ensure_active(program)
    return await _store_click(
        session, settings, code, program, _api_details(data), visit, source="api", writer=writer
    )


def _api_details(data: ClickCreate) -> ClickDetails:
    return ClickDetails(
        landing_url=str(data.landing_url) if data.landing_url else None,
        referring_url=str(data.referring_url) if data.referring_url else None,
        utm_source=data.utm_source,
        utm_medium=data.utm_medium,
        utm_campaign=data.utm_campaign,
        visitor_id=data.visitor_id,
    )


async def record_cached_click(
    settings: Settings,
    code: Code,
    program: Program,
    data: ClickCreate,
    visit: Visit,
    writer: ClickWriter,
) -> ClickOut:
    """record_click for a code and program the caller already holds (the lean path,
    app.http.lean: from the code cache, visible to the key): no session, the writer stores it."""
    ensure_active(program)
    values = _click_values(settings, code, program, _api_details(data), visit, source="api")
    return _click_out(values, code, await writer.write(values))


async def follow_cached_link(
    settings: Settings,
    code: Code,
    program: Program,
    details: ClickDetails,
    visit: Visit,
    writer: ClickWriter,
) -> ClickOut:
    """follow_link for a code of an active program the caller already holds (the lean path)."""
    values = _click_values(settings, code, program, details, visit, source="link")
    return _click_out(values, code, await writer.write(values))


async def follow_link(
    session: AsyncSession,
    settings: Settings,
    code_text: str,
    details: ClickDetails,
    visit: Visit,
    writer: ClickWriter | None = None,
    cache: CodeCache | None = None,
) -> tuple[ClickOut | None, Code, Program]:
    """A shopper followed `/r/{code}`: the click, or None when the program takes no clicks.

    Raises CodeNotFound for a code that does not exist.
    """
    code, program = await find_code(session, None, code_text, cache=cache)
    if program.status != ProgramStatus.ACTIVE:
        return None, code, program
    click = await _store_click(
        session, settings, code, program, details, visit, source="link", writer=writer
    )
    return click, code, program


async def peek_link(
    session: AsyncSession, code_text: str, cache: CodeCache | None = None
) -> tuple[Code, Program, bool]:
    """Where `/r/{code}` leads, recording nothing: the code, its program, and whether a click
    through it now would be attributable (not disabled or expired).

    Raises CodeNotFound for a code that does not exist.
    """
    code, program = await find_code(session, None, code_text, cache=cache)
    return code, program, code_state(code, program, utcnow()) not in ("disabled", "expired")


async def _store_click(
    session: AsyncSession,
    settings: Settings,
    code: Code,
    program: Program,
    details: ClickDetails,
    visit: Visit,
    *,
    source: str,
    writer: ClickWriter | None,
) -> ClickOut:
    """Store the click, flagged bot or duplicate rather than dropped.

    A disabled or expired code still records the visit, as not attributable. With a writer the
    click goes into the next group commit; without one (a request with an Idempotency-Key, whose
    stored answer must commit together with the click) it is inserted in the request's session.
    """
    values = _click_values(settings, code, program, details, visit, source=source)
    if writer is not None:
        # The request's own transaction holds only reads (and the key's last-used time): end it
        # now, so that no request holds a connection (or SQLite's write lock) while it waits
        # for the writer, which needs one to flush.
        await session.commit()
        duplicate = await writer.write(values)
    else:
        window = timedelta(hours=settings.duplicate_click_window_hours)
        [duplicate] = await claim_unique_visits(session, [values], window)
        await session.execute(insert(Click).values(**values, is_duplicate=duplicate))
    return _click_out(values, code, duplicate)


def _click_values(
    settings: Settings,
    code: Code,
    program: Program,
    details: ClickDetails,
    visit: Visit,
    *,
    source: str,
) -> dict[str, Any]:
    """The row of one click (without is_duplicate, which its claim decides)."""
    now = utcnow()
    ip_hash = hash_ip(settings, visit.ip)
    user_agent = visit.user_agent[:1024] if visit.user_agent else None
    return {
        "id": uuid4(),
        "created_at": now,
        "occurred_at": now,
        "program_id": program.id,
        "code_id": code.id,
        "referrer_id": code.referrer_id,
        "source": source,
        "landing_url": details.landing_url,
        "referring_url": details.referring_url[:2048] if details.referring_url else None,
        "utm_source": details.utm_source,
        "utm_medium": details.utm_medium,
        "utm_campaign": details.utm_campaign,
        "visitor_id": details.visitor_id,
        "ip_hash": ip_hash,
        "user_agent": user_agent,
        "is_bot": is_bot(user_agent),
        "attributable": code_state(code, program, now) not in ("disabled", "expired"),
        "customer_id": None,
    }


def _click_out(values: dict[str, Any], code: Code, duplicate: bool) -> ClickOut:
    return ClickOut(
        click_id=values["id"],
        program_id=values["program_id"],
        code=code.code,
        attributable=values["attributable"],
        is_bot=values["is_bot"],
        is_duplicate=duplicate,
        occurred_at=values["occurred_at"],
    )


async def redeem(
    session: AsyncSession, principal: Principal, data: RedemptionCreate
) -> RedemptionOut:
    """A new customer redeems a code: the referral is made, and one use of the code taken."""
    code, program = await find_code(session, principal, data.code)
    ensure_active(program)
    # Before anything that answers differently per customer (already_referred): without the
    # proof a widget key learns nothing about the customer it names.
    proof_required = await _check_proof(session, principal, program, code, data)
    state = code_state(code, program, utcnow())
    if state == "disabled":
        raise CodeDisabled()
    if state == "expired":
        raise CodeExpired()
    referrer = await session.get(Referrer, code.referrer_id)
    assert referrer is not None
    if referrer.external_id == data.customer_id or (
        data.email and referrer.email and referrer.email.lower() == data.email.lower()
    ):
        raise SelfReferral("The customer is the code's own referrer.")
    if await _referral_exists(session, program.id, data.customer_id):
        raise AlreadyReferred(ALREADY_REFERRED)
    click = await _customer_click(session, program.id, data.click_id) if data.click_id else None
    if click is not None and proof_required:
        await _claim_click(session, click, data.customer_id)
    if not await increment_redemptions(session, code):
        raise CodeExhausted()
    now = utcnow()
    referral_id = uuid4()
    result = await session.execute(
        insert_ignoring_conflicts(
            session,
            Referral.__table__,
            {
                "id": referral_id,
                "created_at": now,
                "occurred_at": now,
                "program_id": program.id,
                "referrer_id": code.referrer_id,
                "code_id": code.id,
                "click_id": click.id if click else None,
                "customer_id": data.customer_id,
                "email": data.email,
                "source": "redemption",
            },
        ).returning(Referral.__table__.c.id)
    )
    if result.scalar() is None:
        # Lost a race with a concurrent redemption by the same customer; the code use rolls back.
        raise AlreadyReferred(ALREADY_REFERRED)
    await emit_referral_created(session, referral_id)
    if click is not None and click.customer_id is None:
        click.customer_id = data.customer_id
        await session.flush()
    return RedemptionOut(
        referral_id=referral_id,
        program_id=program.id,
        referrer_id=code.referrer_id,
        code=code.code,
        customer_id=data.customer_id,
        click_id=click.id if click else None,
        created_at=now,
    )


async def _check_proof(
    session: AsyncSession,
    principal: Principal,
    program: Program,
    code: Code,
    data: RedemptionCreate,
) -> bool:
    """Check a given customer token; for a widget key of a program that asks for proof,
    require one (program.redemption_proof). Returns whether the click must be claimed."""
    if data.customer_token is not None:
        await check_token(session, program.id, data.customer_id, data.customer_token, utcnow())
    widget = isinstance(principal, ApiKeyPrincipal) and principal.kind == KeyKind.PUBLISHABLE
    if not widget or program.redemption_proof == RedemptionProof.NONE:
        return False
    if data.click_id is not None:
        click = await _customer_click(session, program.id, data.click_id)
        if click.code_id != code.id:
            raise ClickCodeMismatch("The click_id is of a click on another code.")
    if data.customer_token is not None:
        return data.click_id is not None
    if program.redemption_proof == RedemptionProof.CLICK_OR_TOKEN and data.click_id is not None:
        return True
    wanted = (
        "a customer_token"
        if program.redemption_proof == RedemptionProof.TOKEN
        else "the click_id of a click on this code, or a customer_token"
    )
    raise RedemptionProofRequired(f"This program takes a widget's redemption with {wanted}.")


async def _claim_click(session: AsyncSession, click: Click, customer_id: str) -> None:
    """A click proves one customer's visit: the first redemption naming it takes it, atomically."""
    result = await session.execute(
        update(Click)
        .where(
            Click.id == click.id,
            or_(Click.customer_id.is_(None), Click.customer_id == customer_id),
        )
        .values(customer_id=customer_id)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise ClickAlreadyUsed("The click is tied to another customer; a click proves one visit.")
    click.customer_id = customer_id


async def _referral_exists(session: AsyncSession, program_id: UUID, customer_id: str) -> bool:
    found = await session.scalar(
        select(Referral.id).where(
            Referral.program_id == program_id, Referral.customer_id == customer_id
        )
    )
    return found is not None


async def _customer_click(session: AsyncSession, program_id: UUID, click_id: UUID) -> Click:
    click = await session.get(Click, click_id)
    if click is None or click.program_id != program_id:
        raise ClickNotFound(f"No click {click_id} in this program.")
    return click

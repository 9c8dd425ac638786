"""Clicks (through links and the API) and redemptions of codes into referrals."""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import insert_ignoring_conflicts, utcnow
from app.errors import AppError
from app.keys.service import Principal
from app.programs.models import Program
from app.programs.service import ensure_active
from app.referrers.codes import code_state
from app.referrers.models import Code, Referrer
from app.referrers.service import find_code, increment_redemptions
from app.tracking.bots import is_bot
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


class ClickNotFound(AppError):
    status, code, title = 422, "click_not_found", "No such click in this program"


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
) -> ClickOut:
    """Store one visit reported by a widget; refused when the program is not active."""
    code, program = await find_code(session, principal, data.code)
    ensure_active(program)
    details = ClickDetails(
        landing_url=str(data.landing_url) if data.landing_url else None,
        referring_url=str(data.referring_url) if data.referring_url else None,
        utm_source=data.utm_source,
        utm_medium=data.utm_medium,
        utm_campaign=data.utm_campaign,
        visitor_id=data.visitor_id,
    )
    return await _store_click(session, settings, code, program, details, visit, source="api")


async def follow_link(
    session: AsyncSession, settings: Settings, code_text: str, details: ClickDetails, visit: Visit
) -> tuple[ClickOut | None, Code, Program]:
    """A shopper followed `/r/{code}`: the click, or None when the program takes no clicks.

    Raises CodeNotFound for a code that does not exist.
    """
    code, program = await find_code(session, None, code_text)
    if program.status != "active":
        return None, code, program
    click = await _store_click(session, settings, code, program, details, visit, source="link")
    return click, code, program


async def _store_click(
    session: AsyncSession,
    settings: Settings,
    code: Code,
    program: Program,
    details: ClickDetails,
    visit: Visit,
    *,
    source: str,
) -> ClickOut:
    """Insert the click, flagged bot or duplicate rather than dropped.

    A disabled or expired code still records the visit, as not attributable.
    """
    now = utcnow()
    ip_hash = hash_ip(settings, visit.ip)
    user_agent = visit.user_agent[:1024] if visit.user_agent else None
    duplicate = await _is_duplicate(session, settings, code, details.visitor_id, ip_hash, now)
    click = ClickOut(
        click_id=uuid4(),
        program_id=program.id,
        code=code.code,
        attributable=code_state(code, program, now) not in ("disabled", "expired"),
        is_bot=is_bot(user_agent),
        is_duplicate=duplicate,
        occurred_at=now,
    )
    await session.execute(
        insert(Click).values(
            id=click.click_id,
            created_at=now,
            occurred_at=now,
            program_id=program.id,
            code_id=code.id,
            referrer_id=code.referrer_id,
            source=source,
            landing_url=details.landing_url,
            referring_url=details.referring_url[:2048] if details.referring_url else None,
            utm_source=details.utm_source,
            utm_medium=details.utm_medium,
            utm_campaign=details.utm_campaign,
            visitor_id=details.visitor_id,
            ip_hash=ip_hash,
            user_agent=user_agent,
            is_bot=click.is_bot,
            is_duplicate=duplicate,
            attributable=click.attributable,
        )
    )
    return click


async def _is_duplicate(
    session: AsyncSession,
    settings: Settings,
    code: Code,
    visitor_id: str | None,
    ip_hash: str | None,
    now: datetime,
) -> bool:
    same_visitor = [
        condition
        for condition in (
            Click.visitor_id == visitor_id if visitor_id else None,
            Click.ip_hash == ip_hash if ip_hash else None,
        )
        if condition is not None
    ]
    if not same_visitor:
        return False
    since = now - timedelta(hours=settings.duplicate_click_window_hours)
    found = await session.scalar(
        select(Click.id)
        .where(Click.code_id == code.id, Click.occurred_at >= since, or_(*same_visitor))
        .limit(1)
    )
    return found is not None


async def redeem(
    session: AsyncSession, principal: Principal, data: RedemptionCreate
) -> RedemptionOut:
    """A new customer redeems a code: the referral is made, and one use of the code taken."""
    code, program = await find_code(session, principal, data.code)
    ensure_active(program)
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
        raise AlreadyReferred(f"Customer {data.customer_id!r} is already referred in this program.")
    click = await _customer_click(session, program.id, data.click_id) if data.click_id else None
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
        raise AlreadyReferred(f"Customer {data.customer_id!r} is already referred in this program.")
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

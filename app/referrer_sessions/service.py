"""Referrer sessions: short-lived bearer tokens that let one referrer read their own /v1/me….

The merchant's backend mints a token after its own login (or sends it in a portal link); the
token carries 256 random bits behind the `rk_ref_` prefix, is shown once and kept only as a
SHA-256 hash, like an API key. It expires, and it can be revoked one by one, all of a
referrer's at once, or by the referrer (sign out).
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import ApiKeyPrincipal, Principal, ReferrerPrincipal, get_visible
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError, Forbidden
from app.keys.service import hash_key
from app.referrer_sessions.models import ReferrerSession, SessionPurpose
from app.referrer_sessions.schemas import (
    PortalLink,
    SessionCreate,
    SessionCreated,
    SessionOut,
    SessionsRevoked,
)
from app.referrers.service import get_referrer

TOKEN_PREFIX = "rk_ref_"
PORTAL_PATH = "/portal"


class SessionNotFound(AppError):
    status, code, title = 404, "referrer_session_not_found", "Referrer session not found"


class SessionExpired(AppError):
    status, code, title = 401, "session_expired", "The referrer session has expired"


class SessionRevoked(AppError):
    status, code, title = 401, "session_revoked", "The referrer session was revoked"


class ReferrerSessionNotAllowed(Forbidden):
    code, title = "referrer_session_not_allowed", "A referrer session may call only /v1/me…"


class ReferrerSessionRequired(Forbidden):
    code, title = "referrer_session_required", "Only a referrer session may call /v1/me…"


class InvalidTtl(AppError):
    status, code, title = 422, "invalid_ttl", "The session lifetime is not allowed"


def is_session_token(raw_token: str) -> bool:
    """Whether a bearer credential is a referrer session token (by its prefix, no lookup)."""
    return raw_token.startswith(TOKEN_PREFIX)


@dataclass(frozen=True)
class Authenticated:
    principal: ReferrerPrincipal
    expires_at: datetime


def _lifetime(settings: Settings, data: SessionCreate | None, default: int) -> timedelta:
    seconds = data.ttl_seconds if data is not None and data.ttl_seconds is not None else default
    if seconds > settings.referrer_session_max_ttl_seconds:
        raise InvalidTtl(
            f"ttl_seconds may be at most {settings.referrer_session_max_ttl_seconds} "
            "(REFERRAL_REFERRER_SESSION_MAX_TTL_SECONDS)."
        )
    return timedelta(seconds=seconds)


async def _mint(
    session: AsyncSession,
    principal: Principal,
    referrer_id: UUID,
    lifetime: timedelta,
    purpose: SessionPurpose,
) -> SessionCreated:
    referrer, _ = await get_referrer(session, principal, referrer_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ReferrerSession(
        created_at=now,
        program_id=referrer.program_id,
        referrer_id=referrer.id,
        token_hash=hash_key(token),
        prefix=token[:12],
        purpose=purpose,
        created_by_key_id=principal.key_id if isinstance(principal, ApiKeyPrincipal) else None,
        expires_at=now + lifetime,
    )
    session.add(row)
    await session.flush()
    return SessionCreated(**session_out(row).model_dump(), token=token)


async def mint_session(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    referrer_id: UUID,
    data: SessionCreate | None,
) -> SessionCreated:
    """A new session token for the referrer; the token is returned this once."""
    lifetime = _lifetime(settings, data, settings.referrer_session_ttl_seconds)
    return await _mint(session, principal, referrer_id, lifetime, SessionPurpose.SESSION)


async def mint_portal_link(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    referrer_id: UUID,
    data: SessionCreate | None,
) -> PortalLink:
    """A magic link to the hosted portal: a fresh token in the URL's fragment.

    The fragment is never sent to a server, so the token stays out of access logs and proxies
    between the referrer's browser and the portal page.
    """
    lifetime = _lifetime(settings, data, settings.referrer_portal_link_ttl_seconds)
    created = await _mint(session, principal, referrer_id, lifetime, SessionPurpose.PORTAL_LINK)
    url = f"{settings.public_base_url.rstrip('/')}{PORTAL_PATH}#token={created.token}"
    return PortalLink(**created.model_dump(), url=url)


async def authenticate(
    session: AsyncSession, raw_token: str, now: datetime | None = None
) -> Authenticated | None:
    """The principal of a live token; None when the token is unknown.

    A known token that was revoked or has expired raises SessionRevoked / SessionExpired, so
    that a widget can tell the referrer to ask for a new link.
    """
    digest = hash_key(raw_token)
    row = await session.scalar(select(ReferrerSession).where(ReferrerSession.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None:
        raise SessionRevoked(
            "This referrer session was revoked; ask the shop for a new link.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if row.expires_at <= (now or utcnow()):
        raise SessionExpired(
            "This referrer session has expired; ask the shop for a new link.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    principal = ReferrerPrincipal(
        session_id=row.id, referrer_id=row.referrer_id, program_id=row.program_id
    )
    return Authenticated(principal=principal, expires_at=row.expires_at)


def session_out(row: ReferrerSession) -> SessionOut:
    return SessionOut(
        session_id=row.id,
        referrer_id=row.referrer_id,
        program_id=row.program_id,
        purpose=row.purpose,
        prefix=row.prefix,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
    )


async def revoke_session(
    session: AsyncSession, principal: Principal, session_id: UUID
) -> SessionOut:
    """Revoke one session; revoking twice is harmless (the first time is kept)."""
    query = select(ReferrerSession).where(ReferrerSession.id == session_id).with_for_update()
    row = await get_visible(session, query, principal, SessionNotFound, ReferrerSession.program_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return session_out(row)


async def revoke_referrer_sessions(
    session: AsyncSession, principal: Principal, referrer_id: UUID
) -> SessionsRevoked:
    """Revoke every live session of the referrer (e.g. when they log out everywhere)."""
    referrer, _ = await get_referrer(session, principal, referrer_id)
    now = utcnow()
    result = await session.execute(
        update(ReferrerSession)
        .where(
            ReferrerSession.referrer_id == referrer.id,
            ReferrerSession.revoked_at.is_(None),
            ReferrerSession.expires_at > now,
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return SessionsRevoked(
        referrer_id=referrer.id,
        revoked=int(result.rowcount or 0),  # type: ignore[attr-defined]
    )


async def end_own_session(session: AsyncSession, principal: ReferrerPrincipal) -> None:
    """The referrer signs out: their current token stops working."""
    await session.execute(
        update(ReferrerSession)
        .where(ReferrerSession.id == principal.session_id, ReferrerSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )

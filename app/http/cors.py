"""CORS for storefront widgets: only the widget endpoints, only the programs' origins.

Secret endpoints never send a CORS allowance, so a browser page can never read them. The
publishable ones (clicks, redemptions, code lookup) and the referrer session's `/v1/me…` allow
the storefront origins configured on the programs. A preflight carries no credential, so it is
answered against the origins of all programs; the request itself is then checked against the
key's own programs (`require_allowed_origin`) or the session's program
(`require_session_origin`).
"""

import time
from typing import Annotated
from uuid import UUID

from cachetools import TTLCache
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.access import ApiKeyPrincipal, KeyKind, ReferrerPrincipal, scoped
from app.core.config import Settings
from app.core.errors import AppError
from app.http.auth import AnyKey, AnyReferrerSession
from app.http.dependencies import SessionDep
from app.http.unit_of_work import claim_idempotency_key
from app.programs.models import Program, ProgramStatus

ALLOW_HEADERS = b"authorization, content-type, idempotency-key, x-request-id"
EXPOSE_HEADERS = b"x-request-id, retry-after, idempotent-replayed"


class OriginNotAllowed(AppError):
    status, code, title = 403, "origin_not_allowed", "This origin may not call this program"


def is_public_path(method: str, path: str) -> bool:
    if path in ("/v1/clicks", "/v1/redemptions"):
        return method in ("POST", "OPTIONS")
    if is_me_path(path):
        return method in ("GET", "PATCH", "DELETE", "OPTIONS")
    return path.startswith("/v1/codes/") and path.count("/") == 3 and method in ("GET", "OPTIONS")


def is_me_path(path: str) -> bool:
    return path == "/v1/me" or path.startswith("/v1/me/")


class OriginCache:
    """The storefront origins of every live program, re-read at most every `ttl` seconds."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self.sessionmaker = sessionmaker
        self.ttl = ttl
        self._origins: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    async def all_origins(self) -> frozenset[str]:
        if time.monotonic() - self._read_at > self.ttl:
            async with self.sessionmaker() as session:
                rows = await session.scalars(
                    select(Program.allowed_origins).where(Program.status != ProgramStatus.ARCHIVED)
                )
                self._origins = frozenset(origin for row in rows for origin in row or [])
            self._read_at = time.monotonic()
        return self._origins


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: OriginCache) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None or not is_public_path(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        allowed = origin in await self.origins.all_origins()
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            headers = [(b"vary", b"Origin")]
            if allowed:
                headers += [
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-allow-methods", _methods(scope["path"])),
                    (b"access-control-allow-headers", ALLOW_HEADERS),
                    (b"access-control-max-age", b"600"),
                ]
            await send(
                {
                    "type": "http.response.start",
                    "status": 204 if allowed else 403,
                    "headers": headers,
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"vary", b"Origin")]
                if allowed:
                    headers += [
                        (b"access-control-allow-origin", origin.encode()),
                        (b"access-control-expose-headers", EXPOSE_HEADERS),
                    ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _methods(path: str) -> bytes:
    return b"GET, PATCH, DELETE" if is_me_path(path) else b"GET, POST"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def require_allowed_origin(
    request: Request, principal: AnyKey, session: SessionDep
) -> ApiKeyPrincipal:
    """A browser call (it has an Origin) must come from one of the key's programs' storefronts."""
    origin = request.headers.get("origin")
    if origin is None or principal.kind != KeyKind.PUBLISHABLE:
        return principal
    query = scoped(select(Program.allowed_origins), principal, Program.id)
    origins = frozenset(o for row in await session.scalars(query) for o in row or [])
    key_origins: KeyOrigins | None = request.app.state.key_origins
    if key_origins is not None:
        key_origins[principal.key_id] = origins
    if origin not in origins:
        raise OriginNotAllowed(f"{origin} is not a storefront origin of this key's programs.")
    return principal


# The storefront origins of a publishable key's programs, for as long as keys are cached: what
# require_allowed_origin read, for the lean path (app.http.lean) to check without a query.
KeyOrigins = TTLCache[UUID, frozenset[str]]


def key_origins(settings: Settings) -> KeyOrigins | None:
    if settings.auth_cache_seconds <= 0:
        return None
    return TTLCache(maxsize=10_000, ttl=settings.auth_cache_seconds)


def cached_origin_allowed(
    cache: KeyOrigins | None, principal: ApiKeyPrincipal, origin: str | None
) -> bool | None:
    """require_allowed_origin from the cache alone: True or False, or None when not cached."""
    if origin is None or principal.kind != KeyKind.PUBLISHABLE:
        return True
    origins = cache.get(principal.key_id) if cache is not None else None
    return None if origins is None else origin in origins


async def load_key_origins(
    sessionmaker: async_sessionmaker[AsyncSession], cache: KeyOrigins, principal: ApiKeyPrincipal
) -> frozenset[str]:
    """The storefront origins of the key's programs, read and cached (the lean path's refill)."""
    async with sessionmaker() as session:
        query = scoped(select(Program.allowed_origins), principal, Program.id)
        origins = frozenset(o for row in await session.scalars(query) for o in row or [])
    cache[principal.key_id] = origins
    return origins


WidgetKey = Annotated[ApiKeyPrincipal, Depends(require_allowed_origin)]


async def require_session_origin(
    request: Request, principal: AnyReferrerSession, session: SessionDep
) -> ReferrerPrincipal:
    """A browser call to /v1/me… must come from a storefront origin of the session's program,
    or from this service's own pages (the hosted portal: a browser sends its Origin on a
    same-origin PATCH or DELETE too)."""
    origin = request.headers.get("origin")
    if origin is None or origin == f"{request.url.scheme}://{request.url.netloc}":
        return principal
    origins = await session.scalar(
        select(Program.allowed_origins).where(Program.id == principal.program_id)
    )
    if origin not in (origins or []):
        raise OriginNotAllowed(f"{origin} is not a storefront origin of this program.")
    return principal


MeSession = Annotated[ReferrerPrincipal, Depends(require_session_origin)]


async def idempotent_session(
    request: Request, principal: MeSession, session: SessionDep
) -> ReferrerPrincipal:
    """MeSession for a POST that takes an Idempotency-Key (claimed for the referrer)."""
    await claim_idempotency_key(request, session, principal)
    return principal


MeSessionPost = Annotated[ReferrerPrincipal, Depends(idempotent_session)]

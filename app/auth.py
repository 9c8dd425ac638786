"""`Authorization: Bearer <key>` → Principal, and the checks endpoints declare."""

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

from cachetools import TTLCache
from fastapi import Depends, Request

from app.config import Settings
from app.db import SessionDep
from app.errors import COMMON_ERRORS, AppError, Forbidden, Unauthorized
from app.keys.service import Principal, authenticate, hash_key
from app.ratelimit import RateLimited, client_ip, rate_limiter

PUBLISHABLE = "publishable"
SECRET = "secret"
ADMIN = "admin"

# What every operation behind an API key may answer besides its own errors (declared on the
# routers: `responses=problem_responses(*AUTHENTICATED_ERRORS)`).
AUTHENTICATED_ERRORS: tuple[type[AppError], ...] = (
    Unauthorized,
    Forbidden,
    RateLimited,
    *COMMON_ERRORS,
)


async def get_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache: PrincipalCache | None = request.app.state.principal_cache
    digest = hash_key(raw_key.strip())
    principal = cache.get(digest) if cache is not None else None
    if principal is None:
        principal = await _authenticate_uncached(request, session, raw_key.strip())
        if cache is not None:
            cache[digest] = principal
    request.state.key_id = principal.key_id
    return principal


async def _authenticate_uncached(request: Request, session: SessionDep, raw_key: str) -> Principal:
    limiter = rate_limiter(request)
    ip = client_ip(request, request.app.state.settings) or "-"
    await limiter.check(limiter.failed_auth_per_ip, "auth", ip)
    principal = await authenticate(session, raw_key)
    if principal is None:
        await limiter.hit(limiter.failed_auth_per_ip, "auth", ip)
        raise Unauthorized(
            "The API key is unknown or revoked.", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


# Valid keys only, for a few seconds: a revocation reaches other replicas within that time.
PrincipalCache = TTLCache[str, Principal]


def principal_cache(settings: Settings) -> PrincipalCache | None:
    if settings.auth_cache_seconds <= 0:
        return None
    return TTLCache(maxsize=10_000, ttl=settings.auth_cache_seconds)


def allow(*kinds: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through the given key kinds (admin keys always pass)."""
    allowed = {ADMIN, *kinds}

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.kind not in allowed:
            raise Forbidden(f"A {principal.kind} key may not call this endpoint.")
        return principal

    return dependency


def ensure_program_access(
    principal: Principal, program_id: UUID, not_found: type[AppError]
) -> None:
    """Another program's objects answer exactly like objects that do not exist."""
    if not principal.can_access(program_id):
        raise not_found()


AdminKey = Annotated[Principal, Depends(allow())]
SecretKey = Annotated[Principal, Depends(allow(SECRET))]
AnyKey = Annotated[Principal, Depends(allow(SECRET, PUBLISHABLE))]

"""`Authorization: Bearer <key>` → ApiKeyPrincipal, and the key kinds endpoints declare.

Once a key has authenticated and may call the endpoint, the request's Idempotency-Key (if any)
is claimed for it (app.http.unit_of_work): a replay never reaches an unauthenticated caller.
A bearer token with the referrer session prefix (`rk_ref_`) is another kind of caller: it
becomes a ReferrerPrincipal on `/v1/me…` only (`get_referrer_principal`, and
`MeSession` in app.http.cors with the storefront origin check); every endpoint behind an API
key refuses it with 403 `referrer_session_not_allowed`, and `/v1/me…` refuses API keys with 403
`referrer_session_required`.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from cachetools import TTLCache
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import ApiKeyPrincipal, KeyKind, ReferrerPrincipal
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import COMMON_ERRORS, AppError, Forbidden, Unauthorized
from app.http.dependencies import SessionDep
from app.http.ratelimit import (
    RateLimited,
    client_ip,
    limit_me_per_ip,
    limit_me_per_session,
    rate_limiter,
)
from app.http.unit_of_work import claim_idempotency_key
from app.keys.service import authenticate, hash_key
from app.referrer_sessions import service as referrer_sessions
from app.referrer_sessions.service import (
    Authenticated,
    ReferrerSessionNotAllowed,
    ReferrerSessionRequired,
    SessionExpired,
    SessionRevoked,
    is_session_token,
)

# What every operation behind an API key may answer besides its own errors (declared on the
# routers: `responses=problem_responses(*AUTHENTICATED_ERRORS)`).
AUTHENTICATED_ERRORS: tuple[type[AppError], ...] = (
    Unauthorized,
    Forbidden,
    ReferrerSessionNotAllowed,
    RateLimited,
    *COMMON_ERRORS,
)


async def get_principal(request: Request, session: SessionDep) -> ApiKeyPrincipal:
    header = request.headers.get("authorization", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if is_session_token(raw_key.strip()):
        # Decided by the prefix, before any lookup: a session token is never an API key.
        raise ReferrerSessionNotAllowed(
            "A referrer session token may call only /v1/me…; this endpoint takes an API key."
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


async def _authenticate_uncached(
    request: Request, session: SessionDep, raw_key: str
) -> ApiKeyPrincipal:
    principal = await authenticate(session, raw_key)
    if principal is None:
        # Failures are counted per client IP (429 past the limit), but a key that authenticates
        # always passes: behind a proxy every client shares one address.
        limiter = rate_limiter(request)
        await limiter.hit(limiter.failed_auth_per_ip, "auth", client_ip(request) or "-")
        raise Unauthorized(
            "The API key is unknown or revoked.", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


# Valid keys only, for a few seconds: a revocation reaches other replicas within that time.
PrincipalCache = TTLCache[str, ApiKeyPrincipal]


def principal_cache(settings: Settings) -> PrincipalCache | None:
    if settings.auth_cache_seconds <= 0:
        return None
    return TTLCache(maxsize=10_000, ttl=settings.auth_cache_seconds)


def cached_principal(cache: PrincipalCache | None, authorization: str) -> ApiKeyPrincipal | None:
    """The API key of an `Authorization` header from the cache alone (the lean path,
    app.http.lean); None when it is not a cached bearer API key: the caller then takes
    get_principal's way, which answers every failure itself."""
    if cache is None:
        return None
    scheme, _, raw_key = authorization.partition(" ")
    raw_key = raw_key.strip()
    if scheme.lower() != "bearer" or not raw_key or is_session_token(raw_key):
        return None
    return cache.get(hash_key(raw_key))


async def load_principal(
    sessionmaker: async_sessionmaker[AsyncSession], cache: PrincipalCache, authorization: str
) -> ApiKeyPrincipal | None:
    """cached_principal, or on a miss the key read and cached (the lean path's refill); None
    when it is not a live API key: get_principal then answers and counts the failure."""
    found = cached_principal(cache, authorization)
    if found is not None:
        return found
    scheme, _, raw_key = authorization.partition(" ")
    raw_key = raw_key.strip()
    if scheme.lower() != "bearer" or not raw_key or is_session_token(raw_key):
        return None
    async with sessionmaker() as session:
        principal = await authenticate(session, raw_key)
        await session.commit()  # the key's last-used time
    if principal is not None:
        cache[hash_key(raw_key)] = principal
    return principal


def allow(*kinds: KeyKind) -> Callable[..., Awaitable[ApiKeyPrincipal]]:
    """A dependency that lets through the given key kinds (admin keys always pass).

    It then claims the request's Idempotency-Key for the key, or replays the stored answer.
    """
    allowed = {KeyKind.ADMIN, *kinds}

    async def dependency(
        request: Request,
        session: SessionDep,
        principal: Annotated[ApiKeyPrincipal, Depends(get_principal)],
    ) -> ApiKeyPrincipal:
        if principal.kind not in allowed:
            raise Forbidden(f"A {principal.kind} key may not call this endpoint.")
        await claim_idempotency_key(request, session, principal)
        return principal

    return dependency


AdminKey = Annotated[ApiKeyPrincipal, Depends(allow())]
SecretKey = Annotated[ApiKeyPrincipal, Depends(allow(KeyKind.SECRET))]
AnyKey = Annotated[ApiKeyPrincipal, Depends(allow(KeyKind.SECRET, KeyKind.PUBLISHABLE))]


# --- referrer sessions: the caller of /v1/me… ------------------------------------------------

# What every /v1/me… operation may answer besides its own errors.
REFERRER_SESSION_ERRORS: tuple[type[AppError], ...] = (
    Unauthorized,
    SessionExpired,
    SessionRevoked,
    ReferrerSessionRequired,
    RateLimited,
    *COMMON_ERRORS,
)

# Live sessions for a few seconds, like API keys: a revocation reaches other replicas within
# that time; an expiry is checked on every request.
SessionCache = TTLCache[str, Authenticated]


def session_cache(settings: Settings) -> SessionCache | None:
    if settings.auth_cache_seconds <= 0:
        return None
    return TTLCache(maxsize=10_000, ttl=settings.auth_cache_seconds)


async def get_referrer_principal(request: Request, session: SessionDep) -> ReferrerPrincipal:
    """The referrer session of `Authorization: Bearer rk_ref_…`; API keys are refused (403)."""
    await limit_me_per_ip(request)
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    token = credential.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "Send a referrer session token as 'Authorization: Bearer rk_ref_…'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not is_session_token(token):
        await get_principal(request, session)  # an unknown key is a 401 and a failed attempt
        raise ReferrerSessionRequired(
            "An API key is not a referrer: mint a session with "
            "POST /v1/referrers/{referrer_id}/sessions and call /v1/me… with its token."
        )
    cache: SessionCache | None = request.app.state.session_cache
    digest = hash_key(token)
    found = cache.get(digest) if cache is not None else None
    if found is None or found.expires_at <= utcnow():
        found = await _authenticate_session_uncached(request, session, token)
        if cache is not None:
            cache[digest] = found
    await limit_me_per_session(request, found.principal.session_id)
    return found.principal


async def _authenticate_session_uncached(
    request: Request, session: SessionDep, token: str
) -> Authenticated:
    # Expired and revoked tokens raise without counting: they were real, nobody is guessing.
    # Failures are counted per client IP (429 past the limit); a live token always passes.
    found = await referrer_sessions.authenticate(session, token)
    if found is None:
        limiter = rate_limiter(request)
        await limiter.hit(limiter.failed_auth_per_ip, "auth", client_ip(request) or "-")
        raise Unauthorized(
            "The referrer session token is unknown.", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


AnyReferrerSession = Annotated[ReferrerPrincipal, Depends(get_referrer_principal)]

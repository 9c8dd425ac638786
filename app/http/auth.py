"""`Authorization: Bearer <key>` → ApiKeyPrincipal, and the key kinds endpoints declare.

Once a key has authenticated and may call the endpoint, the request's Idempotency-Key (if any)
is claimed for it (app.http.unit_of_work): a replay never reaches an unauthenticated caller.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from cachetools import TTLCache
from fastapi import Depends, Request

from app.core.access import ApiKeyPrincipal, KeyKind
from app.core.config import Settings
from app.core.errors import COMMON_ERRORS, AppError, Forbidden, Unauthorized
from app.http.dependencies import SessionDep
from app.http.ratelimit import RateLimited, client_ip, rate_limiter
from app.http.unit_of_work import claim_idempotency_key
from app.keys.service import authenticate, hash_key

# What every operation behind an API key may answer besides its own errors (declared on the
# routers: `responses=problem_responses(*AUTHENTICATED_ERRORS)`).
AUTHENTICATED_ERRORS: tuple[type[AppError], ...] = (
    Unauthorized,
    Forbidden,
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

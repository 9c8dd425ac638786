"""Rate limits on the public paths and on failed authentication.

Counters live in process by default, or in Redis when REFERRAL_REDIS_URL is set, so that every
replica shares them. If Redis cannot be reached the limit is not enforced (fail open) rather
than turning an outage of a helper into an outage of the service.
"""

import logging
import math
import time
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from app.core.config import Settings
from app.core.errors import AppError
from app.keys.service import hash_key

logger = logging.getLogger("app.http.ratelimit")


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"
    final = False


def client_ip(request: Request) -> str | None:
    """The client's address; behind trusted proxies (REFERRAL_FORWARDED_ALLOW_IPS) uvicorn's
    ProxyHeadersMiddleware (app.main) has set it from X-Forwarded-For, read from the right."""
    return request.client.host if request.client else None


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits_enabled
        uri = settings.redis_url or "memory://"
        self.storage = storage_from_string(f"async+{uri}")
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.public_per_ip = parse(settings.rate_limit_public_per_ip)
        self.public_per_key = parse(settings.rate_limit_public_per_key)
        self.code_lookup_per_ip = parse(settings.rate_limit_code_lookup_per_ip)
        self.failed_auth_per_ip = parse(settings.rate_limit_failed_auth_per_ip)
        self.me_per_session = parse(settings.rate_limit_me_per_session)
        self.me_per_ip = parse(settings.rate_limit_me_per_ip)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> None:
        """Count one request; raise RateLimited (with Retry-After) when over the limit."""
        if not self.enabled:
            return
        try:
            if await self.limiter.hit(item, *identifiers):
                return
            retry_after = await self._retry_after(item, *identifiers)
        except Exception as exc:
            logger.warning("rate limit storage unavailable: %s", type(exc).__name__)
            return
        raise RateLimited(
            f"Limit of {item} reached; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


def rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def limit_public(request: Request) -> None:
    """Per client IP and per API key, on the paths a storefront (and anyone) can reach."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    await count_public(
        rate_limiter(request), route, client_ip(request), request.headers.get("authorization")
    )


async def count_public(
    limiter: RateLimiter, route: str, ip: str | None, authorization: str | None
) -> None:
    """limit_public's counts, for a caller without a Request (the lean path, app.http.lean)."""
    if not limiter.enabled:
        return
    await limiter.hit(limiter.public_per_ip, "ip", route, ip or "-")
    if authorization:
        await limiter.hit(limiter.public_per_key, "key", route, hash_key(authorization))


async def limit_code_lookup(request: Request) -> None:
    """Code lookups are how codes get guessed: a tighter limit per client IP."""
    limiter = rate_limiter(request)
    await limiter.hit(limiter.code_lookup_per_ip, "lookup", client_ip(request) or "-")


async def limit_me_per_ip(request: Request) -> None:
    """/v1/me… per client IP, before the token is looked up."""
    limiter = rate_limiter(request)
    await limiter.hit(limiter.me_per_ip, "me-ip", client_ip(request) or "-")


async def limit_me_per_session(request: Request, session_id: UUID) -> None:
    """/v1/me… per referrer session: a widget polling too fast, or a leaked token, is slowed."""
    limiter = rate_limiter(request)
    await limiter.hit(limiter.me_per_session, "me-session", str(session_id))


PublicRateLimit = Annotated[None, Depends(limit_public)]
CodeLookupRateLimit = Annotated[None, Depends(limit_code_lookup)]

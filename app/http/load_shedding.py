"""Shed load instead of queueing without bound: past N requests in flight, answer 503 at once."""

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import Overloaded
from app.http.errors import send_problem

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class InFlight:
    """The requests in flight in this process, counted by every path that answers (this
    middleware and the lean path, app.http.lean), against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def full(self) -> bool:
        return self.count >= self.limit


def overloaded() -> Overloaded:
    return Overloaded("Too many requests in flight; retry shortly.")


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, max_in_flight: int, in_flight: InFlight | None = None) -> None:
        self.app = app
        self.gauge = in_flight or InFlight(max_in_flight)

    @property
    def in_flight(self) -> int:
        return self.gauge.count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.gauge.full():
            await send_problem(send, overloaded())
            return
        self.gauge.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.count -= 1

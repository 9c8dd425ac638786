"""Shed load instead of queueing without bound: past N requests in flight, answer 503 at once."""

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import Overloaded
from app.http.errors import send_problem

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await send_problem(send, Overloaded("Too many requests in flight; retry shortly."))
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

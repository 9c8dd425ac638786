"""HTTP metrics, JSON logs and request ids (the other Prometheus series: app.core.telemetry).

Logs carry no personal data: no client IPs, no query strings, no emails, never an API key
(only its id).
"""

import hmac
import logging
import re
import sys
import time
import uuid

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import Unauthorized
from app.core.telemetry import DB_POOL_CHECKED_OUT, DB_POOL_SIZE

HTTP_REQUESTS = Counter(
    "referral_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "referral_http_request_duration_seconds",
    "Time to answer HTTP requests",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
access_logger = logging.getLogger("app.access")


def configure_logging(level: str) -> None:
    """One JSON object per line on stderr, for every logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True


def ensure_metrics_protected(settings: Settings) -> None:
    """Production does not start with /metrics open to anyone, unless the operator says so."""
    if settings.environment != "production" or settings.metrics_token or settings.metrics_public:
        return
    raise RuntimeError(
        "GET /metrics would be open to anyone: set REFERRAL_METRICS_TOKEN (Prometheus sends it "
        "as a bearer token), or REFERRAL_METRICS_PUBLIC=true if only Prometheus can reach it"
    )


async def require_metrics_token(request: Request) -> None:
    """With REFERRAL_METRICS_TOKEN set, GET /metrics wants it as `Authorization: Bearer`."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized(
            "Send the metrics token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def metrics_body(engine: AsyncEngine) -> tuple[bytes, str]:
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        DB_POOL_CHECKED_OUT.set(pool.checkedout())
        DB_POOL_SIZE.set(pool.size())
    return generate_latest(), CONTENT_TYPE_LATEST


class RequestLogMiddleware:
    """Request id in and out, one access log line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(elapsed)
            log_request(request_id, method, route, status, elapsed, state.get("key_id"))


def log_request(
    request_id: str, method: str, route: str, status: int, elapsed: float, key_id: object
) -> None:
    """The access log's one line per request: never the key, an address or an email."""
    access_logger.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "key_id": str(key_id) if key_id else None,
        },
    )


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if REQUEST_ID_PATTERN.match(candidate) else None
    return None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not used as labels: they would let callers mint time series.
    return str(path) if path else "unmatched"

"""The lean path: the public hot paths answered in one pure ASGI layer, before the FastAPI stack.

`POST /v1/clicks` and `GET /r/{code}` are what a newsletter's link or a flash sale floods. For
them this layer (just inside the proxy headers, app.main) does in one pass what the six
middleware and the dependencies do for every other request, and needs no database connection
when the key and the code are cached:

- the path with or without its trailing slash (as app.http.paths);
- the request id, the access log line and the Prometheus series, under the route's template
  (app.http.observability);
- load shedding against the same in-flight count (app.http.load_shedding);
- the body limit (app.http.unit_of_work); CORS answer headers for the widget's click, and the
  key's storefront origins from their cache (app.http.cors);
- the public rate limits, counted once, with the same counters (app.http.ratelimit);
- the API key and the code from their caches; the click through the group-commit writer, which
  answers only once the click's batch is committed (app.tracking.click_writer).

A route's `prepare` decides, before anything is counted, whether this layer answers: from the
caches, or on a miss from one read that refills them (one at a time per key: `SingleFlight`).
Anything else — a key that does not authenticate, an unknown code, an Idempotency-Key, a body
that is not a valid click, a program not taking clicks, another content type, caches switched
off — goes down the full stack unchanged (the body replayed), which answers it as it always
has. So every answer but the plain success, and the few failures listed here (429, 503), is
the full stack's own, word for word.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    InternalError,
    error_for_database_exception,
    problem_bytes,
)
from app.http.cors import EXPOSE_HEADERS, OriginCache, is_public_path
from app.http.load_shedding import InFlight, overloaded
from app.http.observability import HTTP_LATENCY, HTTP_REQUESTS, REQUEST_ID_PATTERN, log_request
from app.http.ratelimit import RateLimiter, count_public

logger = logging.getLogger("app.http.lean")

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Headers
    body: bytes = b""

    @classmethod
    def json(cls, status: int, body: bytes) -> "Answer":
        return cls(
            status,
            [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
            body,
        )

    @classmethod
    def problem(cls, error: AppError) -> "Answer":
        body = problem_bytes(error)
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
        return cls(error.status, headers, body)


@dataclass(slots=True)
class LeanRequest:
    """What a lean route sees: the canonical path's parameter, headers (lower-case names, the
    first of each), the body, the client's address; `key_id` for the access log."""

    scope: Scope
    param: str
    headers: dict[str, str]
    body: bytes
    client_ip: str | None
    key_id: Any = None
    query: str = field(default="")


# The work of a request the route takes: run once the limits have passed.
Work = Callable[[], Awaitable[Answer]]


class LeanRoute(Protocol):
    method: str
    template: str  # the route's path template, as the full stack labels it
    takes_body: bool

    def match(self, path: str) -> str | None:
        """The path parameter ("" for none) when `path` (canonical) is this route's, else None."""

    async def prepare(self, request: LeanRequest) -> Work | None:
        """The work, when this layer may answer (from the caches, refilled on a miss); None
        hands the request to the full stack. Counts nothing and changes nothing."""


T = TypeVar("T")


class SingleFlight:
    """One load at a time per key: the misses of one key while it loads wait for that load
    (a key's cache entry expiring under load costs one read, not one per request)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(load())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        result: T = await asyncio.shield(running)
        return result


async def quietly(load: Awaitable[T | None]) -> T | None:
    """A refill that may fail (the database away): None, and the full stack answers."""
    try:
        return await load
    except Exception as exc:
        logger.info("lean path refill failed, the full stack answers: %s", type(exc).__name__)
        return None


class LeanPathMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[LeanRoute],
        *,
        max_body_bytes: int,
        in_flight: InFlight,
        limiter: RateLimiter,
        origins: OriginCache,
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.in_flight = in_flight
        self.limiter = limiter
        self.origins = origins
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self._match(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        route, param = found
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        if "idempotency-key" in headers:  # its answer is stored with the click: the full stack
            await self.app(scope, receive, send)
            return
        body = b""
        if route.takes_body:
            messages, read = await _read_body(receive, self.max_body_bytes)
            receive = _replaying(messages, receive)
            if read is None:  # too large, or cut off: the unit of work answers it
                await self.app(scope, receive, send)
                return
            body = read
        client = scope.get("client")
        request = LeanRequest(
            scope,
            param,
            headers,
            body,
            client[0] if client else None,
            query=scope.get("query_string", b"").decode("latin-1"),
        )
        work = await route.prepare(request)
        if work is None:
            await self.app(scope, receive, send)
            return
        await self._answer(route, request, work, send)

    def _match(self, method: str, path: str) -> tuple[LeanRoute, str] | None:
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        for route in self.routes:
            if route.method == method:
                param = route.match(path)
                if param is not None:
                    return route, param
        return None

    async def _answer(self, route: LeanRoute, request: LeanRequest, work: Work, send: Send) -> None:
        started = time.perf_counter()
        headers = request.headers
        given = headers.get("x-request-id")
        request_id = given if given and REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        status = 500
        try:
            if self.in_flight.full():
                answer = Answer.problem(overloaded())
            else:
                self.in_flight.count += 1
                try:
                    answer = await self._run(route, request, work)
                finally:
                    self.in_flight.count -= 1
            status = answer.status
            out = [*answer.headers]
            origin = headers.get("origin")
            if origin is not None and is_public_path(route.method, route.template):
                out.append((b"vary", b"Origin"))
                if origin in await self.origins.all_origins():
                    out.append((b"access-control-allow-origin", origin.encode()))
                    out.append((b"access-control-expose-headers", EXPOSE_HEADERS))
            out.append((b"x-request-id", request_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": answer.body, "more_body": False})
        finally:
            self._observe(route, request, request_id, status, time.perf_counter() - started)

    async def _run(self, route: LeanRoute, request: LeanRequest, work: Work) -> Answer:
        try:
            await count_public(
                self.limiter,
                route.template,
                request.client_ip,
                request.headers.get("authorization"),
            )
            return await work()
        except AppError as error:
            return Answer.problem(error)
        except Exception as exc:
            known = error_for_database_exception(exc)
            if known is None:
                logger.exception("unhandled error on %s %s", route.method, route.template)
                return Answer.problem(InternalError("An unexpected error occurred."))
            logger.warning("database error answered %s: %s", known.code, type(exc).__name__)
            return Answer.problem(known)

    def _observe(
        self, route: LeanRoute, request: LeanRequest, request_id: str, status: int, elapsed: float
    ) -> None:
        key = (route.method, route.template, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(route.method, route.template, str(status)),
                HTTP_LATENCY.labels(route.method, route.template),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)
        log_request(request_id, route.method, route.template, status, elapsed, request.key_id)


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read, and the body: None when it is not complete or past `limit`."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` with the messages already read given back first, as they came."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def parse_json(body: bytes) -> Any:
    """The body as FastAPI would parse it (the standard library's parser), or None."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None

"""One transaction per request, committed before the first byte of the answer leaves.

A pure ASGI middleware owns the session: the handler and its dependencies use it, and when the
answer starts the middleware commits (2xx/3xx) or rolls back (4xx/5xx). Only then is the answer
sent, so a 2xx always means the data is durably stored; a failed commit turns into a 503.
Request bodies are read here once, with a size limit.

A POST with an Idempotency-Key is claimed only once its API key has authenticated
(`claim_idempotency_key`, called by app.http.auth): a request that fails authentication,
routing or a rate limit stores nothing, and a revoked key gets 401, never its stored answers.
The claimed key's answer is stored in the request's own transaction when it is final: 2xx, and
the 4xx that the same request would get again (AppError.final, noted by app.http.errors).
Transient answers (429, 409 concurrent_update or idempotency_key_in_progress, any 5xx) are not
stored: the rollback releases the key, and a retry runs anew. See app.idempotency.service.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.access import ApiKeyPrincipal, ReferrerPrincipal
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import (
    DatabaseUnavailable,
    IdempotencyKeyInProgress,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    PayloadTooLarge,
    is_database_unavailable,
)
from app.http.errors import ANSWER_IS_FINAL, send_problem
from app.idempotency import service as idempotency

logger = logging.getLogger("app.http.unit_of_work")

METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


class BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class UnitOfWorkMiddleware:
    def __init__(
        self, app: ASGIApp, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self.app = app
        self.sessionmaker = sessionmaker
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in METHODS_WITH_BODY:
            limit = (
                self.settings.max_webhook_body_bytes
                if scope["path"].startswith("/v1/integrations/")
                else self.settings.max_body_bytes
            )
            declared = _header(scope, b"content-length")
            try:
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise BodyTooLarge()
                body = await _read_body(receive, limit)
            except BodyTooLarge:
                await send_problem(
                    send, PayloadTooLarge(f"The request body may be at most {limit} bytes.")
                )
                return
            receive = _replaying(body)
        else:
            body = b""
        async with self.sessionmaker() as session:
            scope.setdefault("state", {})["session"] = session
            try:
                await self._run(scope, receive, send, session, method, body)
            except Exception as exc:
                await session.rollback()
                if not is_database_unavailable(exc):
                    raise
                logger.warning("database unavailable: %s", type(exc).__name__)
                await send_problem(send, DatabaseUnavailable())

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session: AsyncSession,
        method: str,
        body: bytes,
    ) -> None:
        state = scope["state"]
        pending = _pending_key(scope, method, body)
        if pending is not None:
            state[_PENDING_KEY] = pending
        responder = _Responder(send, session, state, pending, self.settings)
        try:
            await self.app(scope, receive, responder.send)
        except _Replay as replay:
            await session.rollback()
            await _send_stored(send, replay.answer)
            return
        if not responder.finished:
            await responder.finish_without_answer()


# The scope-state entry holding the request's Idempotency-Key until it is claimed.
_PENDING_KEY = "idempotency_key"


@dataclass
class _PendingKey:
    """An Idempotency-Key as read before authentication; `claimed` once the caller is known."""

    key: str
    method: str
    path: str
    request_hash: str
    claimed: idempotency.IdempotentRequest | None = None


def _pending_key(scope: Scope, method: str, body: bytes) -> _PendingKey | None:
    key = _header(scope, b"idempotency-key") if method == "POST" else None
    if not key:
        return None
    path = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    return _PendingKey(key, method, path, idempotency.fingerprint(method, path, query, body))


class _Replay(Exception):
    """Raised by claim_idempotency_key: the stored answer, sent by the middleware instead."""

    def __init__(self, answer: idempotency.StoredAnswer) -> None:
        super().__init__("idempotent replay")
        self.answer = answer


async def claim_idempotency_key(
    request: Request, session: AsyncSession, principal: ApiKeyPrincipal | ReferrerPrincipal
) -> None:
    """Claim the request's Idempotency-Key for the authenticated caller, or replay its answer.

    Called once the API key (or the referrer session: its keys are the referrer's, so a
    renewed session may retry) has authenticated; does nothing without a key. Raises
    IdempotencyKeyInvalid, IdempotencyKeyInProgress or IdempotencyKeyReused.
    """
    pending: _PendingKey | None = getattr(request.state, _PENDING_KEY, None)
    if pending is None or pending.claimed is not None:
        return
    if len(pending.key) > idempotency.MAX_KEY_LENGTH:
        # Cut short, two long keys could share one stored answer.
        raise IdempotencyKeyInvalid(
            f"An Idempotency-Key may be at most {idempotency.MAX_KEY_LENGTH} characters."
        )
    claim = idempotency.IdempotentRequest(
        principal_hash=hashlib.sha256(_caller(principal).encode()).hexdigest(),
        key=pending.key,
        method=pending.method,
        path=pending.path,
        request_hash=pending.request_hash,
    )
    try:
        stored = await idempotency.claim(session, claim, utcnow())
    except idempotency.KeyInProgress:
        raise IdempotencyKeyInProgress(
            "A request with this Idempotency-Key is still running; retry shortly.",
            headers={"Retry-After": "1"},
        ) from None
    except idempotency.KeyReused:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with another request; use a new key."
        ) from None
    if stored is not None:
        raise _Replay(stored)
    pending.claimed = claim


def _caller(principal: ApiKeyPrincipal | ReferrerPrincipal) -> str:
    if isinstance(principal, ReferrerPrincipal):
        return f"referrer:{principal.referrer_id}"
    return f"api-key:{principal.key_id}"


async def _send_stored(send: Send, stored: idempotency.StoredAnswer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": stored.status,
            "headers": [
                (b"content-type", stored.content_type.encode()),
                (b"content-length", str(len(stored.body)).encode()),
                (b"idempotent-replayed", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


class _Responder:
    """Holds the answer back until the transaction is settled."""

    def __init__(
        self,
        send: Send,
        session: AsyncSession,
        state: dict[str, Any],
        pending: _PendingKey | None,
        settings: Settings,
    ) -> None:
        self._send = send
        self._session = session
        self._state = state
        self._pending = pending
        self._ttl = timedelta(hours=settings.idempotency_ttl_hours)
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._settled = False
        self.finished = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._settled:
            await self._send(message)
            if message.get("more_body", False) is False:
                self.finished = True
            return
        assert self._start is not None
        if self._pending is not None:
            # Idempotent answers are kept whole, so they can be stored before they are sent.
            self._chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"".join(self._chunks)}
        if not await self._settle(message.get("body", b"")):
            return
        await self._send(self._start)
        await self._send(message)
        if message.get("more_body", False) is False:
            self.finished = True

    async def _settle(self, body: bytes) -> bool:
        """Commit or roll back; False (and a 503 sent) when the commit fails."""
        self._settled = True
        assert self._start is not None
        status = int(self._start["status"])
        claimed = self._pending.claimed if self._pending is not None else None
        # Only a final answer is kept; a transient one leaves the key free for the retry.
        keep = claimed is not None and status < 500 and self._state.get(ANSWER_IS_FINAL, True)
        try:
            if status >= 400:
                await self._session.rollback()
                if keep:
                    assert claimed is not None
                    await self._store(claimed, status, body)
                    await self._session.commit()
            else:
                if keep:
                    assert claimed is not None
                    await self._store(claimed, status, body)
                await self._session.commit()
        except Exception as exc:
            await self._session.rollback()
            logger.warning("commit failed: %s", type(exc).__name__, exc_info=True)
            await send_problem(
                self._send, DatabaseUnavailable("The change could not be stored; retry shortly.")
            )
            self.finished = True
            return False
        return True

    async def _store(
        self, request: idempotency.IdempotentRequest, status: int, body: bytes
    ) -> None:
        assert self._start is not None
        content_type = "application/json"
        for key, value in self._start.get("headers", []):
            if key.lower() == b"content-type":
                content_type = value.decode("latin-1")
        answer = idempotency.StoredAnswer(status, body, content_type)
        await idempotency.store(self._session, request, answer, utcnow(), self._ttl)

    async def finish_without_answer(self) -> None:
        await self._session.rollback()

"""Idempotency-Key on POST: the first answer is stored with the request's effects and replayed.

Keys are scoped to the API key that sent them. The claim is atomic: on Postgres a
transaction-scoped advisory lock on (caller, key) is taken with try-lock, so a retry that
arrives while the first request still runs gets 409 at once, on any replica; on SQLite the
single writer lock serialises them and the retry sees the stored answer.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import insert_ignoring_conflicts, is_postgres
from app.idempotency.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotentRequest:
    principal_hash: str
    key: str
    method: str
    path: str
    request_hash: str


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: bytes
    content_type: str


class KeyInProgress(Exception):
    """The first request with this key is still running."""


class KeyReused(Exception):
    """The key was used with another request body or path."""


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _lock_id(request: IdempotentRequest) -> int:
    raw = hashlib.sha256(f"{request.principal_hash}:{request.key}".encode()).digest()[:8]
    return int.from_bytes(raw, "big", signed=True)


async def claim(
    session: AsyncSession, request: IdempotentRequest, now: datetime
) -> StoredAnswer | None:
    """The stored answer to replay, or None when this request should run (the key is ours).

    Raises KeyInProgress or KeyReused.
    """
    if is_postgres(session):
        acquired = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:lock_id)"), {"lock_id": _lock_id(request)}
        )
        if not acquired:
            raise KeyInProgress()
    record = await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal_hash == request.principal_hash,
            IdempotencyRecord.idempotency_key == request.key,
        )
    )
    if record is None:
        return None
    if record.expires_at <= now:
        await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record.id))
        return None
    if record.request_hash != request.request_hash:
        raise KeyReused()
    return StoredAnswer(record.response_status, record.response_body, record.response_content_type)


async def store(
    session: AsyncSession,
    request: IdempotentRequest,
    answer: StoredAnswer,
    now: datetime,
    ttl: timedelta,
) -> None:
    """Keep the answer, in the same transaction as the request's effects."""
    await session.execute(
        insert_ignoring_conflicts(
            session,
            IdempotencyRecord.__table__,
            {
                "id": uuid4(),
                "created_at": now,
                "principal_hash": request.principal_hash,
                "idempotency_key": request.key,
                "method": request.method,
                "path": request.path[:2048],
                "request_hash": request.request_hash,
                "response_status": answer.status,
                "response_body": answer.body,
                "response_content_type": answer.content_type,
                "expires_at": now + ttl,
            },
        )
    )


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

"""Cursor pagination over (created_at, id): stable under inserts, no OFFSET scans."""

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError, ValidationFailed

T = TypeVar("T")


class InvalidCursor(AppError):
    status, code, title = 422, "invalid_cursor", "The cursor is not valid"


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


class PageParams(BaseModel):
    limit: int
    cursor: str | None = None


class InvalidLimit(AppError):
    status, code, title = 422, "invalid_limit", "The page size is not valid"


# The 422 answers of a paginated list (`responses=problem_responses(*PAGE_ERRORS)`).
PAGE_ERRORS: tuple[type[AppError], ...] = (ValidationFailed, InvalidCursor, InvalidLimit)


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(row_id, str):
            raise ValueError("cursor parts are strings")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed.astimezone(UTC), UUID(row_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError) as exc:
        raise InvalidCursor("cursor is malformed; pass back next_cursor unchanged") from exc


async def paginate(
    session: AsyncSession, query: Select[Any], model: Any, params: PageParams
) -> tuple[list[Any], str | None]:
    """Rows of `query` (selecting `model`) after the cursor, oldest first, and the next cursor."""
    if params.cursor:
        created_at, row_id = decode_cursor(params.cursor)
        query = query.where(
            or_(
                model.created_at > created_at,
                and_(model.created_at == created_at, model.id > row_id),
            )
        )
    query = query.order_by(model.created_at, model.id).limit(params.limit + 1)
    rows = list(await session.scalars(query))
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)

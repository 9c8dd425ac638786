"""CSV exports: streamed, a header row first, every cell written as the JSON answer writes it."""

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from fastapi import Query
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.pagination import PageParams, decode_cursor

T = TypeVar("T")

Format = Literal["json", "csv"]
FORMAT_QUERY = Query(alias="format", description="json (default) or csv: a streamed CSV export")
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with `?format=csv`"}
}
EXPORT_PAGE_SIZE = 500
ROWS_PER_CHUNK = 200
# A spreadsheet runs a cell starting with these as a formula; text from callers is defused.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A JSON-mode value as a CSV cell: null is empty, text that a spreadsheet would run as a
    formula gets a leading apostrophe (numbers, negative ones included, are left alone)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def _encode(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


async def _chunks(
    header: Sequence[str], rows: Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]]
) -> AsyncIterator[str]:
    yield _encode([header])
    batch: list[Sequence[Any]] = []
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            batch.append(row)
            if len(batch) >= ROWS_PER_CHUNK:
                yield _encode(batch)
                batch = []
    else:
        for row in rows:
            batch.append(row)
            if len(batch) >= ROWS_PER_CHUNK:
                yield _encode(batch)
                batch = []
    if batch:
        yield _encode(batch)


def csv_response(
    filename: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]],
) -> StreamingResponse:
    """A streamed `text/csv` answer: the header, then the rows as they come."""
    return StreamingResponse(
        _chunks(header, rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def json_row(model: Any, columns: Sequence[str]) -> list[Any]:
    """The named fields of a response model, as its JSON answer writes them."""
    dumped = model.model_dump(mode="json", by_alias=True)
    return [dumped[name] for name in columns]


async def all_pages(
    sessionmaker: async_sessionmaker[AsyncSession],
    fetch: Callable[[AsyncSession, PageParams], Awaitable[tuple[list[T], str | None]]],
    cursor: str | None = None,
) -> AsyncIterator[T]:
    """Every row `fetch` pages through, one short transaction per page (writers are not held
    up on SQLite while a long export streams); cursor pagination is stable under inserts.

    Validate the first cursor before the answer starts (`check_cursor`).
    """
    while True:
        async with sessionmaker() as session:
            rows, cursor = await fetch(session, PageParams(limit=EXPORT_PAGE_SIZE, cursor=cursor))
            await session.commit()
        for row in rows:
            yield row
        if cursor is None:
            return


def check_cursor(cursor: str | None) -> None:
    """Raise InvalidCursor now, while a problem answer can still be sent."""
    if cursor is not None:
        decode_cursor(cursor)

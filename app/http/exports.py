"""CSV exports: streamed, a header row first, every cell written as the JSON answer writes it."""

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.csv import CsvTable, encode_rows, json_row
from app.core.pagination import PageParams, decode_cursor

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Format = Literal["json", "csv"]
FORMAT_QUERY = Query(alias="format", description="json (default) or csv: a streamed CSV export")
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with `?format=csv`"}
}
EXPORT_PAGE_SIZE = 500
ROWS_PER_CHUNK = 200


async def _chunks(
    header: Sequence[str], rows: Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]]
) -> AsyncIterator[str]:
    yield encode_rows([header])
    batch: list[Sequence[Any]] = []
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            batch.append(row)
            if len(batch) >= ROWS_PER_CHUNK:
                yield encode_rows(batch)
                batch = []
    else:
        for row in rows:
            batch.append(row)
            if len(batch) >= ROWS_PER_CHUNK:
                yield encode_rows(batch)
                batch = []
    if batch:
        yield encode_rows(batch)


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


def paged_csv(
    request: Request,
    filename: str,
    columns: Sequence[str],
    fetch: Callable[[AsyncSession, PageParams], Awaitable[tuple[list[M], str | None]]],
    cursor: str | None,
) -> StreamingResponse:
    """A list endpoint's every page as CSV, one JSON answer row per line.

    Read from the read replica when one is set (REFERRAL_DATABASE_READ_URL): exports only read.
    """
    state = request.app.state
    sessionmaker = state.read_sessionmaker or state.sessionmaker
    pages = all_pages(sessionmaker, fetch, cursor)
    rows = (json_row(row, columns) async for row in pages)
    return csv_response(filename, columns, rows)


def check_cursor(cursor: str | None) -> None:
    """Raise InvalidCursor now, while a problem answer can still be sent."""
    if cursor is not None:
        decode_cursor(cursor)


def table_response(table: CsvTable) -> StreamingResponse:
    return csv_response(table.filename, table.header, table.rows)

"""Group commit for clicks: many requests, one multi-row INSERT and one COMMIT.

Each request hands its click to the process's writer and waits; the writer takes every click
queued while the previous batch was being written, marks duplicates for the whole batch with
one query, inserts them in one statement and commits. Only then are the waiting requests
answered, so a 201 still means the click is stored. A failed batch fails each of its requests
(they answer 503 and the client retries). Every replica runs its own writer; they share
nothing but the database.
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.telemetry import EVENTS_INGESTED, WRITE_BATCH_SIZE, WRITE_FLUSH_SECONDS
from app.tracking.models import Click


@dataclass
class _Pending:
    values: dict[str, Any]
    future: asyncio.Future[bool] = field(repr=False)


class ClickWriter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        duplicate_window: timedelta,
        max_batch: int = 500,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._duplicate_window = duplicate_window
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def write(self, values: dict[str, Any]) -> bool:
        """Store one click (its row values, without is_duplicate); returns is_duplicate."""
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="click-writer")
        assert self._queue is not None
        pending = _Pending(values, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None or self._task.done():
            self._task = None
            return
        assert self._queue is not None
        self._queue.put_nowait(None)  # the writer finishes the queue up to here, then returns
        await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch and not self._queue.empty():
                pending = self._queue.get_nowait()
                if pending is None:
                    stopping = True
                    break
                batch.append(pending)
            try:
                duplicates = await self._flush(batch)
            except Exception as exc:  # each waiting request answers 503 and is retried
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
            else:
                for pending, duplicate in zip(batch, duplicates, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(duplicate)
            if stopping:
                return

    async def _flush(self, batch: list[_Pending]) -> list[bool]:
        started = time.perf_counter()
        async with self._sessionmaker() as session, session.begin():
            duplicates = await mark_duplicates(
                session, [p.values for p in batch], self._duplicate_window
            )
            rows = [
                {**pending.values, "is_duplicate": duplicate}
                for pending, duplicate in zip(batch, duplicates, strict=True)
            ]
            await session.execute(insert(Click), rows)
        WRITE_BATCH_SIZE.observe(len(batch))
        WRITE_FLUSH_SECONDS.observe(time.perf_counter() - started)
        EVENTS_INGESTED.labels("click").inc(len(batch))
        return duplicates


async def mark_duplicates(
    session: AsyncSession, rows: list[dict[str, Any]], window: timedelta
) -> list[bool]:
    """For each row in order: was the same visitor (id or IP hash) on the same code in the window?

    One query looks at the stored clicks; earlier rows of the same batch count too.
    """
    code_ids = {row["code_id"] for row in rows}
    visitors = {row["visitor_id"] for row in rows if row.get("visitor_id")}
    ips = {row["ip_hash"] for row in rows if row.get("ip_hash")}
    seen_visitors: set[tuple[UUID, str]] = set()
    seen_ips: set[tuple[UUID, str]] = set()
    if visitors or ips:
        since = min(row["occurred_at"] for row in rows) - window
        same_visitor = [
            condition
            for condition in (
                Click.visitor_id.in_(visitors) if visitors else None,
                Click.ip_hash.in_(ips) if ips else None,
            )
            if condition is not None
        ]
        found = await session.execute(
            select(Click.code_id, Click.visitor_id, Click.ip_hash).where(
                Click.code_id.in_(code_ids), Click.occurred_at >= since, or_(*same_visitor)
            )
        )
        for code_id, visitor_id, ip_hash in found:
            if visitor_id:
                seen_visitors.add((code_id, visitor_id))
            if ip_hash:
                seen_ips.add((code_id, ip_hash))
    duplicates = []
    for row in rows:
        visitor = (row["code_id"], row.get("visitor_id"))
        ip = (row["code_id"], row.get("ip_hash"))
        duplicates.append(
            (visitor[1] is not None and visitor in seen_visitors)
            or (ip[1] is not None and ip in seen_ips)
        )
        if visitor[1]:
            seen_visitors.add(visitor)  # type: ignore[arg-type]
        if ip[1]:
            seen_ips.add(ip)  # type: ignore[arg-type]
    return duplicates

"""Group commit for clicks: many requests, one multi-row INSERT and one COMMIT.

Each request hands its click to the process's writer and waits; the writer takes every click
queued while the previous batch was being written, claims the batch's visitors in one statement
(which decides the duplicates, in the database: see claim_unique_visits), inserts the clicks in
one statement and commits. Only then are the waiting requests answered, so a 201 still means
the click is stored. A failed batch fails each of its requests (they answer 503 and the client
retries), and its claims roll back with it. Every replica runs its own writer; they share
nothing but the database.
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import is_postgres
from app.core.telemetry import EVENTS_INGESTED, WRITE_BATCH_SIZE, WRITE_FLUSH_SECONDS
from app.tracking.models import Click, ClickClaim


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
            duplicates = await claim_unique_visits(
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


# A claim that lapsed this long ago is pruned: far longer than a click waits between being
# stamped and being written, and than replicas' clocks differ, so pruning never decides.
PRUNE_MARGIN = timedelta(hours=1)
# Marks a claim taken over from the clicks stored before claims existed (migration 0008).
NO_CLICK = UUID(int=0)
VISITOR_KEYS = (("visitor", "visitor_id"), ("ip", "ip_hash"))

ClaimKey = tuple[UUID, str, str]


def _keys(row: dict[str, Any]) -> list[ClaimKey]:
    return [(row["code_id"], kind, row[column]) for kind, column in VISITOR_KEYS if row.get(column)]


async def claim_unique_visits(
    session: AsyncSession, rows: list[dict[str, Any]], window: timedelta
) -> list[bool]:
    """For each row in order, whether it is a duplicate: the same visitor id or the same IP hash
    clicked the same code within `window` before it (in an earlier batch, on any worker or
    replica, or earlier in this batch).

    One statement for the whole batch, INSERT … ON CONFLICT DO UPDATE … RETURNING on the claim
    rows (app.tracking.models.ClickClaim): each key's claim passes to the batch's first click
    on it if the key's last click is more than `window` old, and the key is seen until its
    latest click + `window` either way. A click is unique when it holds the claim of each of its
    keys. Concurrent batches on one key wait on its row: exactly one of them takes it.
    """
    claims: dict[ClaimKey, dict[str, Any]] = {}
    keys_of = [_keys(row) for row in rows]
    for row, keys in zip(rows, keys_of, strict=True):
        until = row["occurred_at"] + window
        for key in keys:
            claim = claims.get(key)
            if claim is None:
                code_id, kind, value = key
                claims[key] = {
                    "code_id": code_id,
                    "kind": kind,
                    "value": value,
                    "claimed_by": row["id"],
                    "claimed_at": row["occurred_at"],
                    "seen_until": until,
                }
            else:
                claim["seen_until"] = max(claim["seen_until"], until)
    if not claims:
        return [False] * len(rows)
    table = ClickClaim.__table__
    dialect = postgresql if is_postgres(session) else sqlite
    # Rows in key order: every writer locks the claims it shares with another in the same order.
    statement = dialect.insert(table).values([claims[key] for key in sorted(claims)])
    new = statement.excluded
    lapsed = table.c.seen_until < new.claimed_at
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.code_id, table.c.kind, table.c.value],
        set_={
            "claimed_by": case((lapsed, new.claimed_by), else_=table.c.claimed_by),
            "claimed_at": case((lapsed, new.claimed_at), else_=table.c.claimed_at),
            "seen_until": case(
                (table.c.seen_until < new.seen_until, new.seen_until), else_=table.c.seen_until
            ),
        },
    ).returning(table.c.code_id, table.c.kind, table.c.value, table.c.claimed_by)
    holders = {
        (code_id, kind, value): claimed_by
        for code_id, kind, value, claimed_by in await session.execute(statement)
    }
    return [
        any(holders[key] != row["id"] for key in keys)
        for row, keys in zip(rows, keys_of, strict=True)
    ]


async def forget_lapsed_claims(session: AsyncSession, now: datetime) -> int:
    """Delete the claims whose window has passed (a new click would take them anyway)."""
    result = await session.execute(
        delete(ClickClaim).where(ClickClaim.seen_until < now - PRUNE_MARGIN)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

"""Group commit for clicks: many requests, one multi-row INSERT and one COMMIT.

Each request hands its click to the process's writer and waits; the writer takes every click
queued while the previous batch was being written, claims the batch's visitors in one statement
(which decides the duplicates, in the database: see claim_unique_visits), inserts the clicks in
one statement and commits. Only then are the waiting requests answered, so a 201 still means
the click is stored. A failed batch fails each of its requests (they answer 503 and the client
retries), and its claims roll back with it. Every replica runs its own writer; they share
nothing but the database.

On Postgres both statements are one prepared statement each over arrays (`INSERT … SELECT FROM
unnest(…)`): the driver encodes a whole batch as a few array parameters, with no SQL built and
no per-row parameter processing in Python. SQLite takes the same rows through SQLAlchemy Core.
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, insert
from sqlalchemy.dialects import sqlite
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
        concurrency: int = 2,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._duplicate_window = duplicate_window
        self._max_batch = max_batch
        # Batches in flight at once: while one waits for its COMMIT, the next is being written
        # (the claims' row locks keep concurrent batches exact, as between workers).
        self._concurrency = concurrency
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Set when the last batch taken has written its statements (or failed).
        self._written: asyncio.Future[None] | None = None

    async def write(self, values: dict[str, Any]) -> bool:
        """Store one click (its row values, without is_duplicate); returns is_duplicate."""
        if not self._tasks or all(task.done() for task in self._tasks):
            self._queue = asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._run(), name=f"click-writer-{n}")
                for n in range(self._concurrency)
            ]
        assert self._queue is not None
        pending = _Pending(values, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        tasks, self._tasks = self._tasks, []
        if not tasks or all(task.done() for task in tasks):
            return
        assert self._queue is not None
        for _ in tasks:  # each writer finishes the queue up to its stop mark, then returns
            self._queue.put_nowait(None)
        await asyncio.gather(*tasks)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch and not queue.empty():
                pending = queue.get_nowait()
                if pending is None:
                    stopping = True
                    break
                batch.append(pending)
            # Taken in the order the batches are formed (one at a time, on this loop).
            turn, self._written = self._written, asyncio.get_running_loop().create_future()
            written = self._written
            try:
                duplicates = await self._flush(batch, turn, written)
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

    async def _flush(
        self,
        batch: list[_Pending],
        turn: asyncio.Future[None] | None = None,
        written: asyncio.Future[None] | None = None,
    ) -> list[bool]:
        """Claim, insert, commit. The statements wait for `turn` (set once the previous batch's
        are written) and set `written` for the next: batches claim in the order their clicks
        came, and only a COMMIT overlaps the next batch's statements, which may wait for rows
        it holds but never the other way round (no deadlock between the two)."""
        started = time.perf_counter()
        rows = [pending.values for pending in batch]
        try:
            async with self._sessionmaker() as session, session.begin():
                if turn is not None:
                    await asyncio.shield(turn)
                duplicates = await claim_unique_visits(session, rows, self._duplicate_window)
                await insert_clicks(session, rows, duplicates)
                _set(written)
        finally:
            _set(written)
        WRITE_BATCH_SIZE.observe(len(batch))
        WRITE_FLUSH_SECONDS.observe(time.perf_counter() - started)
        EVENTS_INGESTED.labels("click").inc(len(batch))
        return duplicates


def _set(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


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
    ordered = [claims[key] for key in sorted(claims)]
    if is_postgres(session):
        holders = await _claim_on_postgres(session, ordered)
    else:
        holders = await _claim_with_core(session, ordered)
    return [
        any(holders[key] != row["id"] for key in keys)
        for row, keys in zip(rows, keys_of, strict=True)
    ]


# The claim statement of claim_unique_visits on Postgres: the batch's claims as arrays. In SET,
# `claim` is the stored row before the update, `excluded` the batch's.
CLAIM_SQL = """
INSERT INTO click_claims AS claim (code_id, kind, value, claimed_by, claimed_at, seen_until)
SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::varchar[], $4::uuid[],
                     $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (code_id, kind, value) DO UPDATE SET
  claimed_by = CASE WHEN claim.seen_until < excluded.claimed_at
                    THEN excluded.claimed_by ELSE claim.claimed_by END,
  claimed_at = CASE WHEN claim.seen_until < excluded.claimed_at
                    THEN excluded.claimed_at ELSE claim.claimed_at END,
  seen_until = GREATEST(claim.seen_until, excluded.seen_until)
RETURNING claim.code_id, claim.kind, claim.value, claim.claimed_by
"""
CLAIM_COLUMNS = ("code_id", "kind", "value", "claimed_by", "claimed_at", "seen_until")


async def _claim_on_postgres(
    session: AsyncSession, claims: list[dict[str, Any]]
) -> dict[ClaimKey, UUID]:
    connection = await session.connection()
    arrays = tuple([claim[column] for claim in claims] for column in CLAIM_COLUMNS)
    result = await connection.exec_driver_sql(CLAIM_SQL, arrays)
    rows: list[Any] = list(result)
    return {(row[0], row[1], row[2]): row[3] for row in rows}


async def _claim_with_core(
    session: AsyncSession, claims: list[dict[str, Any]]
) -> dict[ClaimKey, UUID]:
    table: Any = ClickClaim.__table__
    # Rows in key order: every writer locks the claims it shares with another in the same order.
    insert_claims = sqlite.insert(table).values(claims)
    new = insert_claims.excluded
    lapsed = table.c.seen_until < new.claimed_at
    statement = insert_claims.on_conflict_do_update(
        index_elements=[table.c.code_id, table.c.kind, table.c.value],
        set_={
            "claimed_by": case((lapsed, new.claimed_by), else_=table.c.claimed_by),
            "claimed_at": case((lapsed, new.claimed_at), else_=table.c.claimed_at),
            "seen_until": case(
                (table.c.seen_until < new.seen_until, new.seen_until), else_=table.c.seen_until
            ),
        },
    ).returning(table.c.code_id, table.c.kind, table.c.value, table.c.claimed_by)
    return {
        (code_id, kind, value): claimed_by
        for code_id, kind, value, claimed_by in await session.execute(statement)
    }


# The click columns a writer stores (customer_id starts empty: a redemption sets it later).
CLICK_COLUMNS = (
    "id",
    "created_at",
    "occurred_at",
    "program_id",
    "code_id",
    "referrer_id",
    "source",
    "landing_url",
    "referring_url",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "visitor_id",
    "ip_hash",
    "user_agent",
    "is_bot",
    "attributable",
)
_CLICK_TYPES = (
    "uuid",
    "timestamptz",
    "timestamptz",
    "uuid",
    "uuid",
    "uuid",
    *["varchar"] * 9,
    "boolean",
    "boolean",
)
INSERT_CLICKS_SQL = (
    f"INSERT INTO clicks ({', '.join(CLICK_COLUMNS)}, is_duplicate) "
    "SELECT * FROM unnest("
    + ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_CLICK_TYPES, start=1))
    + f", ${len(_CLICK_TYPES) + 1}::boolean[])"
)


async def insert_clicks(
    session: AsyncSession, rows: list[dict[str, Any]], duplicates: list[bool]
) -> None:
    """The batch's clicks in one statement, in the session's transaction."""
    if is_postgres(session):
        connection = await session.connection()
        arrays = tuple([row[column] for row in rows] for column in CLICK_COLUMNS)
        await connection.exec_driver_sql(INSERT_CLICKS_SQL, (*arrays, duplicates))
        return
    values = [
        {**row, "is_duplicate": duplicate} for row, duplicate in zip(rows, duplicates, strict=True)
    ]
    await session.execute(insert(Click), values)


async def forget_lapsed_claims(session: AsyncSession, now: datetime) -> int:
    """Delete the claims whose window has passed (a new click would take them anyway)."""
    result = await session.execute(
        delete(ClickClaim).where(ClickClaim.seen_until < now - PRUNE_MARGIN)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

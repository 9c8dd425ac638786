"""Rollups on Postgres: which grains cover a range, compaction, and rebuilding from raw events.

Triggers (migration 0006) append signed delta rows to the rollup tables in the transaction that
writes each event, so a rollup always equals the raw events it sums, in every snapshot. A range
is read as whole rollup units (months or days, then days or quarter hours) plus the raw events
of the partial edges, so an answer for any instants and any time zone stays exact.

Compaction replaces every row of a key by one row with their sum in one statement
(`WITH moved AS (DELETE … RETURNING …) INSERT … SELECT sum(…)`), so a reader sees either the
deltas or their sum, never neither or both. Rows of writers still in flight are invisible to
it and stay for the next round. `metrics_rollups_rebuild(program)` (a SQL function) recounts a
program's rollups from its raw events; both take the same advisory lock.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.metrics.models import (
    AMOUNTS,
    COUNTS,
    ROLLUP_TABLES,
    channel_rollups,
    program_rollups,
    referrer_rollups,
)

# date_bin's origin in the triggers: days and quarter hours are aligned to it, in UTC; months
# are calendar months in UTC.
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
GRAIN_WIDTHS = {"day": timedelta(days=1), "quarter": timedelta(minutes=15)}
# Coarsest first: a range takes whole months or days, then whole days or quarter hours, then
# raw events. Referrers have months: a leaderboard sums one row per referrer and month.
GRAINS: dict[str, tuple[str, ...]] = {
    program_rollups.name: ("day", "quarter"),
    channel_rollups.name: ("day", "quarter"),
    referrer_rollups.name: ("month", "day"),
}
KEYS: dict[str, tuple[str, ...]] = {
    program_rollups.name: ("program_id", "grain", "bucket_start", "unit"),
    channel_rollups.name: (
        "program_id",
        "grain",
        "bucket_start",
        "unit",
        "utm_source",
        "utm_medium",
        "utm_campaign",
    ),
    referrer_rollups.name: ("program_id", "grain", "bucket_start", "unit", "referrer_id"),
}
# One lock for compaction and rebuild (pg_advisory_xact_lock): 'metrics' in ASCII.
ROLLUP_LOCK = 0x6D657472696373
COMPACT_BATCH = 5000


@dataclass(frozen=True)
class Span:
    """Part of bucket `index`: `[start, end)` summed from `grain`, or counted raw (grain None)."""

    index: int
    grain: str | None
    start: datetime
    end: datetime


def floor_to(moment: datetime, grain: str) -> datetime:
    """The start of the `grain` unit that holds `moment`."""
    if grain == "month":
        return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    width = GRAIN_WIDTHS[grain]
    return ORIGIN + ((moment - ORIGIN) // width) * width


def ceil_to(moment: datetime, grain: str) -> datetime:
    """The start of the first `grain` unit at or after `moment`."""
    floor = floor_to(moment, grain)
    if floor == moment:
        return floor
    if grain == "month":
        return floor.replace(year=floor.year + floor.month // 12, month=floor.month % 12 + 1)
    return floor + GRAIN_WIDTHS[grain]


def spans(index: int, start: datetime, end: datetime, grains: tuple[str, ...]) -> list[Span]:
    """`[start, end)` as whole units of the coarsest grain that fits, finer ones at the edges."""
    if start >= end:
        return []
    if not grains:
        return [Span(index, None, start, end)]
    try:
        lower, upper = ceil_to(start, grains[0]), floor_to(end, grains[0])
    except (OverflowError, ValueError):  # near the ends of the calendar: finer units only
        return spans(index, start, end, grains[1:])
    if lower >= upper:
        return spans(index, start, end, grains[1:])
    return [
        *spans(index, start, lower, grains[1:]),
        Span(index, grains[0], lower, upper),
        *spans(index, upper, end, grains[1:]),
    ]


def trimmed_spans(
    index: int, start: datetime, end: datetime, grains: tuple[str, ...]
) -> tuple[list[Span], list[Span]]:
    """`[start, end)` as spans to add and spans to subtract: a month cut by an edge of the range
    is its month row minus the whole days outside the range, when those are fewer than the days
    inside (grains "month", "day" only). A month row is the sum of its day rows in every
    snapshot (the same statements write both), so the difference is exact."""
    if grains[:2] != ("month", "day"):
        return spans(index, start, end, grains), []
    added: list[Span] = []
    subtracted: list[Span] = []
    whole = (start, end)
    try:
        lower = ceil_to(start, "month")
        day = ceil_to(start, "day")
        if lower != start and lower <= end and lower - day > day - floor_to(start, "month"):
            month = floor_to(start, "month")
            added += [*spans(index, start, day, grains[1:]), Span(index, "month", month, lower)]
            subtracted += spans(index, month, day, grains[1:])
            start = lower
        upper = floor_to(end, "month")
        day = floor_to(end, "day")
        after = ceil_to(upper + timedelta(days=1), "month")
        if upper != end and upper >= start and after - day < day - upper:
            added += [Span(index, "month", upper, after), *spans(index, day, end, grains[1:])]
            subtracted += spans(index, day, after, grains[1:])
            end = upper
    except (OverflowError, ValueError):  # near the ends of the calendar: added spans only
        return spans(index, *whole, grains), []
    return added + spans(index, start, end, grains), subtracted


def compaction_sql(table: Table) -> str:
    """The statement that compacts up to :batch keys of `table`; it returns how many."""
    keys = KEYS[table.name]
    measures = (*COUNTS, *AMOUNTS)
    return f"""
        WITH compact_keys AS (
            SELECT DISTINCT {", ".join(keys)} FROM {table.name}
            WHERE NOT compacted LIMIT :batch
        ),
        moved AS (
            DELETE FROM {table.name} t USING compact_keys k
            WHERE {" AND ".join(f"t.{name} = k.{name}" for name in keys)}
            RETURNING t.*
        ),
        summed AS (
            INSERT INTO {table.name} ({", ".join(keys)}, {", ".join(measures)}, compacted)
            SELECT {", ".join(keys)}, {", ".join(f"sum({name})" for name in measures)}, true
            FROM moved GROUP BY {", ".join(keys)}
            HAVING {" OR ".join(f"sum({name}) <> 0" for name in measures)}
            RETURNING 1
        )
        SELECT count(*) FROM compact_keys"""


async def compact_table(session: AsyncSession, table: Table, batch: int = COMPACT_BATCH) -> int:
    """Sum the rows of up to `batch` keys that have delta rows into one row each; the key count.

    One statement: the rows it deletes are exactly the rows it sums (RETURNING), so a reader's
    snapshot holds either those rows or their sum. A key whose sum is zero keeps no row.
    """
    found = await session.scalar(text(compaction_sql(table)), {"batch": batch})
    return int(found or 0)


async def compact(session: AsyncSession, batch: int = COMPACT_BATCH) -> int | None:
    """One round of compaction over every rollup table; None when another process holds it."""
    locked = await session.scalar(select(func.pg_try_advisory_xact_lock(ROLLUP_LOCK)))
    if not locked:
        return None
    total = 0
    for table in ROLLUP_TABLES:
        total += await compact_table(session, table, batch)
    return total


async def rebuild(session: AsyncSession, program_id: UUID | None = None) -> None:
    """Recount the rollups of one program (every program when None) from the raw events."""
    await session.execute(select(func.metrics_rollups_rebuild(program_id)))

"""The SQL behind the metrics: rollups for whole time units, raw events for the rest.

Every set of measures is one statement, so one snapshot: the numbers of one funnel always agree
with each other. (An answer made of several statements — cohorts reads its members, then its
cells; a referrer's metrics add rewards and a balance — reads each at its own snapshot under
READ COMMITTED, so a write landing between them can show in one part only.) A statement sums
rows of one shape — grouping keys
`k0…` and the eight additive measures — from parts combined with UNION ALL and grouped:

- raw parts, one per event table (clicks, referrals, conversions, rewards), counting the events
  inside the ranges they are given;
- on Postgres, a rollup part (app.metrics.rollups): the rows of the whole days and quarter hours
  inside each range, whose sums equal the events they count in every snapshot (triggers write
  them in the events' own transactions).

A range is split into whole rollup units plus raw edges, so any instants and any time zone
(half- and quarter-hour offsets included) give exactly what a recount gives. Each part filters
on its ranges written out as constants (the planner then sees how few rows an edge holds), and
finds a row's bucket with width_bucket() over the ranges' starts; SQLite (small data) counts
every range raw, joining a VALUES list of the buckets. Money sums are exact on both: numeric on
Postgres, integer ten-thousandths on SQLite, whose NUMERIC columns hold binary floats.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import Grouping as ParenthesisGroup

from app.conversions.models import Conversion, ConversionStatus
from app.core.db import UTCDateTime, is_postgres
from app.metrics.models import channel_rollups, program_rollups, referrer_rollups
from app.metrics.periods import Bucket, Window
from app.metrics.rollups import GRAINS, Span, spans, trimmed_spans
from app.rewards.models import Reward
from app.tracking.models import Click, Referral

COSTED_STATUSES = ("pending", "approved", "paid")
POINTS = "points"
DIRECT = "direct"
# SQLite sums money as integer ten-thousandths: MONEY columns have 4 decimal places.
SQLITE_MONEY_SCALE = 4
# Literal zeros, not parameters: a partial index predicate must be provable from the query.
ZERO: ColumnElement[Any] = literal_column("0")
TIMESTAMPTZ = TIMESTAMP(timezone=True)
# Up to this many raw ranges are counted by a statement part each (see _Ranges.each).
MAX_SEPARATE_RANGES = 4


@dataclass(frozen=True)
class Scope:
    """What is counted: one program's events in the window, optionally one referrer's."""

    program_id: UUID
    currency: str
    window: Window
    referrer_id: UUID | None = None


@dataclass
class Counts:
    """The additive measures of one slice; rates are derived from them."""

    clicks: int = 0
    unique_clicks: int = 0
    referrals: int = 0
    converted_referrals: int = 0
    conversions: int = 0
    revenue: Decimal = field(default_factory=Decimal)
    reward_cost: Decimal = field(default_factory=Decimal)
    reward_points: int = 0


COUNT_COLUMNS = (
    "clicks",
    "unique_clicks",
    "referrals",
    "converted_referrals",
    "conversions",
    "revenue",
    "reward_cost",
    "reward_points",
)
MONEY_COLUMNS = {"revenue", "reward_cost", "reward_points"}
# A slice is listed (leaderboard, channels) when it has a click, a referral or a conversion.
ACTIVITY = ("clicks", "referrals", "conversions")
SOURCES = ("clicks", "referrals", "conversions", "rewards")


class Sums:
    """Exact money sums for the session's dialect."""

    def __init__(self, session: AsyncSession):
        self.postgres = is_postgres(session)

    @classmethod
    async def start(cls, session: AsyncSession) -> "Sums":
        sums = cls(session)
        if sums.postgres:
            # JIT would spend longer compiling these statements than they take to run; a
            # generic plan of a reused prepared statement would not see the ranges' bounds;
            # parallel workers cost more to start than they save on these few thousand rows
            # (and take the cores other requests need). Only this transaction is affected.
            await session.execute(
                text(
                    "SELECT set_config('jit', 'off', true),"
                    " set_config('plan_cache_mode', 'force_custom_plan', true),"
                    " set_config('max_parallel_workers_per_gather', '0', true)"
                )
            )
        return sums

    def money(self, expression: Any) -> ColumnElement[Any]:
        if self.postgres:
            return func.sum(expression)
        scaled = cast(func.round(expression * 10**SQLITE_MONEY_SCALE), Integer)
        return type_coerce(func.sum(scaled), Integer)

    def value(self, raw: Any) -> Decimal:
        if raw is None:
            return Decimal(0)
        if self.postgres:
            return Decimal(raw)
        return Decimal(int(raw)).scaleb(-SQLITE_MONEY_SCALE)


class _Ranges:
    """Disjoint spans of time, each in a bucket: which rows they hold, and in which bucket.

    `where(moment)` is the spans written out as constants (adjacent ones merged). On Postgres
    `bucket(moment)` is width_bucket() over the spans' starts, so no join is needed; on SQLite
    `join` adds a VALUES list of the spans and `bucket` reads its index.
    """

    def __init__(self, pieces: Sequence[Span], postgres: bool, name: str):
        self.pieces = sorted(pieces, key=lambda piece: piece.start)
        self.postgres = postgres
        self.name = name
        self.table: CTE | None = None
        if not postgres:
            rows = [(piece.index, piece.start, piece.end) for piece in self.pieces]
            self.table = _values_cte(rows, name)

    def merged(self) -> list[tuple[datetime, datetime]]:
        found: list[tuple[datetime, datetime]] = []
        for piece in self.pieces:
            if found and found[-1][1] == piece.start:
                found[-1] = (found[-1][0], piece.end)
            else:
                found.append((piece.start, piece.end))
        return found

    def where(self, moment: Any) -> ColumnElement[bool]:
        return or_(*(and_(moment >= lo, moment < hi) for lo, hi in self.merged()))

    def each(self, moment: Any) -> list[ColumnElement[bool]]:
        """The ranges one by one, for a part each: a plain range scan on any (…, time) index.

        Many ranges (odd zones, or raw counting) share one condition instead.
        """
        merged = self.merged()
        if len(merged) > MAX_SEPARATE_RANGES:
            return [self.where(moment)]
        return [and_(moment >= lo, moment < hi) for lo, hi in merged]

    def join(self, query: Select[Any], moment: Any) -> Select[Any]:
        if self.table is None:
            return query
        return query.join(self.table, within(moment, self.table))

    def bucket(self, moment: Any) -> ColumnElement[Any]:
        if self.table is not None:
            return self.table.c.i
        starts = bindparam(
            f"{self.name}_starts", [piece.start for piece in self.pieces], ARRAY(TIMESTAMPTZ)
        )
        indexes = bindparam(
            f"{self.name}_buckets", [piece.index for piece in self.pieces], ARRAY(Integer)
        )
        return ParenthesisGroup(indexes)[func.width_bucket(moment, starts)]


@dataclass(frozen=True)
class _Source:
    """Where a table's rows sit on each grouping axis."""

    occurred_at: Any
    referrer_id: Any
    click_id: Any | None  # the click that brought the row; None when the row is a click


class Grouping:
    """No grouping: one row for the whole scope."""

    size = 0

    def keys(self, source: _Source, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return []

    def join(self, query: Select[Any], source: _Source) -> Select[Any]:
        return query

    def rollup_table(self, scope: Scope) -> Table | None:
        """The rollup table that holds this grouping's keys, or None: count raw."""
        return referrer_rollups if scope.referrer_id is not None else program_rollups

    def rollup_keys(self, table: Table, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return []


class ByBucket(Grouping):
    size = 1

    def keys(self, source: _Source, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return [ranges.bucket(source.occurred_at).label("k0")]

    def rollup_keys(self, table: Table, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return [ranges.bucket(table.c.bucket_start).label("k0")]


class ByReferrer(Grouping):
    size = 1

    def keys(self, source: _Source, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return [source.referrer_id.label("k0")]

    def rollup_table(self, scope: Scope) -> Table | None:
        return referrer_rollups

    def rollup_keys(self, table: Table, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return [table.c.referrer_id.label("k0")]


class ByChannel(Grouping):
    """utm source / medium / campaign of the click (of the row, or the one that brought it)."""

    size = 3
    NAMES = ("utm_source", "utm_medium", "utm_campaign")

    def __init__(self) -> None:
        self.click = aliased(Click, name="channel_click")

    def _click(self, source: _Source) -> Any:
        return Click if source.click_id is None else self.click

    def keys(self, source: _Source, ranges: _Ranges) -> list[ColumnElement[Any]]:
        click = self._click(source)
        # Constants as SQL text, not parameters: Postgres matches GROUP BY to SELECT textually.
        return [
            func.coalesce(
                func.nullif(getattr(click, name), literal_column("''")),
                literal_column(f"'{DIRECT}'"),
            ).label(f"k{position}")
            for position, name in enumerate(self.NAMES)
        ]

    def join(self, query: Select[Any], source: _Source) -> Select[Any]:
        if source.click_id is None:
            return query
        return query.outerjoin(self.click, self.click.id == source.click_id)

    def rollup_table(self, scope: Scope) -> Table | None:
        return channel_rollups if scope.referrer_id is None else None

    def rollup_keys(self, table: Table, ranges: _Ranges) -> list[ColumnElement[Any]]:
        return [table.c[name].label(f"k{i}") for i, name in enumerate(self.NAMES)]


def within(moment: Any, periods: Any) -> ColumnElement[bool]:
    return and_(moment >= periods.c.lo, moment < periods.c.hi)


def in_window(moment: Any, window: Window) -> ColumnElement[bool]:
    return and_(moment >= window.start, moment < window.end)


def periods_cte(periods: Sequence[Bucket], name: str = "periods") -> CTE:
    """The buckets as a VALUES list (i, lo, hi): works on Postgres and SQLite alike."""
    return _values_cte([(bucket.index, bucket.start, bucket.end) for bucket in periods], name)


def _values_cte(rows: Sequence[tuple[int, datetime, datetime]], name: str) -> CTE:
    table = values(
        column("i", Integer),
        column("lo", UTCDateTime()),
        column("hi", UTCDateTime()),
        name=name,
    ).data(list(rows))
    return table.cte(name)


def _count(expression: Any) -> ColumnElement[Any]:
    # Integers in the parts keep the outer sums bigint (numeric sums are slower).
    return cast(expression, Integer)


def _measure_row(**given: Any) -> list[ColumnElement[Any]]:
    """The eight measures in order, zero where the part has none."""
    return [given.get(name, ZERO).label(name) for name in COUNT_COLUMNS]


def raw_parts(
    scope: Scope,
    grouping: Grouping,
    sums: Sums,
    raw: Sequence[Span],
    sources: Sequence[str] = SOURCES,
    referrers: Any = None,
    name: str = "raw_periods",
) -> list[Select[Any]]:
    """One grouped select per event table, over its events inside the `raw` spans.

    `referrers`, a select of referrer ids, keeps only their events (the leaderboard's top).
    """
    ranges = _Ranges(raw, sums.postgres, name)
    parts: list[Select[Any]] = []

    def scoped(query: Select[Any], source: _Source, *conditions: Any) -> list[Select[Any]]:
        query = grouping.join(ranges.join(query, source.occurred_at), source)
        query = query.where(*conditions)
        if scope.referrer_id is not None:
            query = query.where(source.referrer_id == scope.referrer_id)
        if referrers is not None:
            query = query.where(source.referrer_id.in_(referrers))
        keys = grouping.keys(source, ranges)
        if keys:
            query = query.group_by(*keys)
        return [query.where(within) for within in ranges.each(source.occurred_at)]

    if "clicks" in sources:
        source = _Source(Click.occurred_at, Click.referrer_id, None)
        unique = and_(Click.is_bot.is_(False), Click.is_duplicate.is_(False))
        parts.extend(
            scoped(
                select(
                    *grouping.keys(source, ranges),
                    *_measure_row(
                        clicks=_count(func.count()),
                        unique_clicks=_count(func.sum(case((unique, 1), else_=0))),
                    ),
                ).select_from(Click),
                source,
                Click.program_id == scope.program_id,
            )
        )
    if "referrals" in sources:
        source = _Source(Referral.occurred_at, Referral.referrer_id, Referral.click_id)
        purchase = aliased(Conversion, name="purchase")
        converted = (
            exists()
            .where(
                purchase.referral_id == Referral.id, purchase.status == ConversionStatus.ATTRIBUTED
            )
            .correlate(Referral)
        )
        parts.extend(
            scoped(
                select(
                    *grouping.keys(source, ranges),
                    *_measure_row(
                        referrals=_count(func.count()),
                        converted_referrals=_count(func.sum(case((converted, 1), else_=0))),
                    ),
                ).select_from(Referral),
                source,
                Referral.program_id == scope.program_id,
            )
        )
    source = _Source(Conversion.occurred_at, Conversion.referrer_id, Conversion.click_id)
    if "conversions" in sources:
        parts.extend(
            scoped(
                select(
                    *grouping.keys(source, ranges),
                    *_measure_row(
                        conversions=_count(func.count()),
                        revenue=sums.money(Conversion.amount - Conversion.refunded_amount),
                    ),
                ).select_from(Conversion),
                source,
                Conversion.program_id == scope.program_id,
                Conversion.status == ConversionStatus.ATTRIBUTED,
            )
        )
    if "rewards" in sources:
        parts.extend(
            scoped(
                select(
                    *grouping.keys(source, ranges),
                    *_measure_row(
                        reward_cost=sums.money(
                            case((Reward.unit == scope.currency, Reward.amount), else_=0)
                        ),
                        reward_points=sums.money(
                            case((Reward.unit == POINTS, Reward.amount), else_=0)
                        ),
                    ),
                )
                .select_from(Reward)
                .join(Conversion, Conversion.id == Reward.conversion_id),
                source,
                Conversion.program_id == scope.program_id,
                Reward.status.in_(COSTED_STATUSES),
            )
        )
    return parts


def rollup_filters(scope: Scope, table: Table, rolled: Sequence[Span]) -> list[ColumnElement[bool]]:
    """The rollup rows of the units inside `rolled`: a plain range of one grain each.

    One part per range keeps every part an index range scan; many ranges share one condition.
    """
    rows = table.c
    ranges = [
        and_(rows.grain == grain, rows.bucket_start >= lo, rows.bucket_start < hi)
        for grain in sorted({piece.grain for piece in rolled if piece.grain})
        for lo, hi in _Ranges([p for p in rolled if p.grain == grain], True, "").merged()
    ]
    if len(ranges) > MAX_SEPARATE_RANGES:
        ranges = [or_(*ranges)]
    return [and_(rows.program_id == scope.program_id, within) for within in ranges]


def _rollup_parts(
    scope: Scope,
    grouping: Grouping,
    table: Table,
    rolled: Sequence[Span],
    referrers: Any = None,
    sign: int = 1,
) -> list[Select[Any]]:
    """The rollup rows of the whole units in `rolled`, one per row: the outer query sums them.

    With `sign` -1, each measure negated: the rows of units to subtract (see Plan.subtracted).
    """
    rows = table.c

    def signed(measure: Any) -> Any:
        return measure if sign > 0 else -measure

    ranges = _Ranges(rolled, True, "rollup_spans" if sign > 0 else "subtracted_spans")
    query = select(
        *grouping.rollup_keys(table, ranges),
        *_measure_row(
            **{name: signed(rows[name]) for name in COUNT_COLUMNS[:6]},
            reward_cost=case((rows.unit == scope.currency, signed(rows.reward_amount)), else_=ZERO),
            reward_points=case((rows.unit == POINTS, signed(rows.reward_amount)), else_=ZERO),
        ),
    )
    if scope.referrer_id is not None:
        query = query.where(rows.referrer_id == scope.referrer_id)
    if referrers is not None:
        query = query.where(rows.referrer_id.in_(referrers))
    return [query.where(within) for within in rollup_filters(scope, table, rolled)]


@dataclass(frozen=True)
class Plan:
    """Which parts of the ranges come from which rollup table, and which are counted raw.

    `subtracted`: whole units whose rows are subtracted from a coarser unit in `rolled` that
    reaches past the range (a month cut by the range's edge, less its days outside it).
    """

    table: Table | None
    rolled: list[Span]
    raw: list[Span]
    subtracted: list[Span] = field(default_factory=list)

    def parts(
        self,
        scope: Scope,
        grouping: Grouping,
        sums: Sums,
        sources: Sequence[str] = SOURCES,
        referrers: Any = None,
    ) -> list[Select[Any]]:
        parts = []
        if self.table is not None and self.rolled:
            parts += _rollup_parts(scope, grouping, self.table, self.rolled, referrers)
        if self.table is not None and self.subtracted:
            parts += _rollup_parts(scope, grouping, self.table, self.subtracted, referrers, -1)
        if self.raw:
            parts += raw_parts(scope, grouping, sums, self.raw, sources, referrers)
        return parts


def make_plan(
    scope: Scope,
    grouping: Grouping,
    sums: Sums,
    ranges: Sequence[tuple[int, datetime, datetime]],
    rollups: bool,
) -> Plan:
    table = grouping.rollup_table(scope) if rollups and sums.postgres else None
    grains = GRAINS[table.name] if table is not None else ()
    if len(ranges) == 1 and not isinstance(grouping, ByBucket):
        # One range, no buckets: a month cut by an edge may be read as a month less some days.
        found, subtracted = trimmed_spans(*ranges[0], grains)
    else:
        found = [piece for i, lo, hi in ranges for piece in spans(i, lo, hi, grains)]
        subtracted = []
    return Plan(
        table,
        [piece for piece in found if piece.grain is not None],
        [piece for piece in found if piece.grain is None],
        subtracted,
    )


def combined(parts: Sequence[Select[Any]], size: int) -> tuple[list[Any], dict[str, Any]]:
    """The parts as one subquery: its key columns, and each measure summed over the parts."""
    combined = union_all(*parts).subquery("parts")
    keys = [combined.c[f"k{i}"] for i in range(size)]
    measures = {name: func.sum(combined.c[name]).label(name) for name in COUNT_COLUMNS}
    return keys, measures


def active(measures: dict[str, Any]) -> ColumnElement[bool]:
    return or_(*(measures[name] > 0 for name in ACTIVITY))


def counts_of(row: Any, sums: Sums) -> Counts:
    mapping = row._mapping
    values_: dict[str, Any] = {}
    for name in COUNT_COLUMNS:
        raw = mapping[name]
        if name in MONEY_COLUMNS:
            amount = sums.value(raw)
            values_[name] = int(amount) if name == "reward_points" else amount
        else:
            values_[name] = int(raw or 0)
    return Counts(**values_)


def whole(scope: Scope) -> list[tuple[int, datetime, datetime]]:
    return [(0, scope.window.start, scope.window.end)]


async def total(session: AsyncSession, scope: Scope, *, rollups: bool = True) -> Counts:
    """The measures over the whole scope."""
    sums = await Sums.start(session)
    grouping = Grouping()
    plan = make_plan(scope, grouping, sums, whole(scope), rollups)
    _, measures = combined(plan.parts(scope, grouping, sums), 0)
    row = (await session.execute(select(*measures.values()))).one()
    return counts_of(row, sums)


async def by_bucket(
    session: AsyncSession, scope: Scope, periods: Sequence[Bucket], *, rollups: bool = True
) -> list[Counts]:
    """The measures per bucket, in bucket order, empty buckets included."""
    sums = await Sums.start(session)
    grouping = ByBucket()
    ranges = [(bucket.index, bucket.start, bucket.end) for bucket in periods]
    plan = make_plan(scope, grouping, sums, ranges, rollups)
    keys, measures = combined(plan.parts(scope, grouping, sums), 1)
    query = select(*keys, *measures.values()).group_by(*keys)
    found = {row.k0: counts_of(row, sums) for row in await session.execute(query)}
    return [found.get(bucket.index, Counts()) for bucket in periods]

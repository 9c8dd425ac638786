"""The SQL behind the metrics: aggregates over the raw tables, grouped in the database.

Every measure comes from one of four grouped subqueries (clicks, referrals, conversions,
rewards); an endpoint joins them on its key (nothing, a time bucket, a referrer, a channel),
so one statement answers it. Portable across Postgres and SQLite: time buckets arrive as a
VALUES list of UTC boundaries, and money sums are exact on both (numeric on Postgres, integer
ten-thousandths on SQLite, whose NUMERIC columns hold binary floats).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    column,
    exists,
    func,
    literal_column,
    select,
    text,
    true,
    type_coerce,
    union,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.conversions.models import Conversion
from app.db import UTCDateTime, is_postgres
from app.metrics.periods import Bucket, Window
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.tracking.models import Click, Referral

COSTED_STATUSES = ("pending", "approved", "paid")
POINTS = "points"
DIRECT = "direct"
# SQLite sums money as integer ten-thousandths: MONEY columns have 4 decimal places.
SQLITE_MONEY_SCALE = 4


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


class _Sums:
    """Exact money sums for the session's dialect."""

    def __init__(self, session: AsyncSession):
        self.postgres = is_postgres(session)

    @classmethod
    async def start(cls, session: AsyncSession) -> "_Sums":
        sums = cls(session)
        if sums.postgres:
            # Bucket joins make the planner overestimate rows by far; JIT would then spend
            # seconds compiling a query that runs in less. Only this transaction is affected.
            await session.execute(text("SET LOCAL jit = off"))
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


@dataclass(frozen=True)
class _Source:
    """Where a table's rows sit on each grouping axis."""

    occurred_at: Any
    referrer_id: Any
    click_id: Any | None  # the click that brought the row; None when the row is a click


class Grouping:
    """No grouping: one row for the whole scope."""

    def keys(self, source: _Source) -> list[ColumnElement[Any]]:
        return []

    def join(self, query: Select[Any], source: _Source) -> Select[Any]:
        return query


class ByBucket(Grouping):
    def __init__(self, periods: CTE):
        self.periods = periods

    def keys(self, source: _Source) -> list[ColumnElement[Any]]:
        return [self.periods.c.i.label("k0")]

    def join(self, query: Select[Any], source: _Source) -> Select[Any]:
        return query.join(self.periods, _within(source.occurred_at, self.periods))


class ByReferrer(Grouping):
    def keys(self, source: _Source) -> list[ColumnElement[Any]]:
        return [source.referrer_id.label("k0")]


class ByChannel(Grouping):
    """utm source / medium / campaign of the click (of the row, or the one that brought it)."""

    def __init__(self) -> None:
        self.click = aliased(Click, name="channel_click")

    def _click(self, source: _Source) -> Any:
        return Click if source.click_id is None else self.click

    def keys(self, source: _Source) -> list[ColumnElement[Any]]:
        click = self._click(source)
        # Constants as SQL text, not parameters: Postgres matches GROUP BY to SELECT textually.
        return [
            func.coalesce(
                func.nullif(getattr(click, name), literal_column("''")),
                literal_column(f"'{DIRECT}'"),
            ).label(f"k{position}")
            for position, name in enumerate(("utm_source", "utm_medium", "utm_campaign"))
        ]

    def join(self, query: Select[Any], source: _Source) -> Select[Any]:
        if source.click_id is None:
            return query
        return query.outerjoin(self.click, self.click.id == source.click_id)


def _within(moment: Any, periods: Any) -> ColumnElement[bool]:
    return and_(moment >= periods.c.lo, moment < periods.c.hi)


def _in_window(moment: Any, window: Window) -> ColumnElement[bool]:
    return and_(moment >= window.start, moment < window.end)


def periods_cte(periods: Sequence[Bucket], name: str = "periods") -> CTE:
    """The buckets as a VALUES list (i, lo, hi): works on Postgres and SQLite alike."""
    rows = values(
        column("i", Integer),
        column("lo", UTCDateTime()),
        column("hi", UTCDateTime()),
        name=name,
    ).data([(bucket.index, bucket.start, bucket.end) for bucket in periods])
    return rows.cte(name)


def _aggregates(scope: Scope, grouping: Grouping, sums: _Sums) -> dict[str, CTE]:
    """The four grouped subqueries, as CTEs named after what they count."""
    window = scope.window
    unique = and_(Click.is_bot.is_(False), Click.is_duplicate.is_(False))

    source = _Source(Click.occurred_at, Click.referrer_id, None)
    keys = grouping.keys(source)
    clicks = grouping.join(
        select(
            *keys,
            func.count().label("clicks"),
            func.sum(case((unique, 1), else_=0)).label("unique_clicks"),
        ).select_from(Click),
        source,
    ).where(Click.program_id == scope.program_id, _in_window(Click.occurred_at, window))
    if scope.referrer_id is not None:
        clicks = clicks.where(Click.referrer_id == scope.referrer_id)

    source = _Source(Referral.occurred_at, Referral.referrer_id, Referral.click_id)
    keys_r = grouping.keys(source)
    purchase = aliased(Conversion, name="purchase")
    converted = (
        exists()
        .where(purchase.referral_id == Referral.id, purchase.status == "attributed")
        .correlate(Referral)
    )
    referrals = grouping.join(
        select(
            *keys_r,
            func.count().label("referrals"),
            func.sum(case((converted, 1), else_=0)).label("converted_referrals"),
        ).select_from(Referral),
        source,
    ).where(Referral.program_id == scope.program_id, _in_window(Referral.occurred_at, window))
    if scope.referrer_id is not None:
        referrals = referrals.where(Referral.referrer_id == scope.referrer_id)

    source = _Source(Conversion.occurred_at, Conversion.referrer_id, Conversion.click_id)
    keys_c = grouping.keys(source)
    conversion_scope = [
        Conversion.program_id == scope.program_id,
        _in_window(Conversion.occurred_at, window),
    ]
    if scope.referrer_id is not None:
        conversion_scope.append(Conversion.referrer_id == scope.referrer_id)
    conversions = grouping.join(
        select(
            *keys_c,
            func.count().label("conversions"),
            sums.money(Conversion.amount - Conversion.refunded_amount).label("revenue"),
        ).select_from(Conversion),
        source,
    ).where(*conversion_scope, Conversion.status == "attributed")

    keys_w = grouping.keys(source)
    rewards = grouping.join(
        select(
            *keys_w,
            sums.money(case((Reward.unit == scope.currency, Reward.amount), else_=0)).label(
                "reward_cost"
            ),
            sums.money(case((Reward.unit == POINTS, Reward.amount), else_=0)).label(
                "reward_points"
            ),
        )
        .select_from(Reward)
        .join(Conversion, Conversion.id == Reward.conversion_id),
        source,
    ).where(*conversion_scope, Reward.status.in_(COSTED_STATUSES))

    built = {
        "clicks": clicks,
        "referrals": referrals,
        "conversions": conversions,
        "rewards": rewards,
    }
    if keys:
        built = {
            name: query.group_by(*list(query.selected_columns)[: len(keys)])
            for name, query in built.items()
        }
    return {name: query.cte(f"{name}_totals") for name, query in built.items()}


AGGREGATE_OF = {
    "clicks": "clicks",
    "unique_clicks": "clicks",
    "referrals": "referrals",
    "converted_referrals": "referrals",
    "conversions": "conversions",
    "revenue": "conversions",
    "reward_cost": "rewards",
    "reward_points": "rewards",
}


def _measures(aggregates: dict[str, CTE]) -> list[ColumnElement[Any]]:
    return [getattr(aggregates[AGGREGATE_OF[name]].c, name).label(name) for name in COUNT_COLUMNS]


def _counts(row: Any, sums: _Sums) -> Counts:
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


def _on_keys(left: Any, right: CTE, size: int) -> ColumnElement[bool]:
    return and_(*(getattr(left.c, f"k{i}") == getattr(right.c, f"k{i}") for i in range(size)))


async def total(session: AsyncSession, scope: Scope) -> Counts:
    """The measures over the whole scope."""
    sums = await _Sums.start(session)
    aggregates = _aggregates(scope, Grouping(), sums)
    clicks, referrals, conversions, rewards = (
        aggregates[name] for name in ("clicks", "referrals", "conversions", "rewards")
    )
    query = select(*_measures(aggregates)).select_from(
        clicks.join(referrals, true()).join(conversions, true()).join(rewards, true())
    )
    row = (await session.execute(query)).one()
    return _counts(row, sums)


async def by_bucket(session: AsyncSession, scope: Scope, periods: Sequence[Bucket]) -> list[Counts]:
    """The measures per bucket, in bucket order, empty buckets included."""
    sums = await _Sums.start(session)
    table = periods_cte(periods)
    aggregates = _aggregates(scope, ByBucket(table), sums)
    joined: Any = table
    for aggregate in aggregates.values():
        joined = joined.outerjoin(aggregate, aggregate.c.k0 == table.c.i)
    query = select(table.c.i, *_measures(aggregates)).select_from(joined).order_by(table.c.i)
    found = {row.i: _counts(row, sums) for row in await session.execute(query)}
    return [found.get(bucket.index, Counts()) for bucket in periods]


def _key_union(aggregates: dict[str, CTE], size: int) -> Any:
    """Every key that has a click, a referral or a conversion (rewards follow conversions)."""
    keys = [f"k{i}" for i in range(size)]
    return union(
        *(
            select(*(getattr(aggregates[name].c, key) for key in keys))
            for name in ("clicks", "referrals", "conversions")
        )
    ).subquery("slice_keys")


@dataclass(frozen=True)
class ReferrerCounts:
    referrer_id: UUID
    external_id: str
    name: str | None
    counts: Counts


async def by_referrer(
    session: AsyncSession, scope: Scope, order_by: str, limit: int
) -> list[ReferrerCounts]:
    """Referrers with a click, referral or conversion in the window, best first by `order_by`.

    Ties go to the smaller external_id.
    """
    sums = await _Sums.start(session)
    aggregates = _aggregates(scope, ByReferrer(), sums)
    keys = _key_union(aggregates, 1)
    joined = keys.join(Referrer, Referrer.id == keys.c.k0)
    for aggregate in aggregates.values():
        joined = joined.outerjoin(aggregate, _on_keys(keys, aggregate, 1))
    measures = {measure.name: measure for measure in _measures(aggregates)}
    query = (
        select(Referrer.id, Referrer.external_id, Referrer.name, *measures.values())
        .select_from(joined)
        .order_by(func.coalesce(measures[order_by], 0).desc(), Referrer.external_id, Referrer.id)
        .limit(limit)
    )
    return [
        ReferrerCounts(row.id, row.external_id, row.name, _counts(row, sums))
        for row in await session.execute(query)
    ]


@dataclass(frozen=True)
class ChannelCounts:
    utm_source: str
    utm_medium: str
    utm_campaign: str
    counts: Counts


async def by_channel(session: AsyncSession, scope: Scope, limit: int) -> list[ChannelCounts]:
    """Channels (utm source / medium / campaign) by clicks, then conversions, then name."""
    sums = await _Sums.start(session)
    aggregates = _aggregates(scope, ByChannel(), sums)
    keys = _key_union(aggregates, 3)
    joined: Any = keys
    for aggregate in aggregates.values():
        joined = joined.outerjoin(aggregate, _on_keys(keys, aggregate, 3))
    measures = {measure.name: measure for measure in _measures(aggregates)}
    query = (
        select(keys.c.k0, keys.c.k1, keys.c.k2, *measures.values())
        .select_from(joined)
        .order_by(
            func.coalesce(measures["clicks"], 0).desc(),
            func.coalesce(measures["conversions"], 0).desc(),
            keys.c.k0,
            keys.c.k1,
            keys.c.k2,
        )
        .limit(limit)
    )
    return [
        ChannelCounts(row.k0, row.k1, row.k2, _counts(row, sums))
        for row in await session.execute(query)
    ]


@dataclass(frozen=True)
class RewardSum:
    recipient: str
    unit: str
    status: str
    amount: Decimal


async def referrer_rewards(session: AsyncSession, scope: Scope) -> list[RewardSum]:
    """The referrer's rewards (both recipients) whose conversion occurred in the window."""
    assert scope.referrer_id is not None
    sums = await _Sums.start(session)
    query = (
        select(
            Reward.recipient, Reward.unit, Reward.status, sums.money(Reward.amount).label("amount")
        )
        .join(Conversion, Conversion.id == Reward.conversion_id)
        .where(
            Reward.referrer_id == scope.referrer_id,
            Conversion.program_id == scope.program_id,
            _in_window(Conversion.occurred_at, scope.window),
        )
        .group_by(Reward.recipient, Reward.unit, Reward.status)
    )
    return [
        RewardSum(row.recipient, row.unit, row.status, sums.value(row.amount))
        for row in await session.execute(query)
    ]


@dataclass(frozen=True)
class CohortCell:
    purchases: int
    revenue: Decimal


@dataclass
class CohortCounts:
    """customers[(kind, cohort index)] and cells[(kind, cohort index, purchase index)]."""

    customers: dict[tuple[str, int], int]
    cells: dict[tuple[str, int, int], CohortCell]


async def cohorts(session: AsyncSession, scope: Scope, months: Sequence[Bucket]) -> CohortCounts:
    """Referred customers by month of referral, unattributed ones by month of first purchase.

    Purchases are all of the customer's conversions in the program (attributed or not) from
    the referral (or first purchase) on and before the window's end, by month of purchase.
    """
    sums = await _Sums.start(session)
    window = scope.window
    table = periods_cte(months, "months")
    cohort_month = table.alias("cohort_month")
    purchase_month = table.alias("purchase_month")
    revenue = sums.money(Conversion.amount - Conversion.refunded_amount).label("revenue")

    referred_members = (
        select(cohort_month.c.i, func.count().label("customers"))
        .select_from(Referral)
        .join(cohort_month, _within(Referral.occurred_at, cohort_month))
        .where(Referral.program_id == scope.program_id, _in_window(Referral.occurred_at, window))
        .group_by(cohort_month.c.i)
    )
    referred_cells = (
        select(cohort_month.c.i, purchase_month.c.i.label("j"), func.count().label("n"), revenue)
        .select_from(Referral)
        .join(cohort_month, _within(Referral.occurred_at, cohort_month))
        .join(
            Conversion,
            and_(
                Conversion.program_id == Referral.program_id,
                Conversion.customer_id == Referral.customer_id,
                Conversion.occurred_at >= Referral.occurred_at,
                Conversion.occurred_at < window.end,
            ),
        )
        .join(purchase_month, _within(Conversion.occurred_at, purchase_month))
        .where(Referral.program_id == scope.program_id, _in_window(Referral.occurred_at, window))
        .group_by(cohort_month.c.i, purchase_month.c.i)
    )

    referred = aliased(Referral, name="referred")
    first_at = func.min(Conversion.occurred_at)
    firsts = (
        select(Conversion.customer_id.label("customer_id"), first_at.label("first_at"))
        .where(
            Conversion.program_id == scope.program_id,
            ~exists().where(
                referred.program_id == scope.program_id,
                referred.customer_id == Conversion.customer_id,
            ),
        )
        .group_by(Conversion.customer_id)
        .having(_in_window(first_at, window))
        .subquery("first_purchases")
    )
    organic_members = (
        select(cohort_month.c.i, func.count().label("customers"))
        .select_from(firsts)
        .join(cohort_month, _within(firsts.c.first_at, cohort_month))
        .group_by(cohort_month.c.i)
    )
    organic_cells = (
        select(cohort_month.c.i, purchase_month.c.i.label("j"), func.count().label("n"), revenue)
        .select_from(firsts)
        .join(cohort_month, _within(firsts.c.first_at, cohort_month))
        .join(
            Conversion,
            and_(
                Conversion.program_id == scope.program_id,
                Conversion.customer_id == firsts.c.customer_id,
                Conversion.occurred_at < window.end,
            ),
        )
        .join(purchase_month, _within(Conversion.occurred_at, purchase_month))
        .group_by(cohort_month.c.i, purchase_month.c.i)
    )

    found = CohortCounts(customers={}, cells={})
    for kind, members, cells in (
        ("referred", referred_members, referred_cells),
        ("unattributed", organic_members, organic_cells),
    ):
        for row in await session.execute(members.add_cte(table)):
            found.customers[(kind, row.i)] = int(row.customers)
        for row in await session.execute(cells.add_cte(table)):
            found.cells[(kind, row.i, row.j)] = CohortCell(int(row.n), sums.value(row.revenue))
    return found

"""Per referrer and per channel: the leaderboard, the channels table, a referrer's rewards."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.metrics.models import referrer_rollups
from app.metrics.periods import Window
from app.metrics.queries import (
    COUNT_COLUMNS,
    ZERO,
    ByChannel,
    ByReferrer,
    Counts,
    Grouping,
    Plan,
    Scope,
    Sums,
    active,
    combined,
    counts_of,
    in_window,
    make_plan,
    raw_parts,
    rollup_filters,
    whole,
)
from app.metrics.rollups import ceil_to, floor_to
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.rewards.service import status_as_read


@dataclass(frozen=True)
class ReferrerCounts:
    referrer_id: UUID
    external_id: str
    name: str | None
    counts: Counts


# Sparse measures the leaderboard ranks by from a partial index of the referrer rollups:
# the event table they come from, and the index's predicate.
RANKABLE = {
    "conversions": (
        "conversions",
        or_(referrer_rollups.c.conversions != ZERO, referrer_rollups.c.revenue != ZERO),
    ),
    "revenue": (
        "conversions",
        or_(referrer_rollups.c.conversions != ZERO, referrer_rollups.c.revenue != ZERO),
    ),
    "referrals": ("referrals", referrer_rollups.c.referrals != ZERO),
}
# These orders rank from the heads of the monthly rollup rows first (see _heads): at least this
# many referrers per month, and twice the limit; a head too shallow to decide is read again this
# many times deeper, then the sparse ranking (RANKABLE) or every active referrer decides. Only
# measures to which every event adds zero or more: counts, and revenue (a refund is at most what
# is left of the amount: the service's rule, and a CHECK constraint of migration 0012).
HEADS = ("clicks", "referrals", "conversions", "revenue")
HEAD_DEPTH = 200
HEAD_DEEPER = 8


async def by_referrer(
    session: AsyncSession, scope: Scope, order_by: str, limit: int, *, rollups: bool = True
) -> list[ReferrerCounts]:
    """Referrers with a click, referral or conversion in the window, best first by `order_by`.

    Ties go to the smaller external_id. From rollups, an order in HEADS first ranks the
    candidates from the heads of the monthly rollups (_heads) and sums every measure of those;
    when the heads cannot decide, a sparse order (conversions, revenue,
    referrals) ranks only the referrers whose measure is positive, then sums every measure of
    the top `limit`; when fewer than `limit` have a positive measure, the rest are ties at zero
    and every active referrer is summed instead.
    """
    sums = await Sums.start(session)
    grouping = ByReferrer()
    plan = make_plan(scope, grouping, sums, whole(scope), rollups)
    months = _months(scope.window) if plan.table is not None and order_by in HEADS else []
    depth = max(HEAD_DEPTH, 2 * limit)
    for deeper in (1, HEAD_DEEPER) if months else ():
        top, bound = _heads(scope, months, order_by, depth * deeper)
        rows, most = await _leaderboard(
            session, scope, grouping, sums, plan, order_by, limit, top, bound
        )
        # Everyone outside the heads has at most `most`: less than the last row has.
        last = getattr(rows[-1].counts, order_by) if rows else 0
        if len(rows) == limit and most is not None and last > most:
            return rows
    if plan.table is not None and order_by in RANKABLE:
        top = _top_referrers(scope, grouping, sums, plan, order_by, limit)
        rows, _ = await _leaderboard(session, scope, grouping, sums, plan, order_by, limit, top)
        if len(rows) == limit:
            return rows
    rows, _ = await _leaderboard(session, scope, grouping, sums, plan, order_by, limit, None)
    return rows


def _months(window: Window) -> list[datetime]:
    """The starts of the UTC calendar months `window` touches; none near the calendar's ends."""
    try:
        month, found = floor_to(window.start, "month"), []
        while month < window.end:
            found.append(month)
            month = ceil_to(month + timedelta(days=1), "month")
    except (OverflowError, ValueError):
        return []
    return found


def _heads(
    scope: Scope, months: list[datetime], measure: str, depth: int
) -> tuple[CTE, ColumnElement[Any]]:
    """Candidates for the leaderboard by a measure, and the most anyone else can have of it.

    A referrer and month have at most one compacted rollup row (compaction and the rebuild
    write one row per key), and while a referrer has no uncompacted row in a month, that row's
    measure is the referrer's in the month: at least that of any part of it (no event lowers a
    measure in HEADS). So a referrer in neither the `depth` rows with the largest measure of a
    month the window touches (read in order from a partial index,
    ix_metrics_referrer_rollups_heads_*) nor among the referrers with uncompacted rows there
    has at most, in the window, the sum over those months of the head's smallest value (0 for a
    month with fewer rows than `depth`: everyone with a positive value is in it). The
    candidates are summed exactly; when the last of the top `limit` has more than that bound,
    nobody else can be in the top.
    """
    rows = referrer_rollups.c
    # Constants as SQL text, not parameters: the partial index predicate must be provable.
    monthly = and_(rows.program_id == scope.program_id, rows.grain == literal_column("'month'"))
    heads = []
    for index, month in enumerate(months):
        head = (
            select(literal(index).label("m"), rows.referrer_id, rows[measure].label("n"))
            .where(
                monthly,
                rows.bucket_start == month,
                rows.unit == literal_column("''"),
                rows.compacted,
                rows[measure] > ZERO,
            )
            .order_by(rows[measure].desc())
            .limit(depth)
            .subquery(f"head_{index}")
        )
        heads.append(select(head))
    found = union_all(*heads).cte("heads")
    last = ceil_to(months[-1] + timedelta(days=1), "month")
    unsettled = select(rows.referrer_id).where(
        monthly,
        rows.bucket_start >= months[0],
        rows.bucket_start < last,
        ~rows.compacted,  # the partial index of uncompacted rows
    )
    candidates = union(select(found.c.referrer_id), unsettled).subquery("candidates")
    top = select(candidates.c.referrer_id.label("k0")).cte("top_referrers")
    smallest = (
        select(case((func.count() == depth, func.min(found.c.n)), else_=0).label("least"))
        .group_by(found.c.m)
        .subquery("smallest")
    )
    bound = select(func.coalesce(func.sum(smallest.c.least), 0)).scalar_subquery()
    return top, bound


def _top_referrers(
    scope: Scope, grouping: Grouping, sums: Sums, plan: Plan, order_by: str, limit: int
) -> CTE:
    """The `limit` referrers with the largest positive `order_by`, from the sparse rows only."""
    source, predicate = RANKABLE[order_by]
    parts: list[Select[Any]] = []
    rows = referrer_rollups.c
    for sign, rolled in ((1, plan.rolled), (-1, plan.subtracted)):
        signed = rows[order_by] if sign > 0 else -rows[order_by]
        sparse = select(rows.referrer_id.label("k0"), signed.label("m")).where(predicate)
        for within in rollup_filters(scope, referrer_rollups, rolled) if rolled else ():
            parts.append(sparse.where(within))
    if plan.raw:
        for part in raw_parts(scope, grouping, sums, plan.raw, (source,), name="rank_periods"):
            raw = part.subquery()
            parts.append(select(raw.c.k0, raw.c[order_by].label("m")))
    combined = union_all(*parts).subquery("ranked_parts")
    measure = func.sum(combined.c.m)
    # The largest `limit` measures with their ties first: only those need an external_id.
    ranked = (
        select(combined.c.k0, measure.label("m"))
        .group_by(combined.c.k0)
        .having(measure > 0)
        .order_by(measure.desc())
        .fetch(limit, with_ties=True)
        .subquery("ranked")
    )
    return (
        select(ranked.c.k0)
        .join(Referrer, Referrer.id == ranked.c.k0)
        .order_by(ranked.c.m.desc(), Referrer.external_id, Referrer.id)
        .limit(limit)
        .cte("top_referrers")
    )


async def _leaderboard(
    session: AsyncSession,
    scope: Scope,
    grouping: Grouping,
    sums: Sums,
    plan: Plan,
    order_by: str,
    limit: int,
    top: CTE | None,
    bound: ColumnElement[Any] | None = None,
) -> tuple[list[ReferrerCounts], Decimal | None]:
    """The top `limit` of the active referrers (of `top` only, when given), and `bound`."""
    referrers = select(top.c.k0) if top is not None else None
    parts = plan.parts(scope, grouping, sums, referrers=referrers)
    keys, measures = combined(parts, 1)
    totals = (
        select(*keys, *measures.values())
        .group_by(*keys)
        .having(active(measures))
        .subquery("referrer_totals")
    )
    query = (
        select(
            Referrer.id,
            Referrer.external_id,
            Referrer.name,
            *(totals.c[name] for name in COUNT_COLUMNS),
            (bound if bound is not None else literal_column("NULL")).label("bound"),
        )
        .select_from(totals.join(Referrer, Referrer.id == totals.c.k0))
        .order_by(totals.c[order_by].desc(), Referrer.external_id, Referrer.id)
        .limit(limit)
    )
    if referrers is not None:
        # Tells the planner how few they are: the names come from index lookups.
        query = query.where(Referrer.id.in_(referrers))
    found = list(await session.execute(query))
    rows = [
        ReferrerCounts(row.id, row.external_id, row.name, counts_of(row, sums)) for row in found
    ]
    return rows, (Decimal(found[0].bound) if found and found[0].bound is not None else None)


@dataclass(frozen=True)
class ChannelCounts:
    utm_source: str
    utm_medium: str
    utm_campaign: str
    counts: Counts


async def by_channel(
    session: AsyncSession, scope: Scope, limit: int, *, rollups: bool = True
) -> list[ChannelCounts]:
    """Channels (utm source / medium / campaign) by clicks, then conversions, then name."""
    sums = await Sums.start(session)
    grouping = ByChannel()
    plan = make_plan(scope, grouping, sums, whole(scope), rollups)
    keys, measures = combined(plan.parts(scope, grouping, sums), 3)
    query = (
        select(*keys, *measures.values())
        .group_by(*keys)
        .having(active(measures))
        .order_by(measures["clicks"].desc(), measures["conversions"].desc(), *keys)
        .limit(limit)
    )
    return [
        ChannelCounts(row.k0, row.k1, row.k2, counts_of(row, sums))
        for row in await session.execute(query)
    ]


@dataclass(frozen=True)
class RewardSum:
    recipient: str
    unit: str
    status: str
    amount: Decimal


async def referrer_rewards(session: AsyncSession, scope: Scope, now: datetime) -> list[RewardSum]:
    """The referrer's rewards (both recipients) whose conversion occurred in the window, by
    their status as a read shows it at `now` (a reward past its hold is approved)."""
    assert scope.referrer_id is not None
    sums = await Sums.start(session)
    status = status_as_read(now).label("status")
    query = (
        select(Reward.recipient, Reward.unit, status, sums.money(Reward.amount).label("amount"))
        .join(Conversion, Conversion.id == Reward.conversion_id)
        .where(
            Reward.referrer_id == scope.referrer_id,
            Conversion.program_id == scope.program_id,
            in_window(Conversion.occurred_at, scope.window),
        )
        .group_by(Reward.recipient, Reward.unit, status)
    )
    return [
        RewardSum(row.recipient, row.unit, row.status, sums.value(row.amount))
        for row in await session.execute(query)
    ]

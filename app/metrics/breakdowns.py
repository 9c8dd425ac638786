"""Per referrer and per channel: the leaderboard, the channels table, a referrer's rewards."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CTE,
    Select,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.metrics.models import referrer_rollups
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


async def by_referrer(
    session: AsyncSession, scope: Scope, order_by: str, limit: int, *, rollups: bool = True
) -> list[ReferrerCounts]:
    """Referrers with a click, referral or conversion in the window, best first by `order_by`.

    Ties go to the smaller external_id. From rollups, a sparse order (conversions, revenue,
    referrals) first ranks only the referrers whose measure is positive, then sums every
    measure of the top `limit`; when fewer than `limit` have a positive measure, the rest are
    ties at zero and every active referrer is summed instead.
    """
    sums = await Sums.start(session)
    grouping = ByReferrer()
    plan = make_plan(scope, grouping, sums, whole(scope), rollups)
    if plan.table is not None and order_by in RANKABLE:
        top = _top_referrers(scope, grouping, sums, plan, order_by, limit)
        rows = await _leaderboard(session, scope, grouping, sums, plan, order_by, limit, top)
        if len(rows) == limit:
            return rows
    return await _leaderboard(session, scope, grouping, sums, plan, order_by, limit, None)


def _top_referrers(
    scope: Scope, grouping: Grouping, sums: Sums, plan: Plan, order_by: str, limit: int
) -> CTE:
    """The `limit` referrers with the largest positive `order_by`, from the sparse rows only."""
    source, predicate = RANKABLE[order_by]
    parts: list[Select[Any]] = []
    if plan.rolled:
        rows = referrer_rollups.c
        sparse = select(rows.referrer_id.label("k0"), rows[order_by].label("m")).where(predicate)
        for within in rollup_filters(scope, referrer_rollups, plan.rolled):
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
) -> list[ReferrerCounts]:
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
        )
        .select_from(totals.join(Referrer, Referrer.id == totals.c.k0))
        .order_by(totals.c[order_by].desc(), Referrer.external_id, Referrer.id)
        .limit(limit)
    )
    if referrers is not None:
        # Tells the planner how few they are: the names come from index lookups.
        query = query.where(Referrer.id.in_(referrers))
    return [
        ReferrerCounts(row.id, row.external_id, row.name, counts_of(row, sums))
        for row in await session.execute(query)
    ]


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

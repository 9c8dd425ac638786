"""Program metrics: the funnel, time series, leaderboards, channels and cohorts.

The numbers come from app.metrics.queries: rollups for whole time units on Postgres (kept by the
triggers of migration 0006) plus the raw events of the partial edges, so they equal a recount
of the raw events.

Definitions (exact; the README repeats them). A range is half-open, `[from, to)`, and every
event counts at its own `occurred_at` — the time the click, referral or purchase happened, not
the time it was reported — so late events, refunds and reward reversals change the numbers of
the period the original event belongs to.

- clicks: the program's clicks that occurred in the range, bots and duplicates included.
- unique clicks: those clicks flagged neither bot nor duplicate.
- referrals: referrals (redemptions, or referrals made by a first attributed purchase)
  whose occurred_at is in the range.
- converted referrals: of those referrals, the ones with at least one attributed
  conversion linked to them (at any time).
- conversions: attributed conversions whose occurred_at is in the range.
- revenue (attributed revenue): the sum over those conversions of amount - refunded amount.
- reward cost: the sum of the amounts of rewards in the program's currency with status
  pending, approved or paid (reversed excluded; clawback entries included, they are negative)
  whose conversion occurred in the range, for both recipients (referrer and referee).
- reward points: the same sum over rewards paid in points.
- conversion rate = conversions ÷ unique clicks.
- referral rate = referrals ÷ unique clicks.
- referral purchase rate = converted referrals ÷ referrals.
- average order value = revenue ÷ conversions.
- revenue per reward spent = revenue ÷ reward cost.
- reward cost issued, reward cost redeemed, reward breakage and reward redemption rate (the
  summary only): the coupons issued in the range and what they really cost, defined in
  app.metrics.reward_cost.

Rates are Decimal strings rounded half-even to 4 places, null when the denominator is 0;
money is a Decimal string at the currency's minor unit (half-even), points whole numbers.

Slices: a referrer's slice counts the clicks on their codes, their referrals, and the
conversions attributed to them (with those conversions' rewards). A channel is the utm source,
medium and campaign of a click: of the click itself, of the click a referral was made through,
of the click that won a conversion; any of the three that is missing is "direct" (so a referral
or conversion with no click is direct / direct / direct). Timeseries buckets are calendar days,
ISO weeks (Monday) or months in the asked IANA time zone, clipped to the range, so the buckets
add up to the summary of the same range; a bucket the clipping cut is marked `partial`.

Cohorts: referred customers are grouped by the month (in the asked zone) of their referral's
occurred_at; unattributed customers — customers with a conversion and no referral in the
program — by the month of their first conversion. Cohorts whose month-start falls in the range
are shown (the first month clipped to `from`); for each, purchases are all of the customers'
conversions (attributed or not) from the referral (or first purchase) on and before `to`,
grouped by months since the cohort month, with their revenue (net of refunds) and the
cumulative revenue per customer (lifetime value to date).
"""

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal
from app.core.db import utcnow
from app.core.money import quantize
from app.metrics import breakdowns, cohort_queries, queries, reward_cost
from app.metrics.periods import Interval, Window, buckets, time_zone
from app.metrics.queries import Counts, Scope
from app.metrics.schemas import (
    ChannelRow,
    Channels,
    Cohort,
    CohortPeriod,
    Cohorts,
    Funnel,
    Leaderboard,
    ReferrerMetrics,
    ReferrerOrder,
    ReferrerRow,
    RewardTotals,
    Summary,
    Timeseries,
    TimeseriesBucket,
)
from app.programs.service import get_program
from app.referrers.service import get_referrer
from app.rewards.service import balance

RATE_PLACES = Decimal("0.0001")
REWARD_STATUSES = ("pending", "approved", "paid", "reversed")


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """numerator ÷ denominator rounded half-even to 4 places; None when the denominator is 0."""
    if denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, ROUND_HALF_EVEN)


def funnel(counts: Counts, currency: str) -> Funnel:
    """The measures of one slice, with the rates derived from its counts."""
    return Funnel(**_funnel_fields(counts, currency))


def _funnel_fields(counts: Counts, currency: str) -> dict[str, Any]:
    average = (
        quantize(counts.revenue / counts.conversions, currency) if counts.conversions else None
    )
    return {
        "clicks": counts.clicks,
        "unique_clicks": counts.unique_clicks,
        "referrals": counts.referrals,
        "converted_referrals": counts.converted_referrals,
        "conversions": counts.conversions,
        "revenue": quantize(counts.revenue, currency),
        "reward_cost": quantize(counts.reward_cost, currency),
        "reward_points": counts.reward_points,
        "conversion_rate": ratio(counts.conversions, counts.unique_clicks),
        "referral_rate": ratio(counts.referrals, counts.unique_clicks),
        "referral_purchase_rate": ratio(counts.converted_referrals, counts.referrals),
        "average_order_value": average,
        "revenue_per_reward_spent": ratio(counts.revenue, counts.reward_cost),
    }


def _range(window: Window) -> dict[str, Any]:
    return {"from": window.start, "to": window.end}


async def summary(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    window: Window,
    reader: AsyncSession | None = None,
) -> Summary:
    """The program's funnel over the window (counted through `reader`, the session by default)."""
    program = await get_program(session, principal, program_id)
    counts = await queries.total(reader or session, Scope(program.id, program.currency, window))
    cost = await reward_cost.true_cost(reader or session, program.id, program.currency, window)
    return Summary(
        program_id=program.id,
        currency=program.currency,
        **_range(window),
        **_funnel_fields(counts, program.currency),
        reward_cost_issued=cost.issued,
        reward_cost_redeemed=cost.redeemed,
        reward_breakage=cost.breakage,
        reward_redemption_rate=ratio(cost.redeemed, cost.issued),
    )


async def timeseries(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    window: Window,
    interval: Interval,
    tz: str,
    reader: AsyncSession | None = None,
) -> Timeseries:
    """The funnel per day, week or month in the zone `tz`, empty buckets included."""
    zone = time_zone(tz)
    periods = buckets(window, interval, zone)
    program = await get_program(session, principal, program_id)
    scope = Scope(program.id, program.currency, window)
    counts = await queries.by_bucket(reader or session, scope, periods)
    return Timeseries(
        program_id=program.id,
        currency=program.currency,
        interval=interval,
        tz=tz,
        **_range(window),
        buckets=[
            TimeseriesBucket(
                label=bucket.label,
                start=bucket.start.astimezone(zone),
                end=bucket.end.astimezone(zone),
                partial=bucket.partial,
                **_funnel_fields(bucket_counts, program.currency),
            )
            for bucket, bucket_counts in zip(periods, counts, strict=True)
        ],
    )


async def referrers(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    window: Window,
    order_by: ReferrerOrder,
    limit: int,
    reader: AsyncSession | None = None,
) -> Leaderboard:
    """Referrers with activity in the window, by `order_by` descending, ties by external_id."""
    program = await get_program(session, principal, program_id)
    rows = await breakdowns.by_referrer(
        reader or session, Scope(program.id, program.currency, window), order_by, limit
    )
    return Leaderboard(
        program_id=program.id,
        currency=program.currency,
        order_by=order_by,
        limit=limit,
        **_range(window),
        data=[
            ReferrerRow(
                referrer_id=row.referrer_id,
                external_id=row.external_id,
                name=row.name,
                **_funnel_fields(row.counts, program.currency),
            )
            for row in rows
        ],
    )


async def channels(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    window: Window,
    limit: int,
    reader: AsyncSession | None = None,
) -> Channels:
    """The funnel per utm source / medium / campaign, by clicks, then conversions, then name."""
    program = await get_program(session, principal, program_id)
    scope = Scope(program.id, program.currency, window)
    rows = await breakdowns.by_channel(reader or session, scope, limit)
    return Channels(
        program_id=program.id,
        currency=program.currency,
        limit=limit,
        **_range(window),
        data=[
            ChannelRow(
                utm_source=row.utm_source,
                utm_medium=row.utm_medium,
                utm_campaign=row.utm_campaign,
                **_funnel_fields(row.counts, program.currency),
            )
            for row in rows
        ],
    )


async def referrer_metrics(
    session: AsyncSession,
    principal: Principal,
    referrer_id: UUID,
    window: Window,
    reader: AsyncSession | None = None,
) -> ReferrerMetrics:
    """One referrer's funnel and rewards over the window, and their balance now.

    The funnel is counted through `reader`; the balance and the rewards by status come from
    the session, both read at the same `now`, so that they agree.
    """
    referrer, program = await get_referrer(session, principal, referrer_id)
    now = utcnow()
    balance_now = await balance(session, referrer, now)
    scope = Scope(program.id, program.currency, window, referrer_id=referrer.id)
    counts = await queries.total(reader or session, scope)
    sums = await breakdowns.referrer_rewards(session, scope, now)
    totals: dict[tuple[str, str], dict[str, Decimal]] = {}
    for line in sums:
        totals.setdefault((line.recipient, line.unit), {})[line.status] = line.amount
    rewards = [
        RewardTotals(
            recipient=recipient,
            unit=unit,
            **{status: _amount(by_status.get(status), unit) for status in REWARD_STATUSES},
        )
        for (recipient, unit), by_status in sorted(totals.items())
    ]
    return ReferrerMetrics(
        referrer_id=referrer.id,
        program_id=program.id,
        external_id=referrer.external_id,
        currency=program.currency,
        **_range(window),
        funnel=funnel(counts, program.currency),
        rewards=rewards,
        balance=balance_now,
    )


def _amount(amount: Decimal | None, unit: str) -> Decimal:
    if unit == queries.POINTS:
        return Decimal(int(amount or 0))
    return quantize(amount or Decimal(0), unit)


async def cohorts(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    window: Window,
    tz: str,
    reader: AsyncSession | None = None,
) -> Cohorts:
    """Purchases and revenue by months since referral (or first purchase), per cohort month."""
    zone = time_zone(tz)
    months = buckets(window, "month", zone)
    program = await get_program(session, principal, program_id)
    scope = Scope(program.id, program.currency, window)
    found = await cohort_queries.cohorts(reader or session, scope, months)
    rows: list[Cohort] = []
    for kind in ("referred", "unattributed"):
        for month in months:
            customers = found.customers.get((kind, month.index), 0)
            cumulative = Decimal(0)
            periods = []
            for later in months[month.index :]:
                cell = found.cells.get((kind, month.index, later.index))
                revenue = cell.revenue if cell else Decimal(0)
                cumulative += revenue
                periods.append(
                    CohortPeriod(
                        month_offset=later.index - month.index,
                        purchases=cell.purchases if cell else 0,
                        revenue=quantize(revenue, program.currency),
                        cumulative_revenue=quantize(cumulative, program.currency),
                        cumulative_revenue_per_customer=(
                            quantize(cumulative / customers, program.currency)
                            if customers
                            else None
                        ),
                    )
                )
            rows.append(Cohort(kind=kind, month=month.label, customers=customers, periods=periods))
    return Cohorts(
        program_id=program.id,
        currency=program.currency,
        by="month",
        tz=tz,
        **_range(window),
        cohorts=rows,
    )

"""The recount: every metric counted row by row from the raw tables, and the JSON it must equal."""

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.conversions.models import Conversion
from app.core.db import utcnow
from app.programs.models import Program
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.rewards.service import approve_due
from app.tracking.models import Click, Referral
from tests.recount_world import MINOR_UNITS


@dataclass
class Tables:
    programs: dict[UUID, Program]
    referrers: dict[UUID, Referrer]
    clicks: list[Click]
    referrals: list[Referral]
    conversions: list[Conversion]
    rewards: list[Reward]

    def __post_init__(self) -> None:
        self.click_by_id: dict[UUID | None, Any] = {c.id: c for c in self.clicks}
        self.conversion_by_id = {c.id: c for c in self.conversions}
        self.converted = {
            c.referral_id
            for c in self.conversions
            if c.status == "attributed" and c.referral_id is not None
        }


async def load(app: Any) -> Tables:
    async with app.state.sessionmaker() as session:

        def rows(model: Any) -> Any:
            return session.scalars(select(model))

        return Tables(
            programs={p.id: p for p in await rows(Program)},
            referrers={r.id: r for r in await rows(Referrer)},
            clicks=list(await rows(Click)),
            referrals=list(await rows(Referral)),
            conversions=list(await rows(Conversion)),
            rewards=list(await rows(Reward)),
        )


@dataclass
class Tally:
    clicks: int = 0
    unique_clicks: int = 0
    referrals: int = 0
    converted_referrals: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    reward_cost: Decimal = Decimal(0)
    reward_points: Decimal = Decimal(0)

    def active(self) -> bool:
        return bool(self.clicks or self.referrals or self.conversions)


# A key function sees (occurred_at, referrer_id, click that brought the event or None).
KeyOf = Callable[[datetime, UUID | None, Click | None], Hashable]


def recount(
    t: Tables,
    program_id: UUID,
    start: datetime,
    end: datetime,
    key: KeyOf,
    referrer_id: UUID | None = None,
) -> dict[Hashable, Tally]:
    """The measures per key, counted row by row."""
    tallies: dict[Hashable, Tally] = defaultdict(Tally)
    currency = t.programs[program_id].currency

    def counted(row: Any, moment: datetime, who: UUID | None) -> bool:
        mine = referrer_id is None or who == referrer_id
        return row.program_id == program_id and start <= moment < end and mine

    for c in t.clicks:
        if counted(c, c.occurred_at, c.referrer_id):
            tally = tallies[key(c.occurred_at, c.referrer_id, c)]
            tally.clicks += 1
            tally.unique_clicks += not c.is_bot and not c.is_duplicate
    for r in t.referrals:
        if counted(r, r.occurred_at, r.referrer_id):
            tally = tallies[key(r.occurred_at, r.referrer_id, t.click_by_id.get(r.click_id))]
            tally.referrals += 1
            tally.converted_referrals += r.id in t.converted
    for v in t.conversions:
        if v.status == "attributed" and counted(v, v.occurred_at, v.referrer_id):
            tally = tallies[key(v.occurred_at, v.referrer_id, t.click_by_id.get(v.click_id))]
            tally.conversions += 1
            tally.revenue += v.amount - v.refunded_amount
    for w in t.rewards:
        if w.conversion_id is None:
            continue  # a points redemption's entries: no purchase, counted in no funnel
        v = t.conversion_by_id[w.conversion_id]
        if w.status != "reversed" and counted(v, v.occurred_at, v.referrer_id):
            tally = tallies[key(v.occurred_at, v.referrer_id, t.click_by_id.get(v.click_id))]
            if w.unit == currency:
                tally.reward_cost += w.amount
            elif w.unit == "points":
                tally.reward_points += w.amount
    return tallies


def cash(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(Decimal(1).scaleb(-MINOR_UNITS[currency]), ROUND_HALF_EVEN))


def rate(numerator: Decimal | int, denominator: Decimal | int) -> str | None:
    if not denominator:
        return None
    return str(
        (Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
    )


def funnel_json(tally: Tally, currency: str) -> dict[str, Any]:
    """What the API must answer for these counts."""
    return {
        "clicks": tally.clicks,
        "unique_clicks": tally.unique_clicks,
        "referrals": tally.referrals,
        "converted_referrals": tally.converted_referrals,
        "conversions": tally.conversions,
        "revenue": cash(tally.revenue, currency),
        "reward_cost": cash(tally.reward_cost, currency),
        "reward_points": int(tally.reward_points),
        "conversion_rate": rate(tally.conversions, tally.unique_clicks),
        "referral_rate": rate(tally.referrals, tally.unique_clicks),
        "referral_purchase_rate": rate(tally.converted_referrals, tally.referrals),
        "average_order_value": (
            cash(tally.revenue / tally.conversions, currency) if tally.conversions else None
        ),
        "revenue_per_reward_spent": rate(tally.revenue, tally.reward_cost),
    }


FUNNEL_KEYS = list(funnel_json(Tally(), "USD"))


def funnel_of(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in FUNNEL_KEYS}


def whole(*_: Any) -> Hashable:
    return None


def period(moment: datetime, interval: str, zone: ZoneInfo) -> str:
    day = moment.astimezone(zone).date()
    if interval == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    if interval == "month":
        return day.strftime("%Y-%m")
    return day.isoformat()


def periods_between(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list[str]:
    first = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    labels: list[str] = []
    day: date = first
    while day <= last:
        label = period(
            datetime.combine(day, datetime.min.time(), zone).replace(hour=12), interval, zone
        )
        if label not in labels:
            labels.append(label)
        day += timedelta(days=1)
    return labels


def channel(_: datetime, __: UUID | None, click: Click | None) -> Hashable:
    if click is None:
        return ("direct", "direct", "direct")
    return tuple(
        value or "direct" for value in (click.utm_source, click.utm_medium, click.utm_campaign)
    )


def month_index(moment: datetime, zone: ZoneInfo) -> int:
    local = moment.astimezone(zone)
    return local.year * 12 + local.month - 1


def cohorts_recount(
    t: Tables, program_id: UUID, start: datetime, end: datetime, zone: ZoneInfo
) -> dict[tuple[str, str], dict[str, Any]]:
    currency = t.programs[program_id].currency
    purchases_of: dict[str, list[Conversion]] = {}
    for v in t.conversions:
        if v.program_id == program_id:
            purchases_of.setdefault(v.customer_id, []).append(v)
    referred_customers = {r.customer_id for r in t.referrals if r.program_id == program_id}
    members: list[tuple[str, datetime, list[Conversion]]] = []
    for r in t.referrals:
        if r.program_id == program_id and start <= r.occurred_at < end:
            bought = [
                v
                for v in purchases_of.get(r.customer_id, [])
                if r.occurred_at <= v.occurred_at < end
            ]
            members.append(("referred", r.occurred_at, bought))
    for customer, bought in purchases_of.items():
        first = min(v.occurred_at for v in bought)
        if customer not in referred_customers and start <= first < end:
            members.append(("unattributed", first, [v for v in bought if v.occurred_at < end]))
    last = month_index(end - timedelta(microseconds=1), zone)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in ("referred", "unattributed"):
        for index in range(month_index(start, zone), last + 1):
            label = f"{index // 12:04d}-{index % 12 + 1:02d}"
            mine = [m for m in members if m[0] == kind and month_index(m[1], zone) == index]
            customers = len(mine)
            cumulative = Decimal(0)
            periods = []
            for offset in range(last - index + 1):
                bought = [
                    v
                    for m in mine
                    for v in m[2]
                    if month_index(v.occurred_at, zone) == index + offset
                ]
                revenue = sum((v.amount - v.refunded_amount for v in bought), Decimal(0))
                cumulative += revenue
                periods.append(
                    {
                        "month_offset": offset,
                        "purchases": len(bought),
                        "revenue": cash(revenue, currency),
                        "cumulative_revenue": cash(cumulative, currency),
                        "cumulative_revenue_per_customer": (
                            cash(cumulative / customers, currency) if customers else None
                        ),
                    }
                )
            found[(kind, label)] = {"customers": customers, "periods": periods}
    return found


def csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def cells(row: dict[str, Any]) -> dict[str, str]:
    def cell(value: Any) -> str:
        if isinstance(value, bool):  # a bucket's `partial`
            return "true" if value else "false"
        return "" if value is None else str(value)

    return {key: cell(value) for key, value in row.items()}


async def approve_everything_due(app: Any) -> None:
    """What any ledger read does first; done up front, so no read changes a status later."""
    while True:
        async with app.state.sessionmaker() as session:
            approved = await approve_due(session, utcnow())
            await session.commit()
        if not approved:
            return

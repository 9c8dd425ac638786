"""Every metrics endpoint equals a plain recount over the raw tables.

A seeded generator sends a few thousand random events through the HTTP API (clicks from many
addresses, with bots and duplicates; redemptions; purchases with late occurred_at, by code,
by click, by customer history and organic; refunds, partial and full; rewards paid, reversed
and clawed back), then the test loads the rows and counts them by hand, in Python, for every
endpoint, range, interval and time zone it asks about.
"""

import asyncio
import csv
import io
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo

from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update

from app.conversions.models import Conversion
from app.core.db import utcnow
from app.programs.models import Program
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.rewards.service import approve_due
from app.tracking.models import Click, Referral
from app.tracking.service import ClickDetails, Visit, follow_link
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.settings import ON_POSTGRES

SEED = 20260301
HORIZON_DAYS = 75
CLICKS = 1200
HTTP_CLICKS = 300
REDEMPTIONS = 200
HISTORY_BUYERS = 100
CODE_PURCHASES = 80
CLICK_PURCHASES = 50
ORGANIC_PURCHASES = 70
ADDRESSES = 250
BOT_AGENTS = [
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "curl/8.5.0",
    "facebookexternalhit/1.1",
    "Mozilla/5.0 (compatible; bingbot/2.0)",
]
UTMS = [
    (None, None, None),
    ("newsletter", "email", "spring"),
    ("newsletter", "email", "summer"),
    ("twitter", "social", None),
    ("instagram", "social", "influencer"),
    ("", "", ""),
    ("google", "cpc", "brand"),
]
MINOR_UNITS = {"USD": 2, "EUR": 2, "JPY": 0}
PROGRAMS: list[dict[str, Any]] = [
    {
        "name": "Shop US",
        "currency": "USD",
        "referrers": 8,
        "weight": 5,
        "hold": 14,
        "rules": [
            {"recipient": "referrer", "kind": "fixed", "amount": "10.00"},
            {
                "recipient": "referee",
                "kind": "percent",
                "percent": "12.5",
                "trigger": "every_purchase",
                "hold_days": 14,
            },
            {
                "recipient": "referrer",
                "kind": "points",
                "points": 100,
                "trigger": "every_purchase",
                "min_order_amount": "50.00",
            },
        ],
    },
    {
        "name": "Shop EU",
        "currency": "EUR",
        "attribution_model": "first_touch",
        "attribution_window_days": 14,
        "referrers": 5,
        "weight": 3,
        "hold": 0,
        "rules": [
            {
                "recipient": "referrer",
                "kind": "percent",
                "percent": "7.5",
                "trigger": "every_purchase",
            },
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "3.00",
                "trigger": "every_purchase",
                "max_rewards_per_referrer": 2,
            },
        ],
    },
    {
        "name": "Shop JP",
        "currency": "JPY",
        "referrers": 3,
        "weight": 2,
        "hold": 0,
        "rules": [
            {"recipient": "referrer", "kind": "fixed", "amount": "500"},
            {
                "recipient": "referee",
                "kind": "percent",
                "percent": "5",
                "trigger": "every_purchase",
            },
        ],
    },
]


@dataclass
class World:
    admin: str
    now: datetime
    programs: list[dict[str, Any]] = field(default_factory=list)
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)


def ok(response: Any, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


def money(rng: random.Random, currency: str, low: int, high: int) -> Decimal:
    places = MINOR_UNITS[currency]
    return Decimal(rng.randint(low * 10**places, high * 10**places)).scaleb(-places)


async def gather_in_batches(calls: list[Any], size: int) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), size):
        results += await asyncio.gather(*calls[start : start + size])
    return results


WORKERS = 8 if ON_POSTGRES else 1  # SQLite has one writer: more would only wait


async def run_all(tasks: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the tasks, WORKERS at a time; the answers in task order."""
    gate = asyncio.Semaphore(WORKERS)

    async def one(task: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await task()

    return list(await asyncio.gather(*(one(task) for task in tasks)))


async def redeem_at(
    client: AsyncClient, app: Any, key: str, body: dict[str, Any], when: datetime
) -> None:
    made = ok(await client.post("/v1/redemptions", json=body, headers=auth(key)), 201)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Referral)
            .where(Referral.id == UUID(made["referral_id"]))
            .values(occurred_at=when)
        )
        await session.commit()


async def buy_in_order(
    client: AsyncClient, key: str, bodies: list[dict[str, Any]], answers: dict[str, Any]
) -> None:
    for body in bodies:
        response = await client.post("/v1/conversions", json=body, headers=auth(key))
        answers[body["event_id"]] = ok(response, 201)


async def post_in_order(client: AsyncClient, key: str, calls: list[tuple[str, Any]]) -> None:
    for path, body in calls:
        ok(await client.post(path, json=body, headers=auth(key)), 200, 201)


async def build_world(client: AsyncClient, app: Any, rng: random.Random) -> World:
    """Programs, referrers and rules; then every event, through the API."""
    world = World(admin=await make_key(app), now=utcnow())
    began = time.monotonic()

    def lap(what: str) -> None:
        print(f"  {what}: {time.monotonic() - began:.1f}s (cpu {time.process_time():.1f}s)")

    admin = world.admin
    publishable = await make_key(app, "publishable")
    for spec in PROGRAMS:
        extra = {k: spec[k] for k in ("attribution_model", "attribution_window_days") if k in spec}
        program = await make_program(
            client, admin, name=spec["name"], currency=spec["currency"], **extra
        )
        program |= {"weight": spec["weight"], "hold": spec["hold"]}
        world.programs.append(program)
        for rule in spec["rules"]:
            ok(
                await client.post(
                    f"/v1/programs/{program['id']}/reward-rules", json=rule, headers=auth(admin)
                )
            )
        world.referrers[program["id"]] = [
            await make_referrer(client, admin, program["id"], f"ref-{n:02d}")
            for n in range(spec["referrers"])
        ]
        # skewed popularity: the first referrers get most of the traffic
        world.weights[program["id"]] = [1 / (n + 1) ** 1.2 for n in range(spec["referrers"])]

    now = world.now

    def past(max_days: float = HORIZON_DAYS, min_seconds: float = 60) -> datetime:
        return now - timedelta(seconds=rng.uniform(min_seconds, max_days * 86400))

    def pick_program() -> dict[str, Any]:
        return rng.choices(world.programs, [p["weight"] for p in world.programs])[0]

    def pick_referrer(program: dict[str, Any]) -> dict[str, Any]:
        return rng.choices(world.referrers[program["id"]], world.weights[program["id"]])[0]

    # Clicks from many addresses (a repeat visitor on the same code is a duplicate): some
    # through POST /v1/clicks, the rest through the link service (faster, same code path).
    visitors = [
        AsyncClient(
            transport=ASGITransport(app=app, client=(f"10.0.{n // 200}.{n % 200}", 40000)),
            base_url="http://testserver",
        )
        for n in range(ADDRESSES)
    ]
    planned: list[tuple[dict[str, Any], dict[str, Any], datetime]] = []
    calls = []
    links: list[tuple[str, ClickDetails, Visit]] = []
    for n in range(CLICKS):
        program = pick_program()
        referrer = pick_referrer(program)
        planned.append((program, referrer, past()))
        source, medium, campaign = rng.choice(UTMS)
        utm = {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}
        visitor_id = f"visitor-{rng.randint(0, 700)}" if rng.random() < 0.5 else None
        agent = rng.choice(BOT_AGENTS) if rng.random() < 0.08 else BROWSER_UA
        address = rng.randrange(ADDRESSES)
        code = referrer["default_code"]["code"]
        if n < HTTP_CLICKS:
            body = {"code": code, "visitor_id": visitor_id} | utm
            calls.append(
                visitors[address].post(
                    "/v1/clicks",
                    json={k: v for k, v in body.items() if v is not None},
                    headers=auth(publishable) | {"User-Agent": agent},
                )
            )
        else:
            details = ClickDetails(visitor_id=visitor_id, **utm)
            links.append(
                (
                    code,
                    details,
                    Visit(ip=f"10.0.{address // 200}.{address % 200}", user_agent=agent),
                )
            )
    click_ids = [ok(response, 201)["click_id"] for response in await gather_in_batches(calls, 8)]
    for visitor in visitors:
        await visitor.aclose()
    for batch in range(0, len(links), 200):
        async with app.state.sessionmaker() as session:
            for code, details, visit in links[batch : batch + 200]:
                made, _, _ = await follow_link(session, app.state.settings, code, details, visit)
                assert made is not None
                click_ids.append(str(made.click_id))
            await session.commit()
    # The API stamps clicks with now: put them where the scenario wants them, a few exactly
    # at local midnights (UTC, New York, Kolkata) to test the bucket edges.
    moments = [when for _, _, when in planned]
    for n, zone in enumerate(["UTC", "America/New_York", "Asia/Kolkata"] * 4):
        day = (now - timedelta(days=3 + 5 * n)).astimezone(ZoneInfo(zone)).date()
        moments[n] = datetime.combine(day, datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Click),
            [
                {"id": UUID(click_id), "occurred_at": moment}
                for click_id, moment in zip(click_ids, moments, strict=True)
            ],
        )
        await session.commit()
    clicks_of: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for click_id, (_, referrer, _), moment in zip(click_ids, planned, moments, strict=True):
        clicks_of[referrer["id"]].append((click_id, moment))

    lap("clicks")
    # Redemptions, some through a click; the referral then moves to its scenario time.
    referred: list[tuple[dict[str, Any], str, datetime]] = []
    redemptions = []
    for n in range(REDEMPTIONS):
        program = pick_program()
        referrer = pick_referrer(program)
        customer = f"referee-{n}"
        body = {"code": referrer["default_code"]["code"], "customer_id": customer}
        when = past()
        if clicks_of[referrer["id"]] and rng.random() < 0.6:
            click_id, clicked_at = rng.choice(clicks_of[referrer["id"]])
            body["click_id"] = click_id
            when = min(clicked_at + timedelta(hours=rng.uniform(0, 48)), now - timedelta(minutes=1))
        referred.append((program, customer, when))
        redemptions.append(partial(redeem_at, client, app, publishable, body, when))
    await run_all(redemptions)

    lap("redemptions")
    # Purchases: late occurred_at everywhere, in random order.
    purchases: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def purchase(program: dict[str, Any], customer: str, when: datetime, **extra: Any) -> None:
        # Keep every hold away from "now": a reward must not come due while the test reads.
        due = when + timedelta(days=program["hold"])
        if program["hold"] and abs(due - now) < timedelta(hours=2):
            when -= timedelta(hours=3)
        body = {
            "program_id": program["id"],
            "event_id": f"order-{len(purchases)}",
            "customer_id": customer,
            "amount": str(money(rng, program["currency"], 5, 400)),
            "currency": program["currency"],
            "occurred_at": when.isoformat(),
        } | extra
        purchases.append((program, body))

    for program, customer, referred_at in rng.sample(referred, HISTORY_BUYERS):
        for _ in range(rng.choice([1, 1, 2, 3])):
            when = min(referred_at + timedelta(days=rng.uniform(0, 40)), now - timedelta(minutes=1))
            purchase(program, customer, when)
    for n in range(CODE_PURCHASES):
        program = pick_program()
        code = pick_referrer(program)["default_code"]["code"]
        purchase(program, f"coded-{n}", past(), code=rng.choice([code, code.lower()]))
    for n in range(CLICK_PURCHASES):
        program = pick_program()
        referrer = pick_referrer(program)
        if not clicks_of[referrer["id"]]:
            continue
        click_id, clicked_at = rng.choice(clicks_of[referrer["id"]])
        when = min(clicked_at + timedelta(hours=rng.uniform(0, 72)), now - timedelta(minutes=1))
        purchase(program, f"clicked-{n}", when, click_id=click_id)
    for _ in range(ORGANIC_PURCHASES):
        program = pick_program()
        purchase(program, f"organic-{rng.randint(0, 90)}", past())
    rng.shuffle(purchases)
    # One customer's purchases go in order; different customers' at once (on Postgres).
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, body in purchases:
        by_customer[body["customer_id"]].append(body)
    answers: dict[str, dict[str, Any]] = {}
    await run_all(
        [partial(buy_in_order, client, admin, bodies, answers) for bodies in by_customer.values()]
    )
    conversions = [answers[body["event_id"]] for _, body in purchases]
    for _, body in purchases[:10]:  # retries count once
        ok(await client.post("/v1/conversions", json=body, headers=auth(admin)), 200)

    lap("conversions")
    # The ledger: pay some rewards, reverse others; then refunds (clawbacks on paid ones).
    async with app.state.sessionmaker() as session:
        rewards = list(await session.scalars(select(Reward).order_by(Reward.created_at, Reward.id)))
    ledger_calls: list[list[tuple[str, Any]]] = []
    for reward in rewards:
        draw = rng.random()
        if reward.status == "approved" and draw < 0.3:
            ledger_calls.append([(f"/v1/rewards/{reward.id}/mark-paid", {})])
        elif reward.status in ("pending", "approved") and draw > 0.93:
            ledger_calls.append([(f"/v1/rewards/{reward.id}/reverse", {"reason": "fraud"})])
    await run_all([partial(post_in_order, client, admin, calls) for calls in ledger_calls])
    refunds = []
    for conversion in rng.sample(conversions, len(conversions) // 6):
        amount = Decimal(conversion["amount"])
        first = money(rng, conversion["currency"], 0, int(amount)) if rng.random() < 0.6 else None
        if first is not None and not (0 < first < amount):
            first = None
        path = f"/v1/conversions/{conversion['id']}/refunds"
        steps = [(path, {} if first is None else {"amount": str(first)})]
        if first is not None and rng.random() < 0.3:
            steps.append((path, {}))  # then the rest
        refunds.append(partial(post_in_order, client, admin, steps))
    await run_all(refunds)
    lap("ledger and refunds")
    return world


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


async def test_every_endpoint_equals_a_recount(client: AsyncClient, app: Any) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    world = await build_world(client, app, rng)
    await approve_everything_due(app)
    t = await load(app)
    seeded = time.monotonic()
    assert len(t.clicks) == CLICKS
    assert sum(c.is_bot for c in t.clicks) > 40
    assert sum(c.is_duplicate for c in t.clicks) > 50
    assert sum(v.status == "attributed" for v in t.conversions) > 200
    assert sum(v.refunded_amount > 0 for v in t.conversions) > 40
    assert any(w.entry_type == "clawback" for w in t.rewards)
    assert {w.status for w in t.rewards} >= {"pending", "approved", "paid", "reversed"}

    now = world.now
    admin = world.admin
    windows = [
        (now - timedelta(days=HORIZON_DAYS, hours=1), now + timedelta(minutes=5)),
        (now - timedelta(days=45), now - timedelta(days=3)),
        (now - timedelta(days=17, hours=5, minutes=13), now - timedelta(days=16, hours=2)),
    ]

    async def answer(path: str, **params: Any) -> Any:
        response = await client.get(path, params=params, headers=auth(admin))
        assert response.status_code == 200, response.text
        return response

    checked = 0
    for program in world.programs:
        pid = UUID(program["id"])
        currency = program["currency"]
        base = f"/v1/programs/{pid}/metrics"

        # summary, with the default range too
        default = (await answer(f"{base}/summary")).json()
        ranges = [
            (datetime.fromisoformat(default["from"]), datetime.fromisoformat(default["to"])),
            *windows,
        ]
        for start, end in ranges:
            body = (
                default
                if start == ranges[0][0]
                else (
                    await answer(
                        f"{base}/summary", **{"from": start.isoformat(), "to": end.isoformat()}
                    )
                ).json()
            )
            expected = recount(t, pid, start, end, whole).get(None, Tally())
            assert funnel_of(body) == funnel_json(expected, currency), (program["name"], start)
            checked += 1

        # timeseries: every interval, a few zones (Lord Howe moves by half an hour at DST)
        start, end = windows[0]
        for interval, tz in [
            ("day", "UTC"),
            ("day", "America/New_York"),
            ("week", "Asia/Kolkata"),
            ("month", "Australia/Lord_Howe"),
            ("day", "Asia/Kathmandu"),
        ]:
            zone = ZoneInfo(tz)
            body = (
                await answer(
                    f"{base}/timeseries",
                    interval=interval,
                    tz=tz,
                    **{"from": start.isoformat(), "to": end.isoformat()},
                )
            ).json()
            tallies = recount(
                t, pid, start, end, lambda moment, *_, i=interval, z=zone: period(moment, i, z)
            )
            assert [b["label"] for b in body["buckets"]] == periods_between(
                start, end, interval, zone
            )
            for bucket in body["buckets"]:
                expected_json = funnel_json(tallies.get(bucket["label"], Tally()), currency)
                assert funnel_of(bucket) == expected_json, (
                    program["name"],
                    interval,
                    tz,
                    bucket["label"],
                )
            checked += 1

        # referrers: every order, a short and a long board, two ranges
        for start, end in windows[:2]:
            tallies = recount(t, pid, start, end, lambda _, who, __: who)
            for order_by in ("conversions", "revenue", "referrals", "clicks"):
                active = [(who, tally) for who, tally in tallies.items() if tally.active()]
                active.sort(
                    key=lambda item: (
                        -getattr(item[1], order_by),
                        t.referrers[cast(UUID, item[0])].external_id,
                    )
                )
                for limit in (3, 500):
                    body = (
                        await answer(
                            f"{base}/referrers",
                            order_by=order_by,
                            limit=limit,
                            **{"from": start.isoformat(), "to": end.isoformat()},
                        )
                    ).json()
                    assert [(UUID(r["referrer_id"]), funnel_of(r)) for r in body["data"]] == [
                        (who, funnel_json(tally, currency)) for who, tally in active[:limit]
                    ], (program["name"], order_by, limit)
                    checked += 1

        # channels
        for start, end in windows[:2]:
            tallies = recount(t, pid, start, end, channel)
            rows = sorted(
                ((key, tally) for key, tally in tallies.items() if tally.active()),
                key=lambda item: (-item[1].clicks, -item[1].conversions, item[0]),
            )
            body = (
                await answer(
                    f"{base}/channels",
                    limit=500,
                    **{"from": start.isoformat(), "to": end.isoformat()},
                )
            ).json()
            assert [
                ((r["utm_source"], r["utm_medium"], r["utm_campaign"]), funnel_of(r))
                for r in body["data"]
            ] == [(key, funnel_json(tally, currency)) for key, tally in rows]
            checked += 1

        # one referrer at a time: funnel, rewards by status, balance
        start, end = windows[1]
        for referrer in world.referrers[program["id"]]:
            rid = UUID(referrer["id"])
            body = (
                await answer(
                    f"/v1/referrers/{rid}/metrics",
                    **{"from": start.isoformat(), "to": end.isoformat()},
                )
            ).json()
            expected = recount(t, pid, start, end, whole, referrer_id=rid).get(None, Tally())
            assert body["funnel"] == funnel_json(expected, currency)
            totals: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
                lambda: defaultdict(Decimal)
            )
            owed: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
            for w in t.rewards:
                if w.referrer_id != rid:
                    continue
                if start <= t.conversion_by_id[w.conversion_id].occurred_at < end:
                    totals[(w.recipient, w.unit)][w.status] += w.amount
                if w.recipient == "referrer":
                    owed[w.unit][w.status] += w.amount

            def shown(amount: Decimal, unit: str) -> str:
                return str(int(amount)) if unit == "points" else cash(amount, unit)

            assert body["rewards"] == [
                {"recipient": recipient, "unit": unit}
                | {s: shown(by[s], unit) for s in ("pending", "approved", "paid", "reversed")}
                for (recipient, unit), by in sorted(totals.items())
            ]
            assert [
                (line["unit"], line["pending"], line["approved"], line["paid"])
                for line in body["balance"]["balances"]
            ] == [
                (unit, *(shown(by[s], unit) for s in ("pending", "approved", "paid")))
                for unit, by in sorted(owed.items())
            ]
            checked += 1

        # cohorts, in a zone
        start, end = windows[0]
        for tz in ("UTC", "America/New_York"):
            zone = ZoneInfo(tz)
            body = (
                await answer(
                    f"{base}/cohorts", tz=tz, **{"from": start.isoformat(), "to": end.isoformat()}
                )
            ).json()
            expected_cohorts = cohorts_recount(t, pid, start, end, zone)
            assert {
                (c["kind"], c["month"]): {"customers": c["customers"], "periods": c["periods"]}
                for c in body["cohorts"]
            } == expected_cohorts
            assert len(body["cohorts"]) == len(expected_cohorts)
            checked += 1

        # CSV holds the same numbers as JSON, for every table
        start, end = windows[0]
        window = {"from": start.isoformat(), "to": end.isoformat()}
        for endpoint, rows_of in (
            ("summary", lambda b: [b]),
            ("timeseries", lambda b: b["buckets"]),
            ("referrers", lambda b: b["data"]),
            ("channels", lambda b: b["data"]),
            (
                "cohorts",
                lambda b: [
                    {"kind": c["kind"], "month": c["month"], "customers": c["customers"]} | p
                    for c in b["cohorts"]
                    for p in c["periods"]
                ],
            ),
        ):
            params: dict[str, Any] = window | (
                {"tz": "America/New_York"} if endpoint != "summary" else {}
            )
            params |= {"limit": 500} if endpoint in ("referrers", "channels") else {}
            body = (await answer(f"{base}/{endpoint}", **params)).json()
            exported = csv_rows(await answer(f"{base}/{endpoint}", format="csv", **params))
            expected_rows = [cells(row) for row in rows_of(body)]
            assert len(exported) == len(expected_rows)
            for got, want in zip(exported, expected_rows, strict=True):
                assert got == {key: want[key] for key in got}
            checked += 1

    # the exports hold every row
    exported = csv_rows(await answer("/v1/conversions", format="csv"))
    assert sorted(row["id"] for row in exported) == sorted(str(v.id) for v in t.conversions)
    exported = csv_rows(await answer("/v1/rewards", format="csv"))
    assert sorted((row["id"], row["amount"]) for row in exported) == sorted(
        (str(w.id), str(int(w.amount)) if w.unit == "points" else cash(w.amount, w.unit))
        for w in t.rewards
    )
    elapsed = time.monotonic() - started
    print(
        f"recount: {len(t.clicks)} clicks, {len(t.referrals)} referrals, "
        f"{len(t.conversions)} conversions, {len(t.rewards)} rewards; {checked} answers "
        f"checked; seeding {seeded - started:.1f}s, total {elapsed:.1f}s"
    )

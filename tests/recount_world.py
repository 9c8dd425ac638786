"""A random world of programs, referrers, clicks, redemptions and purchases, through the API."""

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update

from app.core.db import utcnow
from app.rewards.models import Reward
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

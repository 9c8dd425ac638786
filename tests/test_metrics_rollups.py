"""Rollups equal a recount of the raw events: under concurrent writes, at every moment a reader
can see, across compaction, and after a rebuild from the raw tables (Postgres: triggers)."""

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.background import compact_metrics_rollups
from app.metrics import breakdowns, queries, rollups
from app.metrics.models import ROLLUP_TABLES
from app.metrics.periods import Window, buckets, time_zone
from app.tracking.models import Click, Referral
from tests.factories import (
    BROWSER_UA,
    auth,
    make_key,
    make_program,
    make_referrer,
    record_click,
    redeem,
)

pytestmark = pytest.mark.postgres

UTMS = [
    {},
    {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "spring"},
    {"utm_source": "twitter", "utm_medium": "social"},
    {"utm_source": "", "utm_medium": "", "utm_campaign": ""},
]
ORDERS = ("conversions", "revenue", "referrals", "clicks")


def ok(response: Any, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


def windows(now: datetime) -> list[Window]:
    """Aligned to days, and not aligned to anything (raw edges on both sides); one from early in
    a month (the referrer rollups read that month less its first days)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = (today - timedelta(days=40)).replace(day=1)
    return [
        Window(today - timedelta(days=100), today + timedelta(days=1)),
        Window(now - timedelta(days=9, minutes=7, seconds=3), now + timedelta(minutes=11)),
        Window(now - timedelta(hours=3, minutes=22), now + timedelta(hours=1)),
        Window(month + timedelta(days=2, hours=5, minutes=3), now + timedelta(minutes=11)),
    ]


async def answers(session: AsyncSession, program_id: UUID, now: datetime, rollups_: bool) -> Any:
    """Every grouping over every window, through the rollups or straight from the raw tables."""
    found: list[Any] = []
    for window in windows(now):
        scope = queries.Scope(program_id, "USD", window)
        found.append(await queries.total(session, scope, rollups=rollups_))
        for tz in ("UTC", "Asia/Kathmandu"):
            periods = buckets(window, "day", time_zone(tz))
            found.append(await queries.by_bucket(session, scope, periods, rollups=rollups_))
        found.append(await breakdowns.by_channel(session, scope, 500, rollups=rollups_))
        for order_by in ORDERS:
            for limit in (2, 500):
                found.append(
                    await breakdowns.by_referrer(session, scope, order_by, limit, rollups=rollups_)
                )
    return found


async def same_snapshot_check(app: Any, program_id: UUID, now: datetime) -> None:
    """In one snapshot, the rollups give what the raw events give."""
    async with app.state.sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        from_rollups = await answers(session, program_id, now, True)
        from_raw = await answers(session, program_id, now, False)
        await session.rollback()
    assert from_rollups == from_raw


async def rollup_sums(session: AsyncSession) -> dict[str, set[tuple[Any, ...]]]:
    found = {}
    for table in ROLLUP_TABLES:
        keys = ", ".join(rollups.KEYS[table.name])
        measures = ", ".join(
            f"sum({c})"
            for c in (
                "clicks",
                "unique_clicks",
                "referrals",
                "converted_referrals",
                "conversions",
                "revenue",
                "reward_amount",
            )
        )
        rows = await session.execute(
            text(f"SELECT {keys}, {measures} FROM {table.name} GROUP BY {keys}")
        )
        found[table.name] = {
            tuple(row) for row in rows if any(value != 0 for value in row[len(keys.split(",")) :])
        }
    return found


async def test_rollups_equal_raw_under_concurrent_writes_and_compaction(
    client: AsyncClient, app: Any
) -> None:
    rng = random.Random(7)
    admin = await make_key(app)
    publishable = await make_key(app, "publishable")
    program = await make_program(client, admin)
    program_id = UUID(program["id"])
    for rule in (
        {"recipient": "referrer", "kind": "fixed", "amount": "5.00", "trigger": "every_purchase"},
        {"recipient": "referee", "kind": "percent", "percent": "10", "hold_days": 7},
        {"recipient": "referrer", "kind": "points", "points": 20, "trigger": "every_purchase"},
    ):
        ok(
            await client.post(
                f"/v1/programs/{program_id}/reward-rules", json=rule, headers=auth(admin)
            )
        )
    referrers = [await make_referrer(client, admin, program["id"], f"r{n}") for n in range(6)]
    codes = [r["default_code"]["code"] for r in referrers]
    now = datetime.now(UTC)
    stop = asyncio.Event()
    checks = 0

    async def clicks(batch: int) -> list[str]:
        made = []
        for n in range(batch):
            response = await record_click(
                client,
                publishable,
                rng.choice(codes),
                user_agent=BROWSER_UA if rng.random() < 0.9 else "curl/8.0",
                visitor_id=f"v{rng.randrange(40)}",
                **rng.choice(UTMS),
            )
            made.append(ok(response, 201)["click_id"])
            if n % 10 == 0:
                await asyncio.sleep(0)
        return made

    async def buyers(offset: int, click_ids: list[str]) -> None:
        for n in range(25):
            customer = f"c{offset}-{n}"
            code = rng.choice(codes)
            if rng.random() < 0.6:
                body: dict[str, Any] = {"code": code, "customer_id": customer}
                if click_ids and rng.random() < 0.5:
                    body["click_id"] = rng.choice(click_ids)
                response = await redeem(client, publishable, **body)
                if response.status_code != 201:
                    continue
                if rng.random() < 0.3:  # a late redemption: its counts move to another day
                    async with app.state.sessionmaker() as session:
                        await session.execute(
                            update(Referral)
                            .where(Referral.id == UUID(response.json()["referral_id"]))
                            .values(occurred_at=now - timedelta(days=rng.uniform(0, 70)))
                        )
                        await session.commit()
            # Two purchases of the same customer at once: the referral converts once.
            purchases = [
                client.post(
                    "/v1/conversions",
                    headers=auth(admin),
                    json={
                        "program_id": program["id"],
                        "event_id": f"e{offset}-{n}-{k}",
                        "customer_id": customer,
                        "currency": "USD",
                        "amount": f"{rng.randint(1000, 30000) / 100:.2f}",
                        "occurred_at": (now - timedelta(days=rng.uniform(0, 70))).isoformat(),
                    }
                    | ({"code": code} if rng.random() < 0.3 else {}),
                )
                for k in range(2)
            ]
            for response in await asyncio.gather(*purchases):
                conversion = ok(response, 201, 200, 409)
                if response.status_code == 409 or rng.random() > 0.4:
                    continue
                refund = {"amount": "1.00"} if rng.random() < 0.5 else {}
                ok(
                    await client.post(
                        f"/v1/conversions/{conversion['id']}/refunds",
                        json=refund,
                        headers=auth(admin),
                    ),
                    201,
                    409,
                    422,
                )
                for reward in conversion["rewards"]:
                    action = rng.choice(["reverse", "mark-paid", None])
                    if action == "reverse":
                        body = {"reason": "test"}
                    elif action == "mark-paid":
                        body = {}
                    else:
                        continue
                    await client.post(
                        f"/v1/rewards/{reward['id']}/{action}", json=body, headers=auth(admin)
                    )

    async def rechannel(click_ids: list[str]) -> None:
        # A click's utm tags change: what came through it moves to the new channel.
        async with app.state.sessionmaker() as session:
            for click_id in rng.sample(click_ids, 10):
                await session.execute(
                    update(Click)
                    .where(Click.id == UUID(click_id))
                    .values(utm_source="changed", occurred_at=now - timedelta(hours=30))
                )
            await session.commit()

    async def compactor() -> None:
        while not stop.is_set():
            await compact_metrics_rollups(app.state.sessionmaker)
            await asyncio.sleep(0.05)

    async def checker() -> None:
        nonlocal checks
        while not stop.is_set():
            await same_snapshot_check(app, program_id, now)
            checks += 1

    background = [asyncio.create_task(compactor()), asyncio.create_task(checker())]
    try:
        first = await clicks(60)
        await asyncio.gather(
            clicks(60), clicks(60), buyers(1, first), buyers(2, first), buyers(3, [])
        )
        await rechannel(first)
    finally:
        stop.set()
        await asyncio.gather(*background)
    assert checks >= 1
    await same_snapshot_check(app, program_id, now)

    # Compacted to the end: one row per key at most, the same sums as before.
    async with app.state.sessionmaker() as session:
        before = await rollup_sums(session)
    while await compact_metrics_rollups(app.state.sessionmaker):
        pass
    async with app.state.sessionmaker() as session:
        assert await rollup_sums(session) == before
        for table in ROLLUP_TABLES:
            keys = ", ".join(rollups.KEYS[table.name])
            repeated = await session.scalar(
                text(
                    f"SELECT count(*) FROM (SELECT {keys} FROM {table.name} "
                    f"GROUP BY {keys} HAVING count(*) > 1) k"
                )
            )
            assert repeated == 0, table.name
            assert (
                await session.scalar(text(f"SELECT count(*) FROM {table.name} WHERE NOT compacted"))
                == 0
            )
        # A rebuild from the raw tables gives the rows the triggers wrote.
        await rollups.rebuild(session, program_id)
        assert await rollup_sums(session) == before
        await session.rollback()
    await same_snapshot_check(app, program_id, now)


async def test_concurrent_purchases_of_one_referral_count_it_converted_once(
    client: AsyncClient, app: Any
) -> None:
    """The trigger locks the referral: two transactions attributing it at once count it once."""
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"], "r1")
    made = ok(await redeem(client, admin, referrer["default_code"]["code"], "buyer"), 201)
    conversions = []
    for n in range(2):
        body = {
            "program_id": program["id"],
            "event_id": f"o{n}",
            "customer_id": f"organic{n}",
            "currency": "USD",
            "amount": "10.00",
        }
        conversions.append(
            ok(await client.post("/v1/conversions", json=body, headers=auth(admin)), 201)["id"]
        )
    attribute = text(
        "UPDATE conversions SET status = 'attributed', referral_id = :referral, "
        "referrer_id = :referrer WHERE id = :id"
    )
    values = {"referral": UUID(made["referral_id"]), "referrer": UUID(referrer["id"])}
    async with app.state.sessionmaker() as first, app.state.sessionmaker() as second:
        await first.execute(attribute, values | {"id": UUID(conversions[0])})
        waiting = asyncio.create_task(
            second.execute(attribute, values | {"id": UUID(conversions[1])})
        )
        await asyncio.sleep(0.3)
        blocked = not waiting.done()
        await first.commit()
        await waiting
        await second.commit()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    scope = queries.Scope(
        UUID(program["id"]), "USD", Window(today - timedelta(days=1), today + timedelta(days=2))
    )
    async with app.state.sessionmaker() as session:
        counted = await queries.total(session, scope)
        raw = await queries.total(session, scope, rollups=False)
    assert counted == raw
    assert (counted.referrals, counted.converted_referrals, counted.conversions) == (1, 1, 2)
    assert counted.revenue == Decimal("20.00")
    assert blocked  # the second waited on the referral's lock, then saw the first committed

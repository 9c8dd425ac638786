"""The leaderboard by clicks from the heads of the monthly rollups, and ranges not aligned to UTC
days, equal a recount of the raw events (Postgres: the rollups and their partial index)."""

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import delete, select, update

from app.background import compact_metrics_rollups
from app.metrics import breakdowns, rollups
from app.tracking.models import Click, Referral
from tests.factories import auth, make_key, make_program, make_referrer, record_click, redeem
from tests.recount_oracle import Tables, Tally, funnel_json, funnel_of, load, recount, whole

pytestmark = pytest.mark.postgres

REFERRERS = 14
DAYS = 100


def ok(response: Any, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


def board(
    t: Tables, program_id: UUID, start: datetime, end: datetime, limit: int, order: str = "clicks"
) -> list[Any]:
    """The leaderboard by `order`, counted by hand: the largest first, ties by external_id."""
    tallies = recount(t, program_id, start, end, lambda _, who, __: who)
    active = [(cast(UUID, who), tally) for who, tally in tallies.items() if tally.active()]
    active.sort(key=lambda item: (-getattr(item[1], order), t.referrers[item[0]].external_id))
    return [(who, funnel_json(tally, "USD")) for who, tally in active[:limit]]


def windows(now: datetime) -> list[tuple[datetime, datetime]]:
    """Across months, at 13:37 (no UTC day, hour or quarter hour), in one month, whole days."""
    at_1337 = now.replace(hour=13, minute=37, second=0, microsecond=0)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        (at_1337 - timedelta(days=60), at_1337 + timedelta(days=1)),
        (now - timedelta(days=DAYS + 1), now + timedelta(hours=1)),
        (today - timedelta(days=12, hours=-13, minutes=-37), today - timedelta(days=5)),
        (today - timedelta(days=45), today + timedelta(days=1)),
    ]


async def test_leaderboard_by_clicks_from_the_heads_equals_a_recount(
    client: AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(14)
    admin = await make_key(app)
    publishable = await make_key(app, "publishable")
    program = await make_program(client, admin)
    pid = UUID(program["id"])
    referrers = [
        await make_referrer(client, admin, program["id"], f"r{n:02}") for n in range(REFERRERS)
    ]
    now = datetime.now(UTC)
    # Zipf-like: referrer n has about 36 / (n + 1) clicks, spread over the last DAYS days.
    made: dict[str, list[str]] = {}
    for n, referrer in enumerate(referrers):
        code = referrer["default_code"]["code"]
        made[referrer["id"]] = [
            ok(await record_click(client, publishable, code, visitor_id=f"v{n}-{k}"), 201)[
                "click_id"
            ]
            for k in range(max(1, 36 // (n + 1)))
        ]
    # One referrer active with a referral only: zero clicks, still on a long enough board.
    quiet = await make_referrer(client, admin, program["id"], "quiet")
    ok(await redeem(client, publishable, code=quiet["default_code"]["code"], customer_id="c1"))
    async with app.state.sessionmaker() as session:
        for click_id in (c for clicks in made.values() for c in clicks):
            moment = now - timedelta(days=rng.uniform(0, DAYS), seconds=rng.randrange(86400))
            await session.execute(
                update(Click).where(Click.id == UUID(click_id)).values(occurred_at=moment)
            )
        await session.commit()
    while await compact_metrics_rollups(app.state.sessionmaker):
        pass

    # Heads of depth max(1, 2 x limit) per month: small enough to leave referrers out.
    monkeypatch.setattr(breakdowns, "HEAD_DEPTH", 1)
    decided: list[bool] = []
    leaderboard = breakdowns._leaderboard

    async def spy(*args: Any, **kwargs: Any) -> Any:
        rows, most = await leaderboard(*args, **kwargs)
        decided.append(most is not None)
        return rows, most

    monkeypatch.setattr(breakdowns, "_leaderboard", spy)

    async def check(start: datetime, end: datetime, limit: int) -> bool:
        """The board equals the recount; True when the heads decided it."""
        decided.clear()
        body = ok(
            await client.get(
                f"/v1/programs/{pid}/metrics/referrers",
                params={
                    "order_by": "clicks",
                    "limit": limit,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                },
                headers=auth(admin),
            )
        )
        expected = board(await load(app), pid, start, end, limit)
        got = [(UUID(r["referrer_id"]), funnel_of(r)) for r in body["data"]]
        assert got == expected, (start, end, limit)
        return decided[-1]

    async def every_board() -> list[bool]:
        return [
            await check(start, end, limit)
            for start, end in windows(now)
            for limit in (1, 2, 3, 6, REFERRERS + 1)
        ]

    from_heads = await every_board()
    assert sum(from_heads) >= 8, from_heads
    # A board longer than the referrers with clicks ends in ties at zero: every referrer summed.
    assert not any(from_heads[4::5])

    async def after(change: Callable[[], Awaitable[None]]) -> list[bool]:
        await change()
        return await every_board()

    async def late_clicks() -> None:
        # The last referrer's burst of clicks sits in uncompacted rows: a candidate anyway.
        code = referrers[-1]["default_code"]["code"]
        for k in range(40):
            ok(await record_click(client, publishable, code, visitor_id=f"late-{k}"), 201)

    async def lost_clicks() -> None:
        # The top referrer loses most clicks (negative deltas) without a compaction.
        top = UUID(referrers[0]["id"])
        async with app.state.sessionmaker() as session:
            gone = (await session.scalars(select(Click.id).where(Click.referrer_id == top))).all()
            await session.execute(delete(Click).where(Click.id.in_(gone[:30])))
            await session.commit()

    assert sum(await after(late_clicks)) >= 8
    assert sum(await after(lost_clicks)) >= 8
    while await compact_metrics_rollups(app.state.sessionmaker):
        pass
    assert sum(await every_board()) >= 8


@pytest.mark.parametrize("order", ["clicks", "referrals", "conversions", "revenue"])
async def test_a_referrer_in_no_months_head_still_tops_the_board(
    client: AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """Steady events every month beat bursts in one month each: the heads cannot decide."""
    admin = await make_key(app)
    publishable = await make_key(app, "publishable")
    program = await make_program(client, admin)
    pid = UUID(program["id"])
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    months = [this_month]
    for _ in range(4):
        months.insert(0, (months[0] - timedelta(days=1)).replace(day=1))
    placed: list[tuple[Any, str, datetime]] = []

    async def events(name: str, per_month: dict[int, int]) -> None:
        code = (await make_referrer(client, admin, program["id"], name))["default_code"]["code"]
        for month, count in per_month.items():
            for k in range(count):
                moment = months[month] + timedelta(hours=5, minutes=k)
                customer = f"{name}-{month}-{k}"
                if order == "clicks":
                    body = ok(await record_click(client, publishable, code, visitor_id=name), 201)
                    placed.append((Click, body["click_id"], moment))
                elif order == "referrals":
                    body = ok(await redeem(client, publishable, code=code, customer_id=customer))
                    placed.append((Referral, body["referral_id"], moment))
                else:
                    purchase = {
                        "program_id": program["id"],
                        "event_id": customer,
                        "customer_id": customer,
                        "currency": "USD",
                        "amount": "10.00",
                        "occurred_at": moment.isoformat(),
                        "code": code,
                    }
                    ok(await client.post("/v1/conversions", json=purchase, headers=auth(admin)))

    await events("steady", {m: 5 for m in range(4)})
    for m in range(4):
        for burst in "ab":
            await events(f"burst-{m}{burst}", {m: 8})
    async with app.state.sessionmaker() as session:
        for model, row_id, moment in placed:
            await session.execute(
                update(model).where(model.id == UUID(row_id)).values(occurred_at=moment)
            )
        await session.commit()
    while await compact_metrics_rollups(app.state.sessionmaker):
        pass
    monkeypatch.setattr(breakdowns, "HEAD_DEPTH", 1)
    monkeypatch.setattr(breakdowns, "HEAD_DEEPER", 1)
    t = await load(app)
    for start, end in (
        (months[0], months[4]),
        (months[0] + timedelta(hours=5, minutes=3), months[3] + timedelta(hours=5, minutes=2)),
    ):
        for limit in (1, 2, 3, 9):
            params = {"from": start.isoformat(), "to": end.isoformat()}
            body = ok(
                await client.get(
                    f"/v1/programs/{pid}/metrics/referrers",
                    params=params | {"order_by": order, "limit": limit},
                    headers=auth(admin),
                )
            )
            got = [(UUID(r["referrer_id"]), funnel_of(r)) for r in body["data"]]
            assert got == board(t, pid, start, end, limit, order), (start, limit)
            assert body["data"][0]["external_id"] == "steady"


async def test_every_endpoint_over_a_range_not_aligned_to_days_equals_a_recount(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    publishable = await make_key(app, "publishable")
    program = await make_program(client, admin)
    pid = UUID(program["id"])
    referrer = await make_referrer(client, admin, program["id"], "edge")
    code = referrer["default_code"]["code"]
    now = datetime.now(UTC)
    start = now.replace(hour=13, minute=37, second=0, microsecond=0) - timedelta(days=40)
    end = start + timedelta(days=35)
    # Clicks just inside and just outside both edges, and in whole days between.
    moments = [
        start - timedelta(seconds=1),
        start,
        start + timedelta(minutes=7),
        start + timedelta(hours=10, minutes=23),
        start + timedelta(days=3),
        end - timedelta(days=1, minutes=1),
        end - timedelta(minutes=1),
        end - timedelta(microseconds=1),
        end,
        end + timedelta(minutes=3),
    ]
    ids = [
        ok(await record_click(client, publishable, code, visitor_id=f"e{k}"), 201)["click_id"]
        for k in range(len(moments))
    ]
    async with app.state.sessionmaker() as session:
        for click_id, moment in zip(ids, moments, strict=True):
            await session.execute(
                update(Click).where(Click.id == UUID(click_id)).values(occurred_at=moment)
            )
        await session.commit()
    for compacted in (False, True):
        if compacted:
            while await compact_metrics_rollups(app.state.sessionmaker):
                pass
        t = await load(app)
        expected = recount(t, pid, start, end, whole).get(None, Tally())
        assert expected.clicks == 7
        params = {"from": start.isoformat(), "to": end.isoformat()}
        base = f"/v1/programs/{pid}/metrics"
        got = ok(await client.get(f"{base}/summary", params=params, headers=auth(admin)))
        assert funnel_of(got) == funnel_json(expected, "USD")
        series = ok(await client.get(f"{base}/timeseries", params=params, headers=auth(admin)))
        assert sum(b["clicks"] for b in series["buckets"]) == 7
        assert series["buckets"][0]["partial"] and series["buckets"][-1]["partial"]
        for order_by in ("clicks", "conversions", "revenue", "referrals"):
            top = ok(
                await client.get(
                    f"{base}/referrers", params=params | {"order_by": order_by}, headers=auth(admin)
                )
            )
            assert [funnel_of(r) for r in top["data"]] == [funnel_json(expected, "USD")]
        channels = ok(await client.get(f"{base}/channels", params=params, headers=auth(admin)))
        assert [funnel_of(r) for r in channels["data"]] == [funnel_json(expected, "USD")]
        mine = ok(
            await client.get(
                f"/v1/referrers/{referrer['id']}/metrics", params=params, headers=auth(admin)
            )
        )
        assert mine["funnel"] == funnel_json(expected, "USD")


def test_trimmed_spans_weigh_every_instant_of_the_range_once_and_nothing_else() -> None:
    """A month cut by an edge, less its days outside the range: each instant counts once."""
    rng = random.Random(12)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    trimmed = 0
    for _ in range(3000):
        start = base + timedelta(minutes=rng.randrange(0, 400 * 1440))
        if rng.random() < 0.3:
            start = start.replace(hour=0, minute=0)
        end = start + timedelta(minutes=rng.randrange(1, 200 * 1440))
        if rng.random() < 0.3:
            end = end.replace(hour=0, minute=0)
        if end <= start:
            continue
        added, subtracted = rollups.trimmed_spans(0, start, end, ("month", "day"))
        trimmed += bool(subtracted)
        assert all(piece.grain == "day" for piece in subtracted)
        for _ in range(40):
            moment = start - timedelta(days=40, minutes=-rng.randrange(0, 1440 * 300))
            weight = sum(p.start <= moment < p.end for p in added) - sum(
                p.start <= moment < p.end for p in subtracted
            )
            assert weight == (start <= moment < end), (start, end, moment)
    assert trimmed > 500

"""Every metrics endpoint equals a plain recount over the raw tables.

A seeded generator sends a few thousand random events through the HTTP API (clicks from many
addresses, with bots and duplicates; redemptions; purchases with late occurred_at, by code,
by click, by customer history and organic; refunds, partial and full; rewards paid, reversed
and clawed back), then the test loads the rows and counts them by hand, in Python, for every
endpoint, range, interval and time zone it asks about.
"""

import random
import time
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo

from httpx import AsyncClient

from tests.factories import auth
from tests.recount_oracle import (
    Tally,
    approve_everything_due,
    cash,
    cells,
    channel,
    cohorts_recount,
    csv_rows,
    funnel_json,
    funnel_of,
    load,
    period,
    periods_between,
    recount,
    whole,
)
from tests.recount_world import CLICKS, HORIZON_DAYS, SEED, build_world


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
                bought = t.conversion_by_id.get(w.conversion_id) if w.conversion_id else None
                if bought is not None and start <= bought.occurred_at < end:
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

"""Metrics timeseries: buckets in the asked zone, across daylight saving, adding up to the
summary, boundaries inclusive at the start."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from httpx import AsyncClient

from app.tracking.models import Click, Referral
from tests.factories import (
    BROWSER_UA,
    make_key,
    make_program,
    make_referrer,
    redeem,
)
from tests.metrics_helpers import EXPECTED_SUMMARY, click, convert, get, move, shop


async def test_timeseries_buckets_in_the_asked_zone(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    alice = await make_referrer(client, admin, program["id"], "alice")
    made = await click(client, admin, alice["default_code"]["code"])
    await move(app, Click, made["click_id"], datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    path = f"/v1/programs/{program['id']}/metrics/timeseries"
    window = {"from": "2026-02-27T00:00:00-05:00", "to": "2026-03-02T00:00:00-05:00"}

    new_york = (await get(client, admin, path, tz="America/New_York", **window)).json()
    assert [(b["label"], b["clicks"]) for b in new_york["buckets"]] == [
        ("2026-02-27", 0),
        ("2026-02-28", 1),
        ("2026-03-01", 0),
    ]
    assert new_york["buckets"][1]["start"] == "2026-02-28T00:00:00-05:00"
    assert new_york["buckets"][1]["end"] == "2026-03-01T00:00:00-05:00"

    utc = (await get(client, admin, path, tz="UTC", **window)).json()
    # 05:00Z to 05:00Z: the first and last UTC days are clipped to the range
    assert [(b["label"], b["clicks"]) for b in utc["buckets"]] == [
        ("2026-02-27", 0),
        ("2026-02-28", 0),
        ("2026-03-01", 1),
        ("2026-03-02", 0),
    ]
    assert utc["buckets"][0]["start"] == "2026-02-27T05:00:00Z"
    assert utc["buckets"][-1]["end"] == "2026-03-02T05:00:00Z"

    weeks = await get(client, admin, path, tz="America/New_York", interval="week", **window)
    # the week of Monday Feb 23; the next one starts exactly at `to`
    assert [(b["label"], b["clicks"]) for b in weeks.json()["buckets"]] == [("2026-02-23", 1)]
    months = (
        await get(client, admin, path, tz="America/New_York", interval="month", **window)
    ).json()
    assert [(b["label"], b["clicks"]) for b in months["buckets"]] == [
        ("2026-02", 1),
        ("2026-03", 0),
    ]


async def test_timeseries_days_follow_daylight_saving(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    body = (
        await get(
            client,
            admin,
            f"/v1/programs/{program['id']}/metrics/timeseries",
            tz="America/New_York",
            **{"from": "2026-03-07T05:00:00Z", "to": "2026-03-10T04:00:00Z"},
        )
    ).json()
    assert [(b["label"], b["start"], b["end"]) for b in body["buckets"]] == [
        ("2026-03-07", "2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00"),
        # 23 hours: clocks go forward at 2am
        ("2026-03-08", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        ("2026-03-09", "2026-03-09T00:00:00-04:00", "2026-03-10T00:00:00-04:00"),
    ]
    assert all(b["clicks"] == 0 and b["conversion_rate"] is None for b in body["buckets"])


async def test_timeseries_adds_up_to_the_summary(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    series = (
        await get(
            client,
            data["admin"],
            f"/v1/programs/{data['pid']}/metrics/timeseries",
            tz="Asia/Kolkata",
        )
    ).json()
    assert len(series["buckets"]) in (30, 31)
    totals = {key: sum(b[key] for b in series["buckets"]) for key in ("clicks", "conversions")}
    assert totals == {"clicks": 5, "conversions": 3}
    additive = (
        "clicks",
        "unique_clicks",
        "referrals",
        "converted_referrals",
        "conversions",
        "reward_points",
    )
    assert {key: sum(b[key] for b in series["buckets"]) for key in additive} == {
        key: EXPECTED_SUMMARY[key] for key in additive
    }
    for money in ("revenue", "reward_cost"):
        assert sum(Decimal(b[money]) for b in series["buckets"]) == Decimal(
            str(EXPECTED_SUMMARY[money])
        )


async def test_bucket_boundaries_are_inclusive_at_the_start(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    alice = await make_referrer(client, admin, program["id"], "alice")
    code = alice["default_code"]["code"]
    midnight = datetime(2026, 2, 1, 5, 0, tzinfo=UTC)  # 00:00 in New York
    for offset in (timedelta(0), -timedelta(microseconds=1)):
        made = await click(client, admin, code, user_agent=BROWSER_UA)
        await move(app, Click, made["click_id"], midnight + offset)
    redeemed = await redeem(client, admin, code, "c1")
    await move(app, Referral, redeemed.json()["referral_id"], midnight)
    order = await convert(
        client,
        admin,
        program["id"],
        event_id="o",
        customer_id="c1",
        amount="9.99",
        code=code,
        occurred_at=(midnight - timedelta(microseconds=1)).isoformat(),
    )
    assert order["referral_id"] == redeemed.json()["referral_id"]
    body = (
        await get(
            client,
            admin,
            f"/v1/programs/{program['id']}/metrics/timeseries",
            tz="America/New_York",
            **{"from": "2026-01-31T00:00:00-05:00", "to": "2026-02-02T00:00:00-05:00"},
        )
    ).json()
    assert [
        (b["label"], b["clicks"], b["referrals"], b["conversions"]) for b in body["buckets"]
    ] == [("2026-01-31", 1, 0, 1), ("2026-02-01", 1, 1, 0)]
    # the referral's purchase happened the day before: it still converts the referral
    assert body["buckets"][1]["converted_referrals"] == 1

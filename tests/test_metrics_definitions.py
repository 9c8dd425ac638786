"""Metrics definitions on small hand-counted data: the summary, late events, the referrers
leaderboard, channels, one referrer's metrics, cohorts."""

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient

from tests.factories import (
    auth,
)
from tests.metrics_helpers import EXPECTED_SUMMARY, NOW, convert, funnel_of, get, shop


async def test_summary_counts_every_measure(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    body = (await get(client, data["admin"], f"/v1/programs/{data['pid']}/metrics/summary")).json()
    assert funnel_of(body) == EXPECTED_SUMMARY
    assert body["currency"] == "USD" and body["program_id"] == data["pid"]
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=30)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=1)

    empty = (
        await get(client, data["admin"], f"/v1/programs/{data['other']['id']}/metrics/summary")
    ).json()
    assert funnel_of(empty) == {
        key: (0 if isinstance(value, int) else "0.00") for key, value in EXPECTED_SUMMARY.items()
    } | {
        "conversion_rate": None,
        "referral_rate": None,
        "referral_purchase_rate": None,
        "average_order_value": None,
        "revenue_per_reward_spent": None,
    }


async def test_late_events_count_on_their_own_day(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    admin, pid = data["admin"], data["pid"]
    ten_days_ago = NOW - timedelta(days=10)
    late = await convert(
        client,
        admin,
        pid,
        event_id="late",
        customer_id="c9",
        amount="25.00",
        code=data["a_code"],
        occurred_at=ten_days_ago.isoformat(),
    )
    assert late["status"] == "attributed"
    path = f"/v1/programs/{pid}/metrics/summary"
    that_day = {
        "from": (ten_days_ago - timedelta(hours=1)).isoformat(),
        "to": (ten_days_ago + timedelta(hours=1)).isoformat(),
    }
    body = (await get(client, admin, path, **that_day)).json()
    assert (body["conversions"], body["referrals"], body["revenue"]) == (1, 1, "25.00")
    assert body["reward_cost"] == "12.50"  # 10.00 fixed + 10% to the referee
    await client.post(f"/v1/conversions/{late['id']}/refunds", json={}, headers=auth(admin))
    body = (await get(client, admin, path, **that_day)).json()
    # A full refund empties the revenue and reverses the rewards, on the purchase's day.
    assert (body["conversions"], body["revenue"], body["reward_cost"]) == (1, "0.00", "0.00")


async def test_referrers_leaderboard(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    path = f"/v1/programs/{data['pid']}/metrics/referrers"
    board = (await get(client, data["admin"], path)).json()
    assert [(r["external_id"], r["name"]) for r in board["data"]] == [
        ("alice", "Alice"),
        ("bob", "Bob"),
    ]
    alice, bob = board["data"]
    assert funnel_of(alice) == {
        "clicks": 4,
        "unique_clicks": 1,
        "referrals": 1,
        "converted_referrals": 1,
        "conversions": 2,
        "revenue": "90.00",
        "reward_cost": "19.00",
        "reward_points": 50,
        "conversion_rate": "2.0000",
        "referral_rate": "1.0000",
        "referral_purchase_rate": "1.0000",
        "average_order_value": "45.00",
        "revenue_per_reward_spent": "4.7368",
    }
    assert (bob["clicks"], bob["conversions"], bob["revenue"], bob["reward_cost"]) == (
        1,
        1,
        "50.00",
        "10.00",
    )
    by_revenue = (await get(client, data["admin"], path, order_by="revenue", limit=1)).json()
    assert [r["external_id"] for r in by_revenue["data"]] == ["alice"]
    assert by_revenue["limit"] == 1 and by_revenue["order_by"] == "revenue"
    by_referrals = (await get(client, data["admin"], path, order_by="referrals")).json()
    # one referral each: the tie goes to the smaller external_id
    assert [r["external_id"] for r in by_referrals["data"]] == ["alice", "bob"]


async def test_channels_with_direct_for_none(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    body = (await get(client, data["admin"], f"/v1/programs/{data['pid']}/metrics/channels")).json()
    rows = {(r["utm_source"], r["utm_medium"], r["utm_campaign"]): r for r in body["data"]}
    assert list(rows) == [("newsletter", "email", "spring"), ("direct", "direct", "direct")]
    newsletter = rows[("newsletter", "email", "spring")]
    direct = rows[("direct", "direct", "direct")]
    # c1's referral and both of its purchases came through the newsletter click
    assert (newsletter["clicks"], newsletter["unique_clicks"], newsletter["referrals"]) == (3, 1, 1)
    assert (newsletter["conversions"], newsletter["revenue"]) == (2, "90.00")
    # the bot and bob's click had no utm; c2's purchase (bob's code) had no click
    assert (direct["clicks"], direct["unique_clicks"], direct["referrals"]) == (2, 1, 1)
    assert (direct["conversions"], direct["revenue"], direct["reward_cost"]) == (
        1,
        "50.00",
        "10.00",
    )


async def test_referrer_metrics(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    body = (await get(client, data["admin"], f"/v1/referrers/{data['alice']['id']}/metrics")).json()
    assert body["external_id"] == "alice" and body["currency"] == "USD"
    assert (body["funnel"]["conversions"], body["funnel"]["revenue"]) == (2, "90.00")
    assert body["rewards"] == [
        {
            "recipient": "referee",
            "unit": "USD",
            "pending": "0.00",
            "approved": "9.00",
            "paid": "0.00",
            "reversed": "0.00",
        },
        {
            "recipient": "referrer",
            "unit": "USD",
            "pending": "0.00",
            "approved": "10.00",
            "paid": "0.00",
            "reversed": "0.00",
        },
        {
            "recipient": "referrer",
            "unit": "points",
            "pending": "0",
            "approved": "50",
            "paid": "0",
            "reversed": "0",
        },
    ]
    assert {line["unit"]: line["owed"] for line in body["balance"]["balances"]} == {
        "USD": "10.00",
        "points": "50",
    }
    bob = (await get(client, data["admin"], f"/v1/referrers/{data['bob']['id']}/metrics")).json()
    assert {(r["recipient"], r["unit"]): r["reversed"] for r in bob["rewards"]}[
        ("referee", "USD")
    ] == "5.00"


async def test_cohorts(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    admin, pid = data["admin"], data["pid"]
    month_ago = NOW - timedelta(days=40)
    # an unattributed customer who bought 40 days ago and again today
    old = await convert(
        client,
        admin,
        pid,
        event_id="old",
        customer_id="c7",
        amount="20.00",
        occurred_at=month_ago.isoformat(),
    )
    await convert(client, admin, pid, event_id="again", customer_id="c7", amount="5.00")
    assert old["status"] == "unattributed"
    body = (
        await get(
            client,
            admin,
            f"/v1/programs/{pid}/metrics/cohorts",
            **{"from": (NOW - timedelta(days=60)).isoformat()},
        )
    ).json()
    months = sorted({c["month"] for c in body["cohorts"]})
    assert months[-1] == NOW.strftime("%Y-%m")
    cohorts = {(c["kind"], c["month"]): c for c in body["cohorts"]}
    this_month = cohorts[("referred", NOW.strftime("%Y-%m"))]
    # c1 (redeemed) and c2 (first purchase with a code): 3 purchases, 140.00 net
    assert this_month["customers"] == 2
    assert this_month["periods"][0] == {
        "month_offset": 0,
        "purchases": 3,
        "revenue": "140.00",
        "cumulative_revenue": "140.00",
        "cumulative_revenue_per_customer": "70.00",
    }
    organic = cohorts[("unattributed", month_ago.strftime("%Y-%m"))]
    assert organic["customers"] == 1
    months_later = {p["month_offset"]: p for p in organic["periods"]}
    later = (NOW.year - month_ago.year) * 12 + NOW.month - month_ago.month
    assert months_later[0]["revenue"] == "20.00"
    assert months_later[later]["cumulative_revenue"] == "25.00"
    # c3 bought only this month, so c3 is this month's unattributed cohort
    assert cohorts[("unattributed", NOW.strftime("%Y-%m"))]["customers"] == 1

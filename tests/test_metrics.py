"""Metrics endpoints: definitions on small hand-counted data, CSV = JSON, ranges, scoping, zones."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import AsyncClient
from sqlalchemy import update

from app.core.csv import csv_cell
from app.http import exports
from app.metrics.schemas import Funnel
from app.tracking.models import Click, Referral
from tests.factories import (
    BROWSER_UA,
    assert_problem,
    auth,
    make_key,
    make_program,
    make_referrer,
    record_click,
    redeem,
)

NOW = datetime.now(UTC)


async def add_rule(client: AsyncClient, key: str, program_id: str, **rule: Any) -> dict:
    response = await client.post(
        f"/v1/programs/{program_id}/reward-rules", json=rule, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def convert(client: AsyncClient, key: str, program_id: str, **body: Any) -> dict:
    body = {"program_id": program_id, "currency": "USD"} | body
    response = await client.post("/v1/conversions", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()


async def click(client: AsyncClient, key: str, code: str, **extra: Any) -> dict:
    response = await record_click(client, key, code, **extra)
    assert response.status_code == 201, response.text
    return response.json()


async def move(app: Any, model: Any, row_id: str, when: datetime) -> None:
    """Put an event at another time (the API stamps clicks and redemptions with now)."""
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(model).where(model.id == UUID(row_id)).values(occurred_at=when)
        )
        await session.commit()


async def get(client: AsyncClient, key: str, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response


def parse_csv(response: Any) -> list[dict[str, str]]:
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def as_cells(row: dict[str, Any]) -> dict[str, str]:
    """A JSON row as CSV cells: null is empty, everything else its JSON text."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):  # a bucket's `partial`
            return "true" if value else "false"
        return "" if value is None else str(value)

    return {key: cell(value) for key, value in row.items()}


FUNNEL_KEYS = list(Funnel.model_fields)


def funnel_of(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in FUNNEL_KEYS}


async def shop(client: AsyncClient, app: Any) -> dict[str, Any]:
    """A program with two referrers, hand-countable events, and a second program."""
    admin = await make_key(app)
    pub = await make_key(app, "publishable")
    program = await make_program(client, admin)
    pid = program["id"]
    alice = await make_referrer(client, admin, pid, "alice", name="Alice")
    bob = await make_referrer(client, admin, pid, "bob", name="Bob")
    a_code, b_code = alice["default_code"]["code"], bob["default_code"]["code"]
    await add_rule(client, admin, pid, recipient="referrer", kind="fixed", amount="10.00")
    await add_rule(
        client,
        admin,
        pid,
        recipient="referee",
        kind="percent",
        percent="10",
        trigger="every_purchase",
    )
    await add_rule(client, admin, pid, recipient="referrer", kind="points", points=50)

    # alice: 4 clicks (newsletter three times, a bot); bob: 1 direct click. All come from the test
    # client's one IP address, so after the first each click on a code is a duplicate.
    first = await click(
        client,
        pub,
        a_code,
        visitor_id="v1",
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="spring",
    )
    await click(
        client,
        pub,
        a_code,
        visitor_id="v1",
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="spring",
    )
    await click(
        client,
        pub,
        a_code,
        visitor_id="v2",
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="spring",
    )
    await click(client, pub, a_code, user_agent="Googlebot/2.1 (+http://www.google.com/bot.html)")
    await click(client, pub, b_code, visitor_id="v3")
    assert first["is_bot"] is False

    # c1 redeems alice's code through the newsletter click and buys twice; c2 buys with
    # bob's code (the purchase makes the referral); c3 buys with no code.
    redeemed = await redeem(client, pub, a_code, "c1", click_id=first["click_id"])
    assert redeemed.status_code == 201, redeemed.text
    o1 = await convert(client, admin, pid, event_id="o1", customer_id="c1", amount="100.00")
    o2 = await convert(client, admin, pid, event_id="o2", customer_id="c1", amount="30.00")
    o3 = await convert(
        client, admin, pid, event_id="o3", customer_id="c2", amount="50.00", code=b_code
    )
    o4 = await convert(client, admin, pid, event_id="o4", customer_id="c3", amount="70.00")
    assert [o["status"] for o in (o1, o2, o3, o4)] == [
        "attributed",
        "attributed",
        "attributed",
        "unattributed",
    ]
    refund = await client.post(
        f"/v1/conversions/{o1['id']}/refunds", json={"amount": "40.00"}, headers=auth(admin)
    )
    assert refund.status_code == 201, refund.text
    # The referee's reward on o3 is reversed: it no longer costs anything.
    referee_o3 = next(
        r for r in o3["rewards"] if r["recipient"] == "referee" and r["kind"] == "percent"
    )
    reversed_ = await client.post(
        f"/v1/rewards/{referee_o3['id']}/reverse", json={"reason": "fraud"}, headers=auth(admin)
    )
    assert reversed_.status_code == 200, reversed_.text

    other = await make_program(client, admin, name="Other")
    return {
        "admin": admin,
        "pub": pub,
        "pid": pid,
        "alice": alice,
        "bob": bob,
        "a_code": a_code,
        "b_code": b_code,
        "other": other,
        "orders": [o1, o2, o3, o4],
    }


# By hand: rewards of o1 (alice): 10.00 fixed + 50 points + referee 10% of 100 → 6.00 after
# the 40.00 refund; o2 (alice, not a first purchase): referee 3.00; o3 (bob): 10.00 fixed +
# 50 points, referee 5.00 reversed. Reward cost 10 + 6 + 3 + 10 = 29.00, points 100.
EXPECTED_SUMMARY = {
    "clicks": 5,
    "unique_clicks": 2,
    "referrals": 2,
    "converted_referrals": 2,
    "conversions": 3,
    "revenue": "140.00",
    "reward_cost": "29.00",
    "reward_points": 100,
    "conversion_rate": "1.5000",
    "referral_rate": "1.0000",
    "referral_purchase_rate": "1.0000",
    "average_order_value": "46.67",
    "revenue_per_reward_spent": "4.8276",
}


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


@pytest.mark.parametrize("endpoint", ["summary", "timeseries", "referrers", "channels", "cohorts"])
async def test_csv_equals_json(client: AsyncClient, app: Any, endpoint: str) -> None:
    data = await shop(client, app)
    path = f"/v1/programs/{data['pid']}/metrics/{endpoint}"
    end = datetime.now(UTC) + timedelta(minutes=1)
    params = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
    if endpoint in ("timeseries", "cohorts"):
        params["tz"] = "Europe/Paris"
    body = (await get(client, data["admin"], path, **params)).json()
    rows = parse_csv(await get(client, data["admin"], path, format="csv", **params))
    if endpoint == "summary":
        expected = [as_cells(body)]
    elif endpoint == "timeseries":
        expected = [as_cells(bucket) for bucket in body["buckets"]]
    elif endpoint == "cohorts":
        expected = [
            as_cells({"kind": c["kind"], "month": c["month"], "customers": c["customers"]} | p)
            for c in body["cohorts"]
            for p in c["periods"]
        ]
    else:
        expected = [as_cells(row) for row in body["data"]]
    assert rows
    assert [
        {key: row[key] for key in found} for row, found in zip(expected, rows, strict=True)
    ] == rows


async def test_conversions_and_rewards_csv_stream_every_page(
    client: AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = await shop(client, app)
    monkeypatch.setattr(exports, "EXPORT_PAGE_SIZE", 2)
    admin = data["admin"]
    listed = (await get(client, admin, "/v1/conversions", limit=200)).json()["data"]
    rows = parse_csv(await get(client, admin, "/v1/conversions", format="csv"))
    assert [row["id"] for row in rows] == [c["id"] for c in listed]
    assert [(r["amount"], r["refunded_amount"], r["code"], r["status"]) for r in rows] == [
        (c["amount"], c["refunded_amount"], c["code"] or "", c["status"]) for c in listed
    ]
    only_c1 = parse_csv(await get(client, admin, "/v1/conversions", format="csv", customer_id="c1"))
    assert [row["event_id"] for row in only_c1] == ["o1", "o2"]

    rewards = (await get(client, admin, "/v1/rewards", limit=200)).json()["data"]
    reward_rows = parse_csv(await get(client, admin, "/v1/rewards", format="csv"))
    assert reward_rows == [
        as_cells({key: value for key, value in reward.items()}) for reward in rewards
    ]
    reversed_rows = parse_csv(
        await get(client, admin, "/v1/rewards", format="csv", status="reversed")
    )
    assert [row["status"] for row in reversed_rows] == ["reversed"]
    bad = await client.get(
        "/v1/conversions", params={"format": "csv", "cursor": "nope"}, headers=auth(admin)
    )
    assert_problem(bad, 422, "invalid_cursor")


def test_csv_defuses_formulas() -> None:
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("-5.00") == "-5.00"
    assert csv_cell("+1 555") == "'+1 555"
    assert csv_cell(None) == ""


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2026-03-01T00:00:00"}, "invalid_range"),
        ({"from": "yesterday"}, "validation_error"),
        ({"tz": "Mars/Olympus_Mons"}, "invalid_timezone"),
        ({"tz": "../../etc/passwd"}, "invalid_timezone"),
        ({"interval": "hour"}, "validation_error"),
        ({"format": "xml"}, "validation_error"),
    ],
)
async def test_bad_ranges_are_422(
    client: AsyncClient, app: Any, params: dict[str, str], code: str
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    response = await client.get(
        f"/v1/programs/{program['id']}/metrics/timeseries", params=params, headers=auth(admin)
    )
    assert_problem(response, 422, code)


async def test_limits_and_spans_per_endpoint(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    base = f"/v1/programs/{program['id']}/metrics"
    for endpoint in ("referrers", "channels"):
        too_many = await client.get(
            f"{base}/{endpoint}", params={"limit": 501}, headers=auth(admin)
        )
        assert_problem(too_many, 422, "invalid_limit")
        ok = await client.get(f"{base}/{endpoint}", params={"limit": 500}, headers=auth(admin))
        assert ok.status_code == 200
    long = {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert_problem(
        await client.get(f"{base}/summary", params=long, headers=auth(admin)), 422, "invalid_range"
    )
    # cohorts look further back: up to 1100 days
    cohorts = await client.get(f"{base}/cohorts", params=long, headers=auth(admin))
    assert cohorts.status_code == 200
    assert len(cohorts.json()["cohorts"]) == 2 * 24
    order = await client.get(f"{base}/referrers", params={"order_by": "name"}, headers=auth(admin))
    assert_problem(order, 422, "validation_error")


async def test_program_scoping_and_keys(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    other_id = data["other"]["id"]
    limited = await make_key(app, "secret", [UUID(other_id)])
    publishable = data["pub"]
    for endpoint in ("summary", "timeseries", "referrers", "channels", "cohorts"):
        path = f"/v1/programs/{data['pid']}/metrics/{endpoint}"
        hidden = await client.get(path, headers=auth(limited))
        missing = await client.get(
            f"/v1/programs/{uuid4()}/metrics/{endpoint}", headers=auth(limited)
        )
        assert_problem(hidden, 404, "program_not_found")
        assert hidden.json() == missing.json()
        assert_problem(await client.get(path, headers=auth(publishable)), 403, "forbidden")
        assert_problem(await client.get(path), 401, "unauthorized")
        assert_problem(
            await client.get(path, params={"format": "csv"}, headers=auth(limited)),
            404,
            "program_not_found",
        )
        own = await client.get(f"/v1/programs/{other_id}/metrics/{endpoint}", headers=auth(limited))
        assert own.status_code == 200, own.text
    hidden = await client.get(f"/v1/referrers/{data['alice']['id']}/metrics", headers=auth(limited))
    missing = await client.get(f"/v1/referrers/{uuid4()}/metrics", headers=auth(limited))
    assert_problem(hidden, 404, "referrer_not_found")
    assert hidden.json() == missing.json()
    # a limited key's exports hold only its programs' rows
    assert parse_csv(await get(client, limited, "/v1/conversions", format="csv")) == []


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

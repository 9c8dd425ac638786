"""Words and numbers that mean what they say: attribution reasons, amounts, partial buckets."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.conversions.attribution import UNATTRIBUTED_REASONS
from app.conversions.models import Conversion
from app.tracking.models import Referral
from tests.factories import (
    assert_problem,
    auth,
    db_all,
    make_key,
    make_program,
    make_referrer,
    record_click,
    redeem,
)
from tests.money_factories import post_refund, purchase, set_occurred_at

GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
ROOT = Path(__file__).resolve().parent.parent
WON_REASONS = ("explicit_code", "explicit_click", "last_touch", "first_touch")
LOSS_REASONS = (
    "outside_window",
    "after_conversion",
    "bot",
    "not_attributable",
    "self_referral",
    "unknown_code",
    "unknown_click",
    "code_disabled",
    "code_expired",
    "model",
    "lower_priority",
)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def explain(client: AsyncClient, key: str, conversion_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/conversions/{conversion_id}/attribution", headers=auth(key))
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def shop(client: AsyncClient, app: Any) -> dict[str, Any]:
    """An admin key, a USD program with a 30-day window, and its referrer alice."""
    admin = await make_key(app)
    program = await make_program(client, admin)
    alice = await make_referrer(client, admin, program["id"], "alice", email="alice@example.com")
    return {"admin": admin, "program": program, "code": alice["default_code"]["code"]}


# --- every unattributed purchase says why -------------------------------------------------------


async def test_a_repeat_purchase_outside_the_window_is_outside_window_not_organic(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    admin, program = shop["admin"], shop["program"]
    first = await purchase(
        client,
        admin,
        program,
        "o1",
        "dave",
        "40.00",
        code=shop["code"],
        occurred_at=days_ago(45).isoformat(),
    )
    assert first["status"] == "attributed"
    repeat = await purchase(client, admin, program, "o2", "dave", "60.00")
    assert (repeat["status"], repeat["attribution_reason"]) == ("unattributed", "outside_window")
    attribution = await explain(client, admin, repeat["id"])
    assert (attribution["reason"], attribution["winner"]) == ("outside_window", None)
    assert [(c["kind"], c["outcome"], c["reason"]) for c in attribution["candidates"]] == [
        ("code", "lost", "outside_window")
    ]
    [stored] = await db_all(app, select(Conversion).where(Conversion.event_id == "o2"))
    assert stored.attribution_reason == "outside_window"
    # the conversions CSV says the same
    exported = await client.get("/v1/conversions", params={"format": "csv"}, headers=auth(admin))
    rows = {row["event_id"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    assert rows["o2"]["attribution_reason"] == "outside_window"

    # The metrics count it as what it is: a purchase no referral earned.
    summary = await client.get(
        f"/v1/programs/{program['id']}/metrics/summary",
        params={"from": days_ago(60).isoformat(), "to": days_ago(-1).isoformat()},
        headers=auth(admin),
    )
    body = summary.json()
    assert (body["referrals"], body["converted_referrals"]) == (1, 1)
    assert (body["conversions"], body["revenue"]) == (1, "40.00")


async def test_each_unattributed_reason(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    admin, program = shop["admin"], shop["program"]
    reasons: dict[str, str] = {}

    organic = await purchase(client, admin, program, "organic", "zed", "10.00")
    reasons[organic["attribution_reason"]] = "organic"
    assert (await explain(client, admin, organic["id"]))["candidates"] == []

    own = await purchase(client, admin, program, "own", "alice", "10.00", code=shop["code"])
    reasons[own["attribution_reason"]] = "self_referral"

    redeemed = await redeem(client, admin, shop["code"], "carol")
    await set_occurred_at(app, Referral, redeemed.json()["referral_id"], days_ago(31))
    late = await purchase(client, admin, program, "late", "carol", "10.00")
    reasons[late["attribution_reason"]] = "outside_window"

    bot = await record_click(client, admin, shop["code"], user_agent=GOOGLEBOT_UA)
    botted = await purchase(
        client, admin, program, "bot", "erin", "10.00", click_id=bot.json()["click_id"]
    )
    reasons[botted["attribution_reason"]] = "no_eligible_touch"
    typo = await purchase(client, admin, program, "typo", "fay", "10.00", code="NOSUCHCODE")
    assert typo["attribution_reason"] == "no_eligible_touch"

    assert reasons == {reason: reason for reason in UNATTRIBUTED_REASONS}
    for conversion in (organic, own, late, botted, typo):
        assert conversion["status"] == "unattributed"
        assert conversion["rewards"] == []


def test_every_reason_is_documented_and_labelled() -> None:
    readme = (ROOT / "README.md").read_text()
    attribution = readme.split("## Attribution", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", attribution))
    missing = set(WON_REASONS + UNATTRIBUTED_REASONS + LOSS_REASONS) - documented
    assert not missing, f"README's Attribution does not name {sorted(missing)}"
    # the dashboard labels every reason a conversion can have
    script = (ROOT / "app" / "dashboard" / "static" / "panels.js").read_text()
    labels = script.split("const REASONS = {", 1)[1].split("};", 1)[0]
    labelled = set(re.findall(r"^\s*([a-z_]+):", labels, re.MULTILINE))
    assert labelled == set(WON_REASONS + UNATTRIBUTED_REASONS)


# --- amounts at the currency's minor unit -------------------------------------------------------


async def test_refund_errors_show_the_currencys_minor_unit(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    admin = shop["admin"]
    bought = await purchase(client, admin, shop["program"], "o1", "bob", "100.00")
    assert (await post_refund(client, admin, bought["id"], amount="40.00")).status_code == 201
    too_much = await post_refund(client, admin, bought["id"], amount="70.00")
    problem = assert_problem(too_much, 422, "refund_exceeds_amount")
    assert problem["detail"] == "At most 60.00 USD is left to refund."
    precise = await post_refund(client, admin, bought["id"], amount="1.005")
    problem = assert_problem(precise, 422, "invalid_amount")
    assert problem["detail"] == "1.005 has more decimals than USD allows (2)."


async def test_amounts_in_yen_have_no_decimals(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin, currency="JPY")
    bought = await purchase(client, admin, program, "o1", "bob", "8000")
    assert (await post_refund(client, admin, bought["id"], amount="2000")).status_code == 201
    problem = assert_problem(
        await post_refund(client, admin, bought["id"], amount="7000"), 422, "refund_exceeds_amount"
    )
    assert problem["detail"] == "At most 6000 JPY is left to refund."
    odd = await client.post(
        "/v1/conversions",
        json={
            "program_id": program["id"],
            "event_id": "o2",
            "customer_id": "bob",
            "amount": "10.5",
            "currency": "JPY",
        },
        headers=auth(admin),
    )
    assert assert_problem(odd, 422, "invalid_amount")["detail"] == (
        "10.5 has more decimals than JPY allows (0)."
    )
    rule = await client.post(
        f"/v1/programs/{program['id']}/reward-rules",
        json={"recipient": "referrer", "kind": "fixed", "amount": "0.5"},
        headers=auth(admin),
    )
    assert assert_problem(rule, 422, "invalid_rule")["detail"] == (
        "0.5 has more decimals than JPY allows (0)"
    )


# --- partial buckets ----------------------------------------------------------------------------


async def series(
    client: AsyncClient, shop: dict[str, Any], **params: str
) -> list[tuple[str, bool]]:
    response = await client.get(
        f"/v1/programs/{shop['program']['id']}/metrics/timeseries",
        params=params,
        headers=auth(shop["admin"]),
    )
    assert response.status_code == 200, response.text
    return [(bucket["label"], bucket["partial"]) for bucket in response.json()["buckets"]]


async def test_weeks_cut_by_the_range_are_partial(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    # Wednesday 4 March to Wednesday 25 March 2026, Paris midnights
    weeks = await series(
        client,
        shop,
        interval="week",
        tz="Europe/Paris",
        **{"from": "2026-03-04T00:00:00+01:00", "to": "2026-03-25T00:00:00+01:00"},
    )
    assert weeks == [
        ("2026-03-02", True),  # Wednesday to Sunday of the week of Monday 2 March
        ("2026-03-09", False),
        ("2026-03-16", False),
        ("2026-03-23", True),  # Monday and Tuesday
    ]
    aligned = await series(
        client,
        shop,
        interval="week",
        tz="Europe/Paris",
        **{"from": "2026-03-02T00:00:00+01:00", "to": "2026-03-30T00:00:00+02:00"},
    )
    assert [partial for _, partial in aligned] == [False] * 4


async def test_months_and_days_cut_by_the_range_are_partial(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    months = await series(
        client,
        shop,
        interval="month",
        tz="UTC",
        **{"from": "2026-01-15T00:00:00Z", "to": "2026-04-01T00:00:00Z"},
    )
    assert months == [("2026-01", True), ("2026-02", False), ("2026-03", False)]
    days = await series(
        client,
        shop,
        interval="day",
        tz="America/New_York",
        # 8 March 2026 is 23 hours long in New York: a whole day, not a partial one
        **{"from": "2026-03-07T12:00:00-05:00", "to": "2026-03-10T00:00:00-04:00"},
    )
    assert days == [("2026-03-07", True), ("2026-03-08", False), ("2026-03-09", False)]


async def test_the_timeseries_csv_says_which_buckets_are_partial(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    response = await client.get(
        f"/v1/programs/{shop['program']['id']}/metrics/timeseries",
        params={
            "interval": "week",
            "tz": "UTC",
            "from": "2026-03-04T00:00:00Z",
            "to": "2026-03-16T00:00:00Z",
            "format": "csv",
        },
        headers=auth(shop["admin"]),
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["label"], row["partial"]) for row in rows] == [
        ("2026-03-02", "true"),
        ("2026-03-09", "false"),
    ]

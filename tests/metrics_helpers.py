"""Shared by the metrics tests: small hand-counted data (`shop` and its EXPECTED_SUMMARY), event
writers that move rows in time, and readers of JSON and CSV answers."""

import csv
import io
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import update

from app.metrics.schemas import Funnel
from tests.factories import (
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

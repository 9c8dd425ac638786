"""Spending points on catalogue items, through HTTP on Postgres against the local Stripe:
a negative points entry, the item's reward fulfilled exactly once by the dispatcher, never
below zero (concurrent spends), 409 insufficient_points, Idempotency-Keys replayed."""

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from app.fulfilment.models import Fulfilment
from app.points.models import PointsRedemption
from app.rewards.models import Reward
from tests.factories import assert_problem, auth
from tests.fakes.stripe import FakeStripe
from tests.fulfilment_helpers import (  # noqa: F401
    ALICE_STRIPE,
    dispatcher_fixture,
    drain,
    reward,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import balance
from tests.points_helpers import add_item, earn, points_program, spend
from tests.session_factories import me_ok, session_token

pytestmark = pytest.mark.postgres


async def count(app: Any, model: Any, *where: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_points_buy_a_stripe_coupon_issued_once_for_the_referrer(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await points_program(client, app)
    await earn(client, admin, prog, alice, "order_1")
    item = await add_item(client, admin, prog["id"])

    response = await spend(client, admin, alice["id"], item["id"])
    assert response.status_code == 201, response.text
    spent = response.json()
    assert (spent["points"], spent["points_left"], spent["item"]["id"]) == (500, 0, item["id"])
    debit, given = spent["debit"], spent["reward"]
    assert (debit["entry_type"], debit["unit"], debit["amount"]) == ("spend", "points", "-500")
    assert (debit["status"], debit["conversion_id"], debit["rule_id"]) == ("approved", None, None)
    assert (given["entry_type"], given["unit"], given["amount"]) == ("reward", "USD", "5.00")
    assert (given["status"], given["fulfilment_method"]) == ("approved", "coupon")
    assert given["fulfilment"]["status"] == "pending" and given["fulfilment"]["code"] is None
    # The points are spent at once; the job was written in the same transaction.
    assert (await balance(client, admin, alice["id"]))["points"]["payable"] == "0"
    assert await count(app, Fulfilment, Fulfilment.reward_id == given["id"]) == 1

    assert await drain(dispatcher) == 1
    assert await drain(dispatcher) == 0  # exactly once
    (coupon_call,) = stripe_api.calls("POST /v1/coupons")
    assert coupon_call.headers["idempotency-key"] == f"{given['id']}:coupon"
    assert (coupon_call.parsed["amount_off"], coupon_call.parsed["currency"]) == ("500", "usd")
    assert coupon_call.parsed["max_redemptions"] == "1"
    (promo_call,) = stripe_api.calls("POST /v1/promotion_codes")
    assert (promo_call.parsed["customer"], promo_call.parsed["max_redemptions"]) == (
        ALICE_STRIPE,
        "1",
    )
    paid = await reward(client, admin, given["id"])
    assert paid["status"] == "paid"
    assert paid["fulfilment"]["code"] == promo_call.parsed["code"]

    # Nothing left to spend: refused, and nothing changed.
    again = await spend(client, admin, alice["id"], item["id"])
    body = assert_problem(again, 409, "insufficient_points")
    assert "costs 500 points" in body["detail"] and "has 0" in body["detail"]
    assert await count(app, PointsRedemption) >= 1
    assert await count(app, Reward, Reward.referrer_id == alice["id"]) == 3


async def test_a_failed_or_lost_provider_answer_never_issues_the_item_twice(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    """Stripe answers 500, then the next attempt's answer is lost (it completes after the 1 s
    timeout): the retries send the same idempotency keys, and one coupon exists."""
    admin, prog, alice = await points_program(client, app)
    await earn(client, admin, prog, alice, "order_1")
    item = await add_item(client, admin, prog["id"])
    stripe_api.fail("POST /v1/coupons", 500)
    stripe_api.stall("POST /v1/promotion_codes", 1.5)
    spent = await spend(client, admin, alice["id"], item["id"])
    assert spent.status_code == 201, spent.text
    given = spent.json()["reward"]
    assert await dispatcher.run_once() == 1  # the 500: retried later
    assert await dispatcher.run_once(utcnow() + timedelta(minutes=5)) == 1  # the lost answer
    for _ in range(200):  # the stalled create finishes on the fake only now
        if stripe_api.promotion_codes:
            break
        await asyncio.sleep(0.05)
    assert await drain(dispatcher, utcnow() + timedelta(minutes=30)) == 1
    assert len(stripe_api.coupons) == 1 and len(stripe_api.promotion_codes) == 1
    keys = {call.headers["idempotency-key"] for call in stripe_api.calls("POST /v1/coupons")}
    assert keys == {f"{given['id']}:coupon"}
    paid = await reward(client, admin, given["id"])
    assert paid["status"] == "paid"
    (made,) = stripe_api.promotion_codes.values()
    assert paid["fulfilment"]["code"] == made["code"]


async def test_the_referrer_spends_their_own_points_with_an_idempotency_key(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await points_program(client, app, points=300)
    for event in ("order_1", "order_2", "order_3"):
        await earn(client, admin, prog, alice, event)
    item = await add_item(
        client,
        admin,
        prog["id"],
        name="Sticker pack",
        points=400,
        amount="3.00",
        fulfilment="ledger",
    )
    token = await session_token(client, admin, alice["id"])
    mine = await me_ok(client, token, "/points")
    assert mine["points"] == 900 and [i["id"] for i in mine["items"]] == [item["id"]]
    assert mine["items"][0]["name"] == "Sticker pack"

    headers = {**auth(token), "Idempotency-Key": "spend-1"}
    first = await client.post(
        "/v1/me/points/redemptions", json={"item_id": item["id"]}, headers=headers
    )
    assert first.status_code == 201, first.text
    replay = await client.post(
        "/v1/me/points/redemptions", json={"item_id": item["id"]}, headers=headers
    )
    assert replay.status_code == 201 and replay.json() == first.json()
    other = await add_item(
        client, admin, prog["id"], name="Cap", points=100, amount="2.00", fulfilment="ledger"
    )
    reused = await client.post(
        "/v1/me/points/redemptions", json={"item_id": other["id"]}, headers=headers
    )
    assert_problem(reused, 422, "idempotency_key_reused")
    assert first.json()["points_left"] == 500
    assert first.json()["reward"]["fulfilment"] is None  # ledger: delivered by hand
    assert (await me_ok(client, token, "/points"))["points"] == 500
    assert await count(app, PointsRedemption, PointsRedemption.referrer_id == alice["id"]) == 1
    # The referrer's history shows both entries, without a rule.
    history = await me_ok(client, token, "/rewards")
    spends = [r for r in history["data"] if r["entry_type"] == "spend"]
    assert len(spends) == 1 and spends[0]["rule"] is None and spends[0]["amount"] == "-400"

    # An API key may not use the referrer's endpoint, nor a session the key's.
    refused = await client.post(
        "/v1/me/points/redemptions", json={"item_id": item["id"]}, headers=auth(admin)
    )
    assert_problem(refused, 403, "referrer_session_required")
    refused = await spend(client, token, alice["id"], item["id"])
    assert_problem(refused, 403, "referrer_session_not_allowed")


async def test_concurrent_spends_never_go_below_zero(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await points_program(client, app, points=1000)
    await earn(client, admin, prog, alice, "order_1")
    item = await add_item(
        client, admin, prog["id"], name="Mug", points=400, amount="8.00", fulfilment="ledger"
    )
    token = await session_token(client, admin, alice["id"])
    calls = [spend(client, admin, alice["id"], item["id"]) for _ in range(4)]
    calls += [
        client.post("/v1/me/points/redemptions", json={"item_id": item["id"]}, headers=auth(token))
        for _ in range(4)
    ]
    responses = await asyncio.gather(*calls)
    assert Counter(r.status_code for r in responses) == {201: 2, 409: 2 + 4}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"insufficient_points"}
    assert sorted(r.json()["points_left"] for r in responses if r.status_code == 201) == [200, 600]
    assert (await balance(client, admin, alice["id"]))["points"]["payable"] == "200"
    assert await count(app, PointsRedemption, PointsRedemption.referrer_id == alice["id"]) == 2


async def test_pending_points_cannot_be_spent_and_a_reversed_spend_gives_them_back(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await points_program(client, app)
    rule = await client.get(f"/v1/programs/{prog['id']}/reward-rules", headers=auth(admin))
    (points_rule,) = rule.json()
    held = await client.patch(
        f"/v1/reward-rules/{points_rule['id']}", json={"hold_days": 30}, headers=auth(admin)
    )
    assert held.status_code == 200, held.text
    await earn(client, admin, prog, alice, "order_1")
    item = await add_item(
        client, admin, prog["id"], name="Tote", points=500, amount="5.00", fulfilment="ledger"
    )
    assert_problem(await spend(client, admin, alice["id"], item["id"]), 409, "insufficient_points")
    pending = (await balance(client, admin, alice["id"]))["points"]
    assert (pending["pending"], pending["payable"]) == ("500", "0")

    # Approved by hand, spent, then the spend is reversed (say the item was never sent).
    (earned,) = [
        r
        for r in (
            await client.get(
                "/v1/rewards", params={"referrer_id": alice["id"]}, headers=auth(admin)
            )
        ).json()["data"]
    ]
    approved = await client.post(f"/v1/rewards/{earned['id']}/approve", headers=auth(admin))
    assert approved.status_code == 200, approved.text
    spent = await spend(client, admin, alice["id"], item["id"])
    assert spent.status_code == 201, spent.text
    debit = spent.json()["debit"]
    paid = await client.post(f"/v1/rewards/{debit['id']}/mark-paid", headers=auth(admin))
    assert_problem(paid, 409, "invalid_transition")
    back = await client.post(
        f"/v1/rewards/{debit['id']}/reverse", json={"reason": "never sent"}, headers=auth(admin)
    )
    assert back.status_code == 200, back.text
    assert (await balance(client, admin, alice["id"]))["points"]["payable"] == "500"


async def test_another_programs_item_or_referrer_reads_as_missing(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await points_program(client, app)
    await earn(client, admin, prog, alice, "order_1")
    other_admin, other, _ = await points_program(client, app)
    foreign = await add_item(client, other_admin, other["id"])
    assert_problem(
        await spend(client, admin, alice["id"], foreign["id"]), 404, "points_item_not_found"
    )
    withdrawn = await add_item(client, admin, prog["id"])
    await client.patch(
        f"/v1/points-items/{withdrawn['id']}", json={"active": False}, headers=auth(admin)
    )
    assert_problem(
        await spend(client, admin, alice["id"], withdrawn["id"]), 409, "points_item_inactive"
    )
    assert await count(app, PointsRedemption, PointsRedemption.referrer_id == alice["id"]) == 0

"""True reward cost: an order that used a coupon the service minted marks it redeemed (Shopify
discount_codes, Stripe checkout discounts), and the summary reports what the coupons issued in
the range were worth, what they really cost, and the breakage — exact, on Postgres."""

from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from tests.factories import auth
from tests.fakes.stripe import FakeStripe
from tests.fulfilment_helpers import (  # noqa: F401
    BOB_SHOPIFY,
    BOB_STRIPE,
    buy,
    connect_shopify,
    connect_stripe,
    dispatcher_fixture,
    drain,
    fulfilment_of,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import add_rule, setup_program
from tests.points_helpers import add_item, spend
from tests.stripe_helpers import checkout_session, connect, event, post_stripe
from tests.test_integrations_shopify import SECRET as SHOPIFY_SECRET
from tests.test_integrations_shopify import order, post_shopify

pytestmark = pytest.mark.postgres


def coupon_rule(provider: str, amount: str) -> dict[str, Any]:
    return {
        "recipient": "referee",
        "kind": "fixed",
        "amount": amount,
        "fulfilment": "coupon",
        "fulfilment_provider": provider,
        "trigger": "every_purchase",
    }


async def summary(client: AsyncClient, key: str, program_id: str) -> dict[str, Any]:
    now = utcnow()
    params = {
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(days=1)).isoformat(),
    }
    response = await client.get(
        f"/v1/programs/{program_id}/metrics/summary", params=params, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def cost(body: dict[str, Any]) -> tuple[str, str, str, str | None]:
    return (
        body["reward_cost_issued"],
        body["reward_cost_redeemed"],
        body["reward_breakage"],
        body["reward_redemption_rate"],
    )


async def test_a_shopify_order_using_a_minted_code_marks_it_redeemed(
    client: AsyncClient, app: Any, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await connect_shopify(client, admin, prog["id"])
    await add_rule(client, admin, prog["id"], **coupon_rule("shopify", "10.00"))
    secrets = await client.post(
        f"/v1/programs/{prog['id']}/integrations/shopify/secrets",
        json={"secrets": [SHOPIFY_SECRET]},
        headers=auth(admin),
    )
    assert secrets.status_code == 201, secrets.text
    first = await buy(client, admin, prog, alice, str(BOB_SHOPIFY), event="order_1")
    second = await buy(client, admin, prog, alice, str(BOB_SHOPIFY), event="order_2")
    assert await drain(dispatcher) == 2
    used = await fulfilment_of(client, admin, first["rewards"][0]["id"])
    unused = await fulfilment_of(client, admin, second["rewards"][0]["id"])
    assert (used["redeemed_at"], used["redeemed_amount"]) == (None, None)
    assert cost(await summary(client, admin, prog["id"])) == ("20.00", "0.00", "20.00", "0.0000")

    # Bob's next order uses the first coupon, for an order smaller than it: $7.50 taken off.
    code = used["code"].lower()  # Shopify codes are case-insensitive
    payload = order(
        id=4401,
        admin_graphql_api_id="gid://shopify/Order/4401",
        discount_codes=[
            {"code": code, "amount": "7.50", "type": "fixed_amount"},
            {"code": "SUMMER", "amount": "1.00", "type": "fixed_amount"},
        ],
    )
    answer = await post_shopify(client, prog["id"], "orders/paid", payload, webhook_id="w-1")
    assert answer.status_code == 200, answer.text
    marked = await fulfilment_of(client, admin, first["rewards"][0]["id"])
    assert marked["redeemed_amount"] == "7.50" and marked["redeemed_at"] is not None
    assert marked["redeemed_order"] == "gid://shopify/Order/4401"
    assert (await fulfilment_of(client, admin, unused["reward_id"]))["redeemed_at"] is None
    # Another topic of the same order changes nothing.
    again = await post_shopify(client, prog["id"], "orders/updated", payload, webhook_id="w-2")
    assert again.status_code == 200, again.text
    assert await fulfilment_of(client, admin, first["rewards"][0]["id"]) == marked

    body = await summary(client, admin, prog["id"])
    assert cost(body) == ("20.00", "7.50", "12.50", "0.3750")
    assert body["reward_cost"] == "20.00"  # the ledger's figure is unchanged


async def test_a_stripe_checkout_using_a_minted_promotion_code_marks_it_redeemed(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await connect_stripe(client, admin, prog["id"])
    await connect(client, admin, prog["id"])
    await add_rule(client, admin, prog["id"], **coupon_rule("stripe", "5.00"))
    bought = await buy(client, admin, prog, alice, BOB_STRIPE, event="order_1")
    assert await drain(dispatcher) == 1
    issued = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    coupon_id = issued["reference"]
    # Stripe sends the promotion code's id (not expanded) and the total discount in cents.
    session = checkout_session(
        id="cs_test_redeemed_1",
        customer=BOB_STRIPE,
        payment_intent="pi_redeemed_1",
        discounts=[{"coupon": f"reward_{issued['reward_id']}", "promotion_code": coupon_id}],
        total_details={"amount_discount": 500, "amount_shipping": 0, "amount_tax": 0},
    )
    response = await post_stripe(
        client, prog["id"], event("checkout.session.completed", session, "evt_redeemed_1")
    )
    assert response.status_code == 200, response.text
    marked = await fulfilment_of(client, admin, issued["reward_id"])
    assert (marked["redeemed_amount"], marked["redeemed_order"]) == ("5.00", "cs_test_redeemed_1")
    assert cost(await summary(client, admin, prog["id"])) == ("5.00", "5.00", "0.00", "1.0000")


async def test_a_code_of_another_program_or_a_coupon_not_issued_is_not_marked(
    client: AsyncClient, app: Any, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await connect_shopify(client, admin, prog["id"])
    await add_rule(client, admin, prog["id"], **coupon_rule("shopify", "10.00"))
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    assert await drain(dispatcher) == 1
    code = (await fulfilment_of(client, admin, bought["rewards"][0]["id"]))["code"]

    other_admin, other, _ = await setup_program(client, app)
    secrets = await client.post(
        f"/v1/programs/{other['id']}/integrations/shopify/secrets",
        json={"secrets": [SHOPIFY_SECRET]},
        headers=auth(other_admin),
    )
    assert secrets.status_code == 201, secrets.text
    payload = order(discount_codes=[{"code": code, "amount": "10.00", "type": "fixed_amount"}])
    response = await post_shopify(client, other["id"], "orders/paid", payload)
    assert response.status_code == 200, response.text
    found = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert found["redeemed_at"] is None
    assert cost(await summary(client, admin, prog["id"])) == ("10.00", "0.00", "10.00", "0.0000")


async def test_a_points_coupon_used_in_a_shopify_order_counts_as_redeemed(
    client: AsyncClient, app: Any, shopify: Any, dispatcher: Dispatcher
) -> None:
    """500 points → a $5 Shopify coupon for alice; her order uses $5 of it."""
    admin, prog, alice = await setup_program(client, app)
    await connect_shopify(client, admin, prog["id"])
    secrets = await client.post(
        f"/v1/programs/{prog['id']}/integrations/shopify/secrets",
        json={"secrets": [SHOPIFY_SECRET]},
        headers=auth(admin),
    )
    assert secrets.status_code == 201, secrets.text
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="points",
        points=500,
        trigger="every_purchase",
    )
    await buy(client, admin, prog, alice, "friend-1")
    item = await add_item(
        client,
        admin,
        prog["id"],
        name="$5 off",
        points=500,
        amount="5.00",
        fulfilment="coupon",
        fulfilment_provider="shopify",
    )
    spent = await spend(client, admin, alice["id"], item["id"])
    assert spent.status_code == 201, spent.text
    assert await drain(dispatcher) == 1
    (create,) = shopify.calls("discountCodeBasicCreate")
    given = create.parsed["variables"]["basicCodeDiscount"]
    assert given["usageLimit"] == 1
    row = await fulfilment_of(client, admin, spent.json()["reward"]["id"])
    assert row["status"] == "fulfilled" and row["code"] == given["code"]

    payload = order(
        id=5501,
        admin_graphql_api_id="gid://shopify/Order/5501",
        discount_codes=[{"code": row["code"], "amount": "5.00", "type": "fixed_amount"}],
    )
    answer = await post_shopify(client, prog["id"], "orders/paid", payload, webhook_id="p-1")
    assert answer.status_code == 200, answer.text
    assert (await fulfilment_of(client, admin, row["reward_id"]))["redeemed_amount"] == "5.00"
    body = await summary(client, admin, prog["id"])
    assert cost(body) == ("5.00", "5.00", "0.00", "1.0000")
    assert body["reward_points"] == 500  # the points earned; the spend is in no funnel measure

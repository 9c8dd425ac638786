"""Shopify webhooks in: payloads shaped like Shopify's sample `orders/create` and `refunds/create`
webhooks, signed the way Shopify documents (base64 HMAC-SHA256 of the raw body)."""

import base64
import hashlib
import hmac
import json
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import func, select

from app.conversions.models import Conversion
from app.integrations.models import IntegrationEvent
from tests.factories import assert_problem, auth, make_key
from tests.money_factories import add_rule, get_conversion, setup_program

SECRET = "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"
ORDER_ID = 820982911946154508
CUSTOMER_ID = 115310627314723954


def shopify_hmac(body: bytes, secret: str = SECRET) -> str:
    """As Shopify computes X-Shopify-Hmac-Sha256: base64 of the HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def order(**overrides: Any) -> dict[str, Any]:
    """An order, as in Shopify's sample orders/create webhook."""
    return {
        "id": ORDER_ID,
        "admin_graphql_api_id": f"gid://shopify/Order/{ORDER_ID}",
        "app_id": None,
        "browser_ip": None,
        "buyer_accepts_marketing": True,
        "cancel_reason": None,
        "cancelled_at": None,
        "cart_token": None,
        "checkout_id": None,
        "checkout_token": None,
        "confirmed": False,
        "contact_email": "jon@example.com",
        "created_at": "2026-11-21T19:00:00-05:00",
        "currency": "USD",
        "current_subtotal_price": "398.00",
        "current_total_discounts": "10.00",
        "current_total_price": "403.00",
        "customer_locale": "en",
        "discount_codes": [],
        "email": "jon@example.com",
        "financial_status": "paid",
        "fulfillment_status": None,
        "landing_site": None,
        "name": "#9999",
        "note": None,
        "note_attributes": [],
        "number": 234,
        "order_number": 1234,
        "presentment_currency": "USD",
        "processed_at": "2026-11-21T19:00:00-05:00",
        "referring_site": None,
        "source_name": "web",
        "subtotal_price": "398.00",
        "tags": "",
        "test": True,
        "total_discounts": "10.00",
        "total_line_items_price": "408.00",
        "total_price": "403.00",
        "total_tax": "0.00",
        "updated_at": "2026-11-21T19:00:00-05:00",
        "customer": {
            "id": CUSTOMER_ID,
            "email": "john@example.com",
            "created_at": None,
            "updated_at": None,
            "first_name": "John",
            "last_name": "Smith",
            "state": "disabled",
            "note": None,
            "verified_email": True,
            "currency": "USD",
        },
        "line_items": [
            {
                "id": 866550311766439020,
                "name": "IPod Nano - 8GB",
                "price": "199.00",
                "product_id": 632910392,
                "quantity": 1,
                "sku": "IPOD2008PINK",
                "title": "IPod Nano - 8GB",
            }
        ],
        "refunds": [],
    } | overrides


def refund(amount: str = "41.94", **overrides: Any) -> dict[str, Any]:
    """A refund, as in Shopify's sample refunds/create webhook."""
    return {
        "id": 509562969,
        "admin_graphql_api_id": "gid://shopify/Refund/509562969",
        "created_at": "2026-11-22T10:00:00-05:00",
        "note": "wrong size",
        "order_id": ORDER_ID,
        "processed_at": "2026-11-22T10:00:00-05:00",
        "restock": True,
        "user_id": 548380009,
        "order_adjustments": [],
        "refund_line_items": [],
        "transactions": [
            {
                "id": 389404469,
                "admin_graphql_api_id": "gid://shopify/OrderTransaction/389404469",
                "amount": amount,
                "authorization": "authorization-key",
                "created_at": "2026-11-22T10:00:00-05:00",
                "currency": "USD",
                "gateway": "bogus",
                "kind": "refund",
                "order_id": ORDER_ID,
                "parent_id": 801038806,
                "status": "success",
                "test": False,
            }
        ],
    } | overrides


async def post_shopify(
    client: AsyncClient,
    program_id: str,
    topic: str,
    payload: dict[str, Any],
    *,
    webhook_id: str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    secret: str = SECRET,
    tamper: Any = None,
) -> Response:
    body = json.dumps(payload).encode()
    signature = shopify_hmac(body, secret)
    return await client.post(
        f"/v1/integrations/shopify/{program_id}/webhook",
        content=tamper(body) if tamper else body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": signature,
            "X-Shopify-Shop-Domain": "example-shop.myshopify.com",
            "X-Shopify-API-Version": "2024-07",
            "X-Shopify-Webhook-Id": webhook_id,
        },
    )


async def connected_program(
    client: AsyncClient, app: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    admin, prog, alice = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="percent", percent="10")
    response = await client.post(
        f"/v1/programs/{prog['id']}/integrations/shopify/secrets",
        json={"secrets": [SECRET]},
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text
    assert response.json()[0]["prefix"] == "shps"
    return admin, prog, alice


async def stored(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_order_with_a_discount_code_becomes_a_conversion(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    payload = order(discount_codes=[{"code": code, "amount": "10.00", "type": "fixed_amount"}])
    response = await post_shopify(client, prog["id"], "orders/create", payload)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "recorded" and answer["topic"] == "orders/create"
    conversion = await get_conversion(client, admin, answer["conversion_id"])
    assert conversion["event_id"] == f"gid://shopify/Order/{ORDER_ID}"
    assert (conversion["amount"], conversion["currency"]) == ("403.00", "USD")
    assert conversion["customer_id"] == str(CUSTOMER_ID)
    assert conversion["referrer_id"] == alice["id"] and conversion["code"] == code
    assert conversion["occurred_at"].startswith("2026-11-22T00:00:00")  # 19:00 at -05:00
    assert [r["amount"] for r in conversion["rewards"]] == ["40.30"]
    assert conversion["metadata"]["shopify_order_name"] == "#9999"

    # a retry carries the same X-Shopify-Webhook-Id: acknowledged, nothing changes
    again = await post_shopify(client, prog["id"], "orders/create", payload)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert await stored(app, Conversion) == 1


async def test_the_referral_link_s_ref_on_the_landing_page_attributes_the_order(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    payload = order(landing_site=f"/welcome?lang=en&ref={code}&utm_source=newsletter")
    answer = (await post_shopify(client, prog["id"], "orders/create", payload)).json()
    conversion = await get_conversion(client, admin, answer["conversion_id"])
    assert conversion["referrer_id"] == alice["id"]
    # an unknown discount code loses to the code of the program in the note attributes
    second = order(
        id=ORDER_ID + 1,
        admin_graphql_api_id=None,
        customer={"id": 42, "email": "eve@example.com"},
        discount_codes=[{"code": "SUMMER10", "amount": "5.00", "type": "percentage"}],
        note_attributes=[{"name": "referral_code", "value": code}],
    )
    answer = (
        await post_shopify(client, prog["id"], "orders/create", second, webhook_id="wh-2")
    ).json()
    conversion = await get_conversion(client, admin, answer["conversion_id"])
    assert conversion["event_id"] == f"gid://shopify/Order/{ORDER_ID + 1}"
    assert conversion["code"] == code


async def test_refunds_reduce_the_conversion_and_its_rewards(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    payload = order(discount_codes=[{"code": alice["default_code"]["code"], "amount": "10.00"}])
    conversion_id = (await post_shopify(client, prog["id"], "orders/create", payload)).json()[
        "conversion_id"
    ]
    response = await post_shopify(client, prog["id"], "refunds/create", refund(), webhook_id="r-1")
    assert response.json()["outcome"] == "refunded"
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "41.94"
    # the percent reward shrinks in proportion: 10% of (403.00 - 41.94) = 36.106 → 36.11
    assert [r["amount"] for r in after["rewards"]] == ["36.11"]
    # the same refund under another webhook id (a second subscription) is not applied twice
    again = await post_shopify(client, prog["id"], "refunds/create", refund(), webhook_id="r-2")
    assert again.json()["outcome"] == "ignored"
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "41.94"
    # a refund that moved no money (a restock only) is acknowledged and ignored
    restock = refund(id=509562970, admin_graphql_api_id=None, transactions=[])
    response = await post_shopify(client, prog["id"], "refunds/create", restock, webhook_id="r-3")
    assert response.json()["outcome"] == "ignored"


async def test_a_refund_before_its_order_waits_for_it(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await connected_program(client, app)
    early = await post_shopify(client, prog["id"], "refunds/create", refund("3.00"), webhook_id="r")
    assert early.status_code == 200 and early.json()["outcome"] == "parked"
    answer = (
        await post_shopify(client, prog["id"], "orders/create", order(), webhook_id="o")
    ).json()
    assert (await get_conversion(client, admin, answer["conversion_id"]))[
        "refunded_amount"
    ] == "3.00"


async def test_other_topics_are_acknowledged_and_ignored(client: AsyncClient, app: Any) -> None:
    _, prog, _ = await connected_program(client, app)
    response = await post_shopify(client, prog["id"], "orders/fulfilled", order())
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert await stored(app, Conversion) == 0


async def test_a_wrong_secret_or_a_changed_byte_is_refused(client: AsyncClient, app: Any) -> None:
    _, prog, _ = await connected_program(client, app)
    attempts = [
        await post_shopify(
            client, prog["id"], "orders/create", order(), secret="shpss_other_secret"
        ),
        await post_shopify(
            client,
            prog["id"],
            "orders/create",
            order(),
            tamper=lambda body: body.replace(b'"403.00"', b'"4.03"', 1),
        ),
        await client.post(
            f"/v1/integrations/shopify/{prog['id']}/webhook",
            json=order(),
            headers={"X-Shopify-Topic": "orders/create"},
        ),
    ]
    for response in attempts:
        assert_problem(response, 400, "invalid_signature")
    assert await stored(app, Conversion) == 0
    assert await stored(app, IntegrationEvent) == 0
    # the Stripe endpoint of the same program does not take Shopify's signature either
    body = json.dumps(order()).encode()
    response = await client.post(
        f"/v1/integrations/stripe/{prog['id']}/webhook",
        content=body,
        headers={"Stripe-Signature": f"t=1,v1={shopify_hmac(body)}"},
    )
    assert_problem(response, 400, "invalid_signature")
    secret_key = await make_key(app, "secret")
    listed = await client.get(
        f"/v1/programs/{prog['id']}/integrations/shopify/secrets", headers=auth(secret_key)
    )
    assert [row["prefix"] for row in listed.json()] == ["shps"]

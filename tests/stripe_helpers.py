"""Shared by the Stripe webhook tests: events shaped like Stripe's documented examples, signed
with the official `stripe` package's signing code, posted to a program connected by its secrets."""

import json
import time
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import func, select
from stripe import WebhookSignature

from tests.factories import auth
from tests.money_factories import add_rule, setup_program

SECRET = "whsec_test_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
OLD_SECRET = "whsec_test_0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def stripe_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    """Stripe-Signature as Stripe computes it, with the stripe package's own signing code."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = WebhookSignature._compute_signature(f"{timestamp}.{payload}", secret)
    return f"t={timestamp},{WebhookSignature.EXPECTED_SCHEME}={signature}"


def event(
    event_type: str, obj: dict[str, Any], event_id: str = "evt_1NG8Du2eZvKYlo2CUI79vXWy"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) - 2,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def checkout_session(**overrides: Any) -> dict[str, Any]:
    """A completed Checkout Session, as in Stripe's API reference."""
    return {
        "id": "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": True,
        "amount_subtotal": 5499,
        "amount_total": 4999,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://shop.example.com/cart",
        "client_reference_id": None,
        "consent": None,
        "created": int(time.time()) - 120,
        "currency": "usd",
        "custom_fields": [],
        "customer": "cus_NffrFeUfNV2Hib",
        "customer_creation": "if_required",
        "customer_details": {
            "address": {
                "city": None,
                "country": "US",
                "line1": None,
                "line2": None,
                "postal_code": "94107",
                "state": None,
            },
            "email": "Bob@Example.com",
            "name": "Bob Buyer",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [],
        "expires_at": int(time.time()) + 86000,
        "invoice": None,
        "livemode": False,
        "locale": None,
        "metadata": {},
        "mode": "payment",
        "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "payment_link": None,
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "status": "complete",
        "submit_type": None,
        "subscription": None,
        "success_url": "https://shop.example.com/thanks",
        "total_details": {"amount_discount": 500, "amount_shipping": 0, "amount_tax": 0},
        "url": None,
    } | overrides


def invoice(**overrides: Any) -> dict[str, Any]:
    """A paid subscription invoice (API version 2024-06-20 shape)."""
    return {
        "id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
        "object": "invoice",
        "account_country": "US",
        "amount_due": 1500,
        "amount_paid": 1500,
        "amount_remaining": 0,
        "billing_reason": "subscription_create",
        "charge": "ch_3MtHbELkdIwHu7ix0snN0B15",
        "collection_method": "charge_automatically",
        "created": int(time.time()) - 60,
        "currency": "usd",
        "customer": "cus_NeZwdNtLEOXuvB",
        "customer_email": "carol@example.com",
        "customer_name": "Carol",
        "discount": None,
        "discounts": [],
        "lines": {"object": "list", "data": [], "has_more": False},
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": "pi_3MtHbELkdIwHu7ix0M5TSdP4",
        "status": "paid",
        "subscription": "sub_1MtHbELkdIwHu7ixHvI2w8Zs",
        "subscription_details": {"metadata": {}},
        "total": 1500,
    } | overrides


def charge(
    amount_refunded: int, refund_id: str | None = "re_3MtwBwLkdIwHu7ix1rWJSbTN", **overrides: Any
) -> dict[str, Any]:
    """A refunded charge of the checkout above (the refunds list as older API versions send)."""
    refunds: dict[str, Any] = {"object": "list", "data": [], "has_more": False}
    if refund_id:
        refunds["data"] = [
            {
                "id": refund_id,
                "object": "refund",
                "amount": amount_refunded,
                "currency": "usd",
                "reason": "requested_by_customer",
                "status": "succeeded",
            }
        ]
    return {
        "id": "ch_3MtwBwLkdIwHu7ix28a3tqPa",
        "object": "charge",
        "amount": 4999,
        "amount_captured": 4999,
        "amount_refunded": amount_refunded,
        "captured": True,
        "currency": "usd",
        "customer": "cus_NffrFeUfNV2Hib",
        "invoice": None,
        "paid": True,
        "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "refunded": amount_refunded == 4999,
        "refunds": refunds,
        "status": "succeeded",
    } | overrides


async def post_stripe(
    client: AsyncClient,
    program_id: str,
    body: dict[str, Any] | str,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    tamper: Any = None,
) -> Response:
    payload = body if isinstance(body, str) else json.dumps(body, indent=2)
    header = stripe_header(payload, secret, timestamp)
    sent = tamper(payload) if tamper else payload
    return await client.post(
        f"/v1/integrations/stripe/{program_id}/webhook",
        content=sent.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"},
    )


async def connect(client: AsyncClient, key: str, program_id: str, *secrets: str) -> list[Any]:
    response = await client.post(
        f"/v1/programs/{program_id}/integrations/stripe/secrets",
        json={"secrets": list(secrets or (SECRET,))},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    rows: list[Any] = response.json()
    return rows


async def stored(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def conversions(client: AsyncClient, key: str, program_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/conversions", params={"program_id": program_id}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def connected_program(
    client: AsyncClient, app: Any, **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    admin, prog, alice = await setup_program(client, app, **program)
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="5.00" if prog["currency"] == "USD" else "500",
    )
    await connect(client, admin, prog["id"])
    return admin, prog, alice

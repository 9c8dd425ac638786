"""Stripe webhooks in: events shaped like Stripe's documented examples, signed with the official
`stripe` package's signing code, turned into conversions and refunds exactly once."""

import json
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from stripe import WebhookSignature

from app.conversions.models import Conversion, Refund
from app.integrations.models import IntegrationEvent
from app.webhooks.dispatcher import Dispatcher
from tests.factories import assert_problem, auth, make_code, make_key, make_program
from tests.money_factories import add_rule, get_conversion, setup_program
from tests.settings import settings_for_tests
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401

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


# --- purchases --------------------------------------------------------------------------------


async def test_a_checkout_becomes_an_attributed_conversion(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    body = event("checkout.session.completed", checkout_session(client_reference_id=code))
    response = await post_stripe(client, prog["id"], body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "recorded" and answer["provider"] == "stripe"
    assert answer["external_id"] == body["id"] and answer["topic"] == "checkout.session.completed"

    [conversion] = await conversions(client, admin, prog["id"])
    assert conversion["id"] == answer["conversion_id"]
    assert conversion["event_id"] == body["data"]["object"]["id"]
    assert (conversion["amount"], conversion["currency"]) == ("49.99", "USD")
    assert conversion["customer_id"] == "cus_NffrFeUfNV2Hib"
    assert conversion["status"] == "attributed" and conversion["referrer_id"] == alice["id"]
    assert conversion["metadata"]["stripe_payment_intent"] == "pi_3MtwBwLkdIwHu7ix28a3tqPa"
    assert [(r["recipient"], r["amount"]) for r in conversion["rewards"]] == [("referrer", "5.00")]

    # Stripe delivers at least once: the same event again changes nothing
    again = await post_stripe(client, prog["id"], body)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert len(await conversions(client, admin, prog["id"])) == 1
    events = (
        await client.get(
            f"/v1/programs/{prog['id']}/integrations/stripe/events", headers=auth(admin)
        )
    ).json()["data"]
    assert [(e["topic"], e["outcome"]) for e in events] == [
        ("checkout.session.completed", "recorded")
    ]


async def test_the_code_is_taken_from_metadata_or_the_promotion_code(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    vanity = await make_code(client, admin, alice["id"], code="ALICE10")
    # client_reference_id holds the shop's own user id; metadata names the referral code
    by_metadata = checkout_session(
        id="cs_test_meta",
        client_reference_id="user_8812",
        metadata={"referral_code": alice["default_code"]["code"].lower()},
    )
    response = await post_stripe(
        client, prog["id"], event("checkout.session.completed", by_metadata, "evt_1")
    )
    assert response.json()["outcome"] == "recorded"
    promotion = {
        "id": "promo_1MiM6KLkdIwHu7ixrIaX4wgn",
        "object": "promotion_code",
        "active": True,
        "code": vanity["code"],
        "coupon": {"id": "Z4OV52SU"},
    }
    by_promotion = checkout_session(
        id="cs_test_promo",
        customer="cus_second",
        discounts=[{"coupon": None, "promotion_code": promotion}],
    )
    response = await post_stripe(
        client, prog["id"], event("checkout.session.completed", by_promotion, "evt_2")
    )
    assert response.json()["outcome"] == "recorded"
    rows = {row["event_id"]: row for row in await conversions(client, admin, prog["id"])}
    assert rows["cs_test_meta"]["code"] == alice["default_code"]["code"]
    assert rows["cs_test_promo"]["code"] == "ALICE10"
    assert rows["cs_test_promo"]["referrer_id"] == alice["id"]


async def test_zero_decimal_currencies_are_whole_units(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app, currency="JPY")
    body = event(
        "checkout.session.completed",
        checkout_session(
            currency="jpy", amount_total=1200, client_reference_id=alice["default_code"]["code"]
        ),
    )
    assert (await post_stripe(client, prog["id"], body)).json()["outcome"] == "recorded"
    [conversion] = await conversions(client, admin, prog["id"])
    assert (conversion["amount"], conversion["currency"]) == ("1200", "JPY")


async def test_an_unpaid_or_free_checkout_is_not_a_purchase(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await connected_program(client, app)
    unpaid = event("checkout.session.completed", checkout_session(payment_status="unpaid"), "evt_u")
    free = event("checkout.session.completed", checkout_session(amount_total=0), "evt_f")
    for body in (unpaid, free):
        response = await post_stripe(client, prog["id"], body)
        assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    # a delayed payment method: the purchase is the async success
    later = event("checkout.session.async_payment_succeeded", checkout_session(), "evt_a")
    assert (await post_stripe(client, prog["id"], later)).json()["outcome"] == "recorded"
    assert len(await conversions(client, admin, prog["id"])) == 1


async def test_a_subscription_is_one_purchase_per_invoice(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    first = invoice(subscription_details={"metadata": {"referral_code": code}})
    response = await post_stripe(client, prog["id"], event("invoice.paid", first, "evt_inv_1"))
    assert response.json()["outcome"] == "recorded"
    # the checkout that started the subscription names the same invoice: not a second purchase
    started = checkout_session(
        id="cs_test_sub",
        mode="subscription",
        invoice=first["id"],
        client_reference_id=code,
        amount_total=1500,
        customer="cus_NeZwdNtLEOXuvB",
    )
    response = await post_stripe(
        client, prog["id"], event("checkout.session.completed", started, "evt_cs")
    )
    assert response.json()["outcome"] in ("duplicate", "recorded")
    renewal = invoice(
        id="in_renewal",
        billing_reason="subscription_cycle",
        charge="ch_renewal",
        payment_intent="pi_renewal",
    )
    assert (
        await post_stripe(client, prog["id"], event("invoice.paid", renewal, "evt_inv_2"))
    ).json()["outcome"] == "recorded"
    rows = await conversions(client, admin, prog["id"])
    assert [row["event_id"] for row in rows] == [first["id"], "in_renewal"]
    assert all(row["referrer_id"] == alice["id"] for row in rows)  # the renewal: customer history
    assert [row["amount"] for row in rows] == ["15.00", "15.00"]


async def test_unknown_event_types_are_acknowledged_and_ignored(
    client: AsyncClient, app: Any
) -> None:
    _, prog, _ = await connected_program(client, app)
    body = event("customer.created", {"id": "cus_x", "object": "customer"})
    response = await post_stripe(client, prog["id"], body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert await stored(app, Conversion) == 0


async def test_a_purchase_the_program_cannot_take_is_kept_as_rejected(
    client: AsyncClient, app: Any
) -> None:
    _, prog, _ = await connected_program(client, app)
    euros = event("checkout.session.completed", checkout_session(currency="eur"))
    response = await post_stripe(client, prog["id"], euros)
    assert response.status_code == 200
    assert response.json()["outcome"] == "rejected"
    assert response.json()["detail"].startswith("currency_mismatch")
    assert await stored(app, Conversion) == 0
    broken = event("checkout.session.completed", {"id": "cs_broken", "currency": "usd"}, "evt_b")
    assert (await post_stripe(client, prog["id"], broken)).json()["outcome"] == "rejected"


# --- refunds ----------------------------------------------------------------------------------


async def test_refunds_follow_the_cumulative_amount(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    conversion_id = (await post_stripe(client, prog["id"], body)).json()["conversion_id"]

    partial = event("charge.refunded", charge(1000, "re_first"), "evt_r1")
    response = await post_stripe(client, prog["id"], partial)
    assert response.json()["outcome"] == "refunded"
    assert response.json()["conversion_id"] == conversion_id
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "10.00"
    assert (await post_stripe(client, prog["id"], partial)).json()["outcome"] == "duplicate"

    full = event("charge.refunded", charge(4999, "re_second"), "evt_r2")
    assert (await post_stripe(client, prog["id"], full)).json()["outcome"] == "refunded"
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "49.99"
    assert [r["status"] for r in after["rewards"]] == ["reversed"]
    async with app.state.sessionmaker() as session:
        refunds = list(await session.scalars(select(Refund).order_by(Refund.created_at)))
    assert [(r.refund_id, r.amount) for r in refunds] == [
        ("re_first", Decimal("10.00")),
        ("re_second", Decimal("39.99")),
    ]


async def test_an_older_refund_event_arriving_late_changes_nothing(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await connected_program(client, app)
    body = event("checkout.session.completed", checkout_session())
    conversion_id = (await post_stripe(client, prog["id"], body)).json()["conversion_id"]
    newer = event("charge.refunded", charge(3000, refund_id=None), "evt_r2")
    older = event("charge.refunded", charge(1000, refund_id=None), "evt_r1")
    assert (await post_stripe(client, prog["id"], newer)).json()["outcome"] == "refunded"
    assert (await post_stripe(client, prog["id"], older)).json()["outcome"] == "ignored"
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "30.00"


async def test_a_refund_before_its_purchase_is_parked_then_applied(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    early = await post_stripe(
        client, prog["id"], event("charge.refunded", charge(1500), "evt_early")
    )
    assert early.status_code == 200
    assert early.json()["outcome"] == "parked" and early.json()["conversion_id"] is None
    assert await stored(app, Conversion) == 0

    purchase = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
        "evt_buy",
    )
    conversion_id = (await post_stripe(client, prog["id"], purchase)).json()["conversion_id"]
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "15.00"
    events = (
        await client.get(
            f"/v1/programs/{prog['id']}/integrations/stripe/events", headers=auth(admin)
        )
    ).json()["data"]
    assert [(e["external_id"], e["outcome"], e["conversion_id"]) for e in events] == [
        ("evt_early", "refunded", conversion_id),
        ("evt_buy", "recorded", conversion_id),
    ]
    # the parked refund is applied once, even when Stripe delivers it again
    assert (
        await post_stripe(client, prog["id"], event("charge.refunded", charge(1500), "evt_early"))
    ).json()["outcome"] == "duplicate"
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "15.00"


# --- signatures -------------------------------------------------------------------------------


async def test_a_wrong_secret_a_stale_timestamp_or_a_changed_byte_is_refused(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    now = int(time.time())
    attempts = [
        await post_stripe(client, prog["id"], body, secret="whsec_someone_elses_secret_value"),
        await post_stripe(client, prog["id"], body, timestamp=now - 301),
        await post_stripe(client, prog["id"], body, timestamp=now + 301),
        await post_stripe(client, prog["id"], body, tamper=lambda p: p.replace("4999", "4998", 1)),
        await post_stripe(client, prog["id"], body, tamper=lambda p: p + " "),
        await client.post(f"/v1/integrations/stripe/{prog['id']}/webhook", json=body),
        await client.post(
            f"/v1/integrations/stripe/{prog['id']}/webhook",
            json=body,
            headers={"Stripe-Signature": "t=abc,v1=00"},
        ),
    ]
    other = await make_program(client, admin, name="Not connected")
    attempts.append(await post_stripe(client, other["id"], body))
    attempts.append(await post_stripe(client, "00000000-0000-4000-8000-000000000000", body))
    for response in attempts:
        assert_problem(response, 400, "invalid_signature")
    assert await stored(app, Conversion) == 0
    assert await stored(app, IntegrationEvent) == 0
    # within the tolerance, it is accepted
    ok = await post_stripe(client, prog["id"], body, timestamp=now - 200)
    assert ok.status_code == 200 and ok.json()["outcome"] == "recorded"


async def test_a_signed_body_that_is_not_an_event_is_a_400(client: AsyncClient, app: Any) -> None:
    _, prog, _ = await connected_program(client, app)
    for payload in ("not json", "[1, 2]", json.dumps({"object": "event"})):
        assert_problem(await post_stripe(client, prog["id"], payload), 400, "invalid_payload")


async def test_secrets_rotate_and_are_never_shown_again(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    path = f"/v1/programs/{prog['id']}/integrations/stripe/secrets"
    rows = await connect(client, admin, prog["id"], OLD_SECRET, SECRET)
    assert [row["prefix"] for row in rows] == ["whsec_test", "whsec_test"]
    assert OLD_SECRET not in json.dumps(rows) and SECRET not in json.dumps(rows)
    assert len(await connect(client, admin, prog["id"], SECRET)) == 2  # adding again: harmless

    first = event("checkout.session.completed", checkout_session(id="cs_1"), "evt_1")
    second = event(
        "checkout.session.completed", checkout_session(id="cs_2", customer="cus_2"), "evt_2"
    )
    assert (await post_stripe(client, prog["id"], first, secret=OLD_SECRET)).json()[
        "outcome"
    ] == "recorded"
    assert (await post_stripe(client, prog["id"], second, secret=SECRET)).json()[
        "outcome"
    ] == "recorded"
    # during a rotation Stripe sends one v1 signature per active secret
    payload = json.dumps(event("checkout.session.completed", checkout_session(id="cs_3"), "evt_3"))
    now = int(time.time())
    both = ",".join(
        [f"t={now}"]
        + [
            "v1=" + WebhookSignature._compute_signature(f"{now}.{payload}", s)
            for s in ("whsec_unknown_to_us_000000000", SECRET)
        ]
    )
    response = await client.post(
        f"/v1/integrations/stripe/{prog['id']}/webhook",
        content=payload,
        headers={"Stripe-Signature": both},
    )
    assert response.json()["outcome"] == "recorded"

    listed = (await client.get(path, headers=auth(admin))).json()
    assert len(listed) == 2
    old_id = listed[0]["id"]
    assert (await client.delete(f"{path}/{old_id}", headers=auth(admin))).status_code == 204
    assert_problem(await client.delete(f"{path}/{old_id}", headers=auth(admin)), 404, "not_found")
    late = event("checkout.session.completed", checkout_session(id="cs_4"), "evt_4")
    assert_problem(
        await post_stripe(client, prog["id"], late, secret=OLD_SECRET), 400, "invalid_signature"
    )


async def test_managing_secrets_needs_a_secret_key_for_the_program(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    path = f"/v1/programs/{prog['id']}/integrations/stripe/secrets"
    body = {"secrets": [SECRET]}
    assert_problem(await client.post(path, json=body), 401, "unauthorized")
    publishable = await make_key(app, "publishable")
    assert_problem(await client.post(path, json=body, headers=auth(publishable)), 403, "forbidden")
    elsewhere = await make_key(app, "secret", [UUID(other["id"])])
    assert_problem(
        await client.post(path, json=body, headers=auth(elsewhere)), 404, "program_not_found"
    )
    assert_problem(await client.get(path, headers=auth(elsewhere)), 404, "program_not_found")
    assert_problem(
        await client.post(
            path, json={"secrets": ["not-a-stripe-secret-1234"]}, headers=auth(admin)
        ),
        422,
        "invalid_request",
    )
    assert_problem(
        await client.post(path, json={"secrets": ["short"]}, headers=auth(admin)),
        422,
        "validation_error",
    )
    bad_provider = f"/v1/programs/{prog['id']}/integrations/paypal/secrets"
    assert_problem(
        await client.post(bad_provider, json=body, headers=auth(admin)), 422, "validation_error"
    )


# --- the walk-through: a Stripe purchase ends as a signed reward.created ----------------------


async def test_a_stripe_purchase_ends_as_a_signed_reward_created(
    client: AsyncClient, app: Any, receiver: Receiver
) -> None:
    admin, prog, alice = await connected_program(client, app)
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["reward.created"], "program_id": prog["id"]},
        headers=auth(admin),
    )
    endpoint = response.json()
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    assert (await post_stripe(client, prog["id"], body)).json()["outcome"] == "recorded"
    dispatcher = Dispatcher(app.state.sessionmaker, settings_for_tests())
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.aclose()
    [request] = receiver.received
    reward = request.verify(endpoint["secret"])
    assert reward["type"] == "reward.created"
    assert reward["data"]["referrer_id"] == alice["id"] and reward["data"]["amount"] == "5.00"


@pytest.mark.postgres
async def test_concurrent_duplicates_record_one_conversion(client: AsyncClient, app: Any) -> None:
    import asyncio

    admin, prog, alice = await connected_program(client, app)
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    refund = event("charge.refunded", charge(1000), "evt_refund")
    responses = await asyncio.gather(
        *(post_stripe(client, prog["id"], body) for _ in range(5)),
        *(post_stripe(client, prog["id"], refund) for _ in range(3)),
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sorted(r.json()["outcome"] for r in responses[:5]) == ["duplicate"] * 4 + ["recorded"]
    [conversion] = await conversions(client, admin, prog["id"])
    assert conversion["refunded_amount"] == "10.00"  # parked or applied, exactly once
    assert len(conversion["rewards"]) == 1

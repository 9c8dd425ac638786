"""Stripe webhooks in, purchases: checkouts and invoices become attributed conversions exactly
once, and a Stripe purchase ends as a signed reward.created."""

from typing import Any

import pytest
from httpx import AsyncClient

from app.conversions.models import Conversion
from app.webhooks.dispatcher import Dispatcher
from tests.factories import auth, make_code
from tests.settings import settings_for_tests
from tests.stripe_helpers import (
    charge,
    checkout_session,
    connected_program,
    conversions,
    event,
    invoice,
    post_stripe,
    stored,
)
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401

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

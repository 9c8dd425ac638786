"""Only paid orders earn, and a cancelled order is a full refund — Shopify and Stripe alike.

Payloads are shaped like the platforms' own (tests/test_integrations_shopify.py and
tests/stripe_helpers.py build and sign them); every answer goes through the webhook
endpoints, and the ledger is read back through the API.
"""

from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient

from app.conversions.models import Conversion
from app.rewards.models import Reward
from tests.factories import auth
from tests.money_factories import balance, get_conversion, rewards, transition
from tests.stripe_helpers import checkout_session, event, post_stripe
from tests.stripe_helpers import connected_program as stripe_program
from tests.test_integrations_shopify import (
    ORDER_ID,
    connected_program,
    order,
    post_shopify,
    refund,
    stored,
)


def referred_order(code: str, **overrides: Any) -> dict[str, Any]:
    return order(discount_codes=[{"code": code, "amount": "10.00", "type": "fixed_amount"}]) | (
        overrides
    )


# --- Shopify: what is paid --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "authorized", "partially_paid", "voided", "expired"])
async def test_an_unpaid_order_earns_nothing(client: AsyncClient, app: Any, status: str) -> None:
    admin, prog, alice = await connected_program(client, app)
    payload = referred_order(alice["default_code"]["code"], financial_status=status)
    for topic, webhook_id in (("orders/create", "w-1"), ("orders/updated", "w-2")):
        response = await post_shopify(client, prog["id"], topic, payload, webhook_id=webhook_id)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["outcome"] == "ignored" and answer["conversion_id"] is None
        assert status in answer["detail"] and "not paid" in answer["detail"]
    assert await stored(app, Conversion) == 0
    assert await stored(app, Reward) == 0
    assert await balance(client, admin, alice["id"]) == {}


async def test_cash_on_delivery_earns_when_it_is_paid(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    pending = referred_order(code, financial_status="pending", gateway="Cash on Delivery (COD)")
    created = await post_shopify(client, prog["id"], "orders/create", pending, webhook_id="c")
    assert created.json()["outcome"] == "ignored"

    paid = referred_order(code, financial_status="paid", gateway="Cash on Delivery (COD)")
    answer = (await post_shopify(client, prog["id"], "orders/paid", paid, webhook_id="p")).json()
    assert answer["outcome"] == "recorded" and answer["topic"] == "orders/paid"
    conversion = await get_conversion(client, admin, answer["conversion_id"])
    assert conversion["event_id"] == f"gid://shopify/Order/{ORDER_ID}"
    assert conversion["referrer_id"] == alice["id"]
    assert [r["amount"] for r in conversion["rewards"]] == ["40.30"]

    # the orders/updated that follows the payment is the same purchase, not a second one
    again = await post_shopify(client, prog["id"], "orders/updated", paid, webhook_id="u")
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["conversion_id"] == answer["conversion_id"]
    assert await stored(app, Conversion) == 1 and await stored(app, Reward) == 1


async def test_an_order_paid_at_checkout_is_recorded_by_whichever_topic_comes_first(
    client: AsyncClient, app: Any
) -> None:
    _, prog, alice = await connected_program(client, app)
    paid = referred_order(alice["default_code"]["code"])
    first = await post_shopify(client, prog["id"], "orders/updated", paid, webhook_id="u")
    assert first.json()["outcome"] == "recorded"
    for topic, webhook_id in (("orders/create", "c"), ("orders/paid", "p")):
        answer = (await post_shopify(client, prog["id"], topic, paid, webhook_id=webhook_id)).json()
        assert answer["outcome"] == "duplicate"
    assert await stored(app, Conversion) == 1 and await stored(app, Reward) == 1


# --- Shopify: cancellation ------------------------------------------------------------------------


def cancelled(code: str, **overrides: Any) -> dict[str, Any]:
    """The order as orders/cancelled sends it (Shopify refunds the payment by default)."""
    cancellation = {
        "cancelled_at": "2026-11-23T09:00:00-05:00",
        "cancel_reason": "customer",
        "financial_status": "refunded",
    }
    return referred_order(code, **(cancellation | overrides))


async def test_a_cancelled_order_reverses_its_rewards_once(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    recorded = await post_shopify(client, prog["id"], "orders/paid", referred_order(code))
    conversion_id = recorded.json()["conversion_id"]

    response = await post_shopify(
        client, prog["id"], "orders/cancelled", cancelled(code), webhook_id="x-1"
    )
    answer = response.json()
    assert answer["outcome"] == "refunded" and answer["conversion_id"] == conversion_id
    conversion = await get_conversion(client, admin, conversion_id)
    assert conversion["refunded_amount"] == "403.00"
    assert [r["status"] for r in conversion["rewards"]] == ["reversed"]
    lines = await balance(client, admin, alice["id"])
    assert all(Decimal(line["owed"]) == 0 for line in lines.values()), lines

    # a redelivery, the orders/updated of the cancellation, and the refund Shopify makes with
    # it change nothing more
    redelivered = await post_shopify(
        client, prog["id"], "orders/cancelled", cancelled(code), webhook_id="x-1"
    )
    assert redelivered.json()["outcome"] == "duplicate"
    updated = await post_shopify(
        client, prog["id"], "orders/updated", cancelled(code), webhook_id="x-2"
    )
    assert updated.json()["outcome"] == "ignored"
    money_back = await post_shopify(
        client, prog["id"], "refunds/create", refund("403.00"), webhook_id="x-3"
    )
    assert money_back.json()["outcome"] == "ignored"
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "403.00"
    ledger = await rewards(client, admin, program_id=prog["id"])
    assert [(r["entry_type"], r["status"]) for r in ledger] == [("reward", "reversed")]


async def test_cancelling_after_a_partial_refund_refunds_the_rest(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    conversion_id = (
        await post_shopify(client, prog["id"], "orders/create", referred_order(code))
    ).json()["conversion_id"]
    await post_shopify(client, prog["id"], "refunds/create", refund("41.94"), webhook_id="r")
    response = await post_shopify(
        client,
        prog["id"],
        "orders/cancelled",
        cancelled(code, financial_status="partially_refunded"),
        webhook_id="x",
    )
    assert response.json()["outcome"] == "refunded"
    conversion = await get_conversion(client, admin, conversion_id)
    assert conversion["refunded_amount"] == "403.00"
    assert [r["status"] for r in conversion["rewards"]] == ["reversed"]


async def test_cancelling_an_order_whose_reward_was_paid_claws_it_back(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    conversion_id = (
        await post_shopify(client, prog["id"], "orders/paid", referred_order(code))
    ).json()["conversion_id"]
    [reward] = (await get_conversion(client, admin, conversion_id))["rewards"]
    assert (await transition(client, admin, reward["id"], "mark-paid")).status_code == 200

    response = await post_shopify(
        client, prog["id"], "orders/cancelled", cancelled(code), webhook_id="x"
    )
    assert response.json()["outcome"] == "refunded"
    ledger = await rewards(client, admin, program_id=prog["id"])
    assert sorted((r["entry_type"], r["status"], r["amount"]) for r in ledger) == [
        ("clawback", "approved", "-40.30"),
        ("reward", "paid", "40.30"),
    ]
    usd = (await balance(client, admin, alice["id"]))["USD"]
    assert (Decimal(usd["paid"]), Decimal(usd["payable"])) == (Decimal("40.30"), Decimal("-40.30"))


async def test_a_cancellation_before_its_payment_never_lets_the_order_earn(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    early = await post_shopify(
        client, prog["id"], "orders/cancelled", cancelled(code), webhook_id="x"
    )
    assert early.json()["outcome"] == "parked"
    # the orders/paid sent before the cancellation arrives late, without cancelled_at
    late = await post_shopify(
        client, prog["id"], "orders/paid", referred_order(code), webhook_id="p"
    )
    answer = late.json()
    assert answer["outcome"] == "recorded"
    conversion = await get_conversion(client, admin, answer["conversion_id"])
    assert conversion["refunded_amount"] == "403.00"
    assert [r["status"] for r in conversion["rewards"]] == ["reversed"]
    lines = await balance(client, admin, alice["id"])
    assert all(
        Decimal(line["owed"]) == 0 and Decimal(line["payable"]) == 0 for line in lines.values()
    )
    events = await client.get(
        f"/v1/programs/{prog['id']}/integrations/shopify/events", headers=auth(admin)
    )
    outcomes = {row["topic"]: row["outcome"] for row in events.json()["data"]}
    assert outcomes == {"orders/cancelled": "refunded", "orders/paid": "recorded"}


async def test_an_unpaid_order_that_is_cancelled_records_nothing(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    code = alice["default_code"]["code"]
    pending = referred_order(code, financial_status="pending")
    await post_shopify(client, prog["id"], "orders/create", pending, webhook_id="c")
    voided = cancelled(code, financial_status="voided")
    response = await post_shopify(client, prog["id"], "orders/cancelled", voided, webhook_id="x")
    assert response.json()["outcome"] == "parked"
    # an orders/updated of the cancelled order is the same cancellation, not a purchase
    updated = await post_shopify(client, prog["id"], "orders/updated", voided, webhook_id="u")
    assert updated.json()["outcome"] == "parked"
    assert await stored(app, Conversion) == 0 and await stored(app, Reward) == 0
    assert await balance(client, admin, alice["id"]) == {}


# --- Stripe: the same rule ------------------------------------------------------------------------


async def test_stripe_records_a_checkout_only_once_it_is_paid(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await stripe_program(client, app)
    session = checkout_session(
        client_reference_id=alice["default_code"]["code"], payment_status="unpaid"
    )
    completed = await post_stripe(
        client, prog["id"], event("checkout.session.completed", session, "evt_c")
    )
    assert completed.json()["outcome"] == "ignored"
    assert "unpaid" in completed.json()["detail"]
    failed = await post_stripe(
        client, prog["id"], event("checkout.session.async_payment_failed", session, "evt_f")
    )
    assert failed.json()["outcome"] == "ignored" and "failed" in failed.json()["detail"]
    assert await stored(app, Conversion) == 0 and await stored(app, Reward) == 0
    assert await balance(client, admin, alice["id"]) == {}

    # another checkout with a delayed method that does settle earns on the success event
    settled = checkout_session(
        id="cs_test_settled",
        payment_intent="pi_settled",
        client_reference_id=alice["default_code"]["code"],
        payment_status="unpaid",
    )
    await post_stripe(client, prog["id"], event("checkout.session.completed", settled, "evt_c2"))
    succeeded = await post_stripe(
        client,
        prog["id"],
        event(
            "checkout.session.async_payment_succeeded", settled | {"payment_status": "paid"}, "e3"
        ),
    )
    assert succeeded.json()["outcome"] == "recorded"
    assert await stored(app, Conversion) == 1 and await stored(app, Reward) == 1


@pytest.mark.parametrize("status", ["unpaid", "no_payment_required"])
async def test_stripe_ignores_a_checkout_that_is_not_paid(
    client: AsyncClient, app: Any, status: str
) -> None:
    _, prog, alice = await stripe_program(client, app)
    session = checkout_session(
        client_reference_id=alice["default_code"]["code"], payment_status=status
    )
    for event_type, event_id in (
        ("checkout.session.completed", "evt_1"),
        ("checkout.session.async_payment_succeeded", "evt_2"),
    ):
        response = await post_stripe(client, prog["id"], event(event_type, session, event_id))
        assert response.json()["outcome"] == "ignored", response.text
    assert await stored(app, Conversion) == 0

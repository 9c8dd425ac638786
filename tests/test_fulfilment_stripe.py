"""Coupons with promotion codes and customer balance credits in Stripe, through the official
`stripe` library pointed at a local server (tests/fakes/stripe.py): the request encoding is the
library's own. Asserted: the Idempotency-Key of every create, amounts in minor units, the
customer restriction and single use; a lost answer or an expired key never issues twice."""

import asyncio
from datetime import timedelta
from typing import Any

from httpx import AsyncClient

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from tests.fakes.stripe import SECRET_KEY, FakeStripe
from tests.fulfilment_helpers import (  # noqa: F401
    ALICE_STRIPE,
    BOB_STRIPE,
    buy,
    dispatcher_fixture,
    drain,
    fulfilment_of,
    program_paying,
    reward,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import post_refund

COUPON = {
    "recipient": "referee",
    "kind": "fixed",
    "amount": "10.00",
    "fulfilment": "coupon",
    "fulfilment_provider": "stripe",
}
CREDIT = {
    "recipient": "referrer",
    "kind": "fixed",
    "amount": "5.00",
    "fulfilment": "store_credit",
    "fulfilment_provider": "stripe",
}


async def test_a_coupon_and_promotion_code_for_the_customer_with_idempotency_keys(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, COUPON)
    bought = await buy(client, admin, prog, alice, BOB_STRIPE)
    reward_id = bought["rewards"][0]["id"]
    assert await drain(dispatcher) == 1

    (coupon_call,) = stripe_api.calls("POST /v1/coupons")
    assert coupon_call.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert coupon_call.headers["idempotency-key"] == f"{reward_id}:coupon"
    assert coupon_call.headers["stripe-version"]  # the library pins its API version
    coupon = coupon_call.parsed
    assert coupon["id"] == f"reward_{reward_id.replace('-', '')}"
    assert (coupon["amount_off"], coupon["currency"]) == ("1000", "usd")  # cents
    assert (coupon["duration"], coupon["max_redemptions"]) == ("once", "1")
    assert coupon["metadata"]["reward_id"] == reward_id

    (promo_call,) = stripe_api.calls("POST /v1/promotion_codes")
    assert promo_call.headers["idempotency-key"] == f"{reward_id}:promotion_code"
    promo = promo_call.parsed
    assert promo["promotion"] == {"type": "coupon", "coupon": coupon["id"]}
    assert (promo["customer"], promo["max_redemptions"]) == (BOB_STRIPE, "1")
    assert promo["code"].startswith("REF")

    (made,) = stripe_api.promotion_codes.values()
    paid = await reward(client, admin, reward_id)
    assert paid["status"] == "paid" and paid["payout_reference"] == made["id"]
    assert paid["fulfilment"]["code"] == promo["code"] == made["code"]
    assert paid["fulfilment"]["reference"] == made["id"]


async def test_zero_decimal_currencies_and_percent_coupons(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    yen = COUPON | {"amount": "500"}
    percent = COUPON | {"amount": "100", "coupon_percent": "12.5"}
    admin, prog, alice = await program_paying(client, app, yen, percent, currency="JPY")
    await buy(client, admin, prog, alice, BOB_STRIPE, "8000")
    assert await drain(dispatcher) == 2
    coupons = sorted(stripe_api.params("POST /v1/coupons"), key=lambda c: "percent_off" in c)
    assert (coupons[0]["amount_off"], coupons[0]["currency"]) == ("500", "jpy")
    assert coupons[1]["percent_off"] == "12.5" and "amount_off" not in coupons[1]


async def test_store_credit_is_a_negative_balance_transaction_found_by_email(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, CREDIT)
    bought = await buy(client, admin, prog, alice, "bob")
    reward_id = bought["rewards"][0]["id"]
    assert await drain(dispatcher) == 1
    (lookup,) = stripe_api.params("GET /v1/customers")
    assert lookup["email"] == "alice@example.com"
    (call,) = stripe_api.calls("POST /v1/customers/{id}/balance_transactions")
    assert call.path == f"/v1/customers/{ALICE_STRIPE}/balance_transactions"
    assert call.headers["idempotency-key"] == f"{reward_id}:balance"
    assert (call.parsed["amount"], call.parsed["currency"]) == ("-500", "usd")
    (transaction,) = stripe_api.balance[ALICE_STRIPE]
    assert (await reward(client, admin, reward_id))["fulfilment"]["reference"] == (
        transaction["id"]
    )


async def test_a_lost_answer_is_replayed_by_its_idempotency_key(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    """The creates complete after the 1 s timeout; the retries send the same keys and
    parameters, and Stripe answers with what the first requests made."""
    admin, prog, alice = await program_paying(client, app, COUPON, CREDIT)
    stripe_api.stall("POST /v1/promotion_codes", 1.5)
    stripe_api.stall("POST /v1/customers/{id}/balance_transactions", 1.5)
    bought = await buy(client, admin, prog, alice, BOB_STRIPE)
    assert await dispatcher.run_once() == 2
    # The stalled creates finish on the fake after the service gave up on them (however slow
    # the machine is): only then is each answer lost and not merely late.
    for _ in range(200):
        if stripe_api.promotion_codes and stripe_api.balance.get(ALICE_STRIPE):
            break
        await asyncio.sleep(0.05)
    assert await drain(dispatcher, utcnow() + timedelta(minutes=10)) == 2
    assert len(stripe_api.coupons) == 1
    assert len(stripe_api.promotion_codes) == 1
    assert len(stripe_api.balance[ALICE_STRIPE]) == 1
    for answered in bought["rewards"]:
        assert (await reward(client, admin, answered["id"]))["status"] == "paid"


async def test_after_the_idempotency_keys_expired_the_retry_still_finds_the_first(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    """Stripe forgets idempotency keys after 24 hours: the coupon's own id, the promotion
    code's code and the credit's metadata find what a lost attempt made."""
    admin, prog, alice = await program_paying(client, app, COUPON, CREDIT)
    stripe_api.stall("POST /v1/promotion_codes", 1.5)
    stripe_api.stall("POST /v1/customers/{id}/balance_transactions", 1.5)
    await buy(client, admin, prog, alice, BOB_STRIPE)
    assert await dispatcher.run_once() == 2
    await asyncio.sleep(1.0)
    stripe_api._replies.clear()  # the keys expired
    assert await drain(dispatcher, utcnow() + timedelta(minutes=10)) == 2
    assert len(stripe_api.coupons) == 1
    assert len(stripe_api.promotion_codes) == 1
    assert len(stripe_api.balance[ALICE_STRIPE]) == 1
    assert len(stripe_api.calls("POST /v1/promotion_codes")) == 1  # looked up, not made
    assert len(stripe_api.calls("POST /v1/customers/{id}/balance_transactions")) == 1


async def test_a_refused_request_fails_at_once_and_a_bad_key_is_retried(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, COUPON)
    bought = await buy(client, admin, prog, alice, "cus_unknown")
    assert await drain(dispatcher) == 1
    row = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert row["status"] == "failed" and "No such customer" in row["error"]

    stripe_api.fail("POST /v1/coupons", 401)
    again = await buy(client, admin, prog, alice, BOB_STRIPE, event="order_2")
    assert await drain(dispatcher) == 1
    row = await fulfilment_of(client, admin, again["rewards"][0]["id"])
    assert row["status"] == "pending" and "refused the key" in row["error"]


async def test_a_clawed_back_promotion_code_is_deactivated_unless_redeemed(
    client: AsyncClient, app: Any, stripe_api: FakeStripe, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, COUPON)
    first = await buy(client, admin, prog, alice, BOB_STRIPE)
    second = await buy(client, admin, prog, alice, BOB_STRIPE, event="order_2")
    await drain(dispatcher)  # the first purchase only pays (first_purchase rule)
    assert second["rewards"] == []
    (promotion,) = stripe_api.promotion_codes.values()
    await post_refund(client, admin, first["id"], refund_id="r1")
    assert await drain(dispatcher) == 1
    (update,) = stripe_api.calls("POST /v1/promotion_codes/{id}")
    assert update.path == f"/v1/promotion_codes/{promotion['id']}"
    assert update.parsed == {"active": "false"}
    assert promotion["active"] is False
    row = await fulfilment_of(client, admin, first["rewards"][0]["id"])
    assert row["status"] == "revoked"

"""Coupons, store credit and gift cards in Shopify, against a local Admin GraphQL API.

The fake (tests/fakes/shopify.py) answers the documented shapes; each test asserts the
requests the dispatcher made (operation, variables, the access token header, the pinned API
version) and what the service recorded: the reward paid, the fulfilment's code and reference.
"""

import asyncio
from datetime import timedelta
from typing import Any

from httpx import AsyncClient

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from tests.factories import auth
from tests.fakes.shopify import TOKEN, VERSION_PATH, FakeShopify
from tests.fulfilment_helpers import (  # noqa: F401
    ALICE_SHOPIFY,
    BOB_SHOPIFY,
    buy,
    dispatcher_fixture,
    drain,
    fulfilment_of,
    program_paying,
    reward,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import get_conversion, post_refund

GID = "gid://shopify/Customer/"
REFEREE_COUPON = {
    "recipient": "referee",
    "kind": "fixed",
    "amount": "10.00",
    "fulfilment": "coupon",
    "fulfilment_provider": "shopify",
}


async def test_a_referee_coupon_is_minted_for_the_customer_once_and_single_use(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON)
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    (answered,) = bought["rewards"]
    assert answered["status"] == "approved"
    assert answered["fulfilment_method"] == "coupon"
    assert answered["fulfilment"]["status"] == "pending"
    assert answered["fulfilment"]["code"] is None  # not issued yet

    assert await drain(dispatcher) == 1

    (create,) = shopify.calls("discountCodeBasicCreate")
    assert create.path == VERSION_PATH
    assert create.headers["x-shopify-access-token"] == TOKEN
    assert create.parsed["kind"] == "mutation"
    given = create.parsed["variables"]["basicCodeDiscount"]
    assert given["code"].startswith("REF") and len(given["code"]) == 16
    assert given["usageLimit"] == 1 and given["appliesOncePerCustomer"] is True
    assert given["context"] == {"customers": {"add": [f"{GID}{BOB_SHOPIFY}"]}}
    assert given["customerGets"] == {
        "value": {"discountAmount": {"amount": "10.00", "appliesOnEachItem": False}},
        "items": {"all": True},
    }
    # A first attempt creates at once; only a retry looks the code up first.
    assert shopify.calls("codeDiscountNodeByCode") == []

    node_id = shopify.discounts[given["code"]]["id"]
    paid = await reward(client, admin, answered["id"])
    assert paid["status"] == "paid" and paid["payout_reference"] == node_id
    assert paid["fulfilment"] == {
        "id": answered["fulfilment"]["id"],
        "method": "coupon",
        "provider": "shopify",
        "status": "fulfilled",
        "code": given["code"],
        "reference": node_id,
        "error": None,
    }
    row = await fulfilment_of(client, admin, answered["id"])
    assert (row["status"], row["amount"], row["currency"], row["attempts"]) == (
        "fulfilled",
        "10.00",
        "USD",
        1,
    )
    again = await get_conversion(client, admin, bought["id"])
    assert again["rewards"][0]["fulfilment"]["code"] == given["code"]
    assert await drain(dispatcher) == 0  # nothing more to do, ever
    assert len(shopify.discounts) == 1


async def test_a_percent_reward_becomes_a_fixed_coupon_and_coupon_percent_a_percent_one(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    percent = REFEREE_COUPON | {"kind": "percent", "percent": "12.5", "amount": None}
    percent_off = REFEREE_COUPON | {"coupon_percent": "15"}
    admin, prog, alice = await program_paying(client, app, percent, percent_off)
    await buy(client, admin, prog, alice, str(BOB_SHOPIFY), "99.99")
    assert await drain(dispatcher) == 2
    values = sorted(
        (
            v["basicCodeDiscount"]["customerGets"]["value"]
            for v in shopify.variables("discountCodeBasicCreate")
        ),
        key=str,
    )
    # 12.5 % of 99.99 = 12.49875 → 12.50 off, as a fixed amount; the other code: 15 % off.
    assert values == [
        {"discountAmount": {"amount": "12.50", "appliesOnEachItem": False}},
        {"percentage": 0.15},
    ]


async def test_store_credit_finds_the_referrer_by_email_and_credits_the_amount(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    rule = {
        "recipient": "referrer",
        "kind": "fixed",
        "amount": "5.00",
        "fulfilment": "store_credit",
        "fulfilment_provider": "shopify",
    }
    admin, prog, alice = await program_paying(client, app, rule)
    bought = await buy(client, admin, prog, alice, "bob")
    assert await drain(dispatcher) == 1
    # alice's external_id is not a Shopify id: she is found by her email.
    (lookup,) = shopify.variables("customers")
    assert lookup["query"] == 'email:"alice@example.com"'
    (credit,) = shopify.variables("storeCreditAccountCredit")
    assert credit == {
        "id": f"{GID}{ALICE_SHOPIFY}",
        "creditInput": {"creditAmount": {"amount": "5.00", "currencyCode": "USD"}},
    }
    (transaction,) = shopify.credits[f"{GID}{ALICE_SHOPIFY}"]
    paid = await reward(client, admin, bought["rewards"][0]["id"])
    assert paid["status"] == "paid"
    assert paid["fulfilment"]["reference"] == transaction["id"]
    assert paid["fulfilment"]["code"] is None


async def test_a_gift_card_carries_the_chosen_code_for_the_customer(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    rule = {
        "recipient": "referee",
        "kind": "fixed",
        "amount": "25.00",
        "fulfilment": "gift_card",
        "fulfilment_provider": "shopify",
    }
    admin, prog, alice = await program_paying(client, app, rule)
    bought = await buy(client, admin, prog, alice, f"{GID}{BOB_SHOPIFY}")
    assert await drain(dispatcher) == 1
    (created,) = shopify.variables("giftCardCreate")
    given = created["input"]
    assert given["initialValue"] == "25.00"
    assert given["customerId"] == f"{GID}{BOB_SHOPIFY}"
    paid = await reward(client, admin, bought["rewards"][0]["id"])
    assert paid["fulfilment"]["code"] == given["code"]
    assert paid["fulfilment"]["reference"] == shopify.gift_cards[given["code"]]["id"]


async def test_a_lost_answer_is_found_by_its_code_not_issued_again(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    """The create is done after the dispatcher gave up waiting (1 s): the retry finds it."""
    gift = REFEREE_COUPON | {"fulfilment": "gift_card", "amount": "20.00"}
    credit = REFEREE_COUPON | {"fulfilment": "store_credit", "amount": "3.00"}
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON, gift, credit)
    for field in ("discountCodeBasicCreate", "giftCardCreate", "storeCreditAccountCredit"):
        shopify.stall(field, 1.5)
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    assert await dispatcher.run_once() == 3
    rows = [await fulfilment_of(client, admin, r["id"]) for r in bought["rewards"]]
    assert {row["status"] for row in rows} == {"pending"}
    assert all("did not answer in time" in row["error"] for row in rows), rows
    await asyncio.sleep(1.0)  # the stalled calls complete at the fake meanwhile

    assert await drain(dispatcher, utcnow() + timedelta(minutes=10)) == 3
    assert len(shopify.discounts) == 1 and len(shopify.gift_cards) == 1
    assert len(shopify.credits[f"{GID}{BOB_SHOPIFY}"]) == 1
    # Each retry looked first and made nothing.
    assert len(shopify.calls("discountCodeBasicCreate")) == 1
    assert len(shopify.calls("giftCardCreate")) == 1
    assert len(shopify.calls("storeCreditAccountCredit")) == 1
    assert len(shopify.calls("codeDiscountNodeByCode")) == 1
    for answered in bought["rewards"]:
        paid = await reward(client, admin, answered["id"])
        assert paid["status"] == "paid" and paid["fulfilment"]["status"] == "fulfilled"
    (coupon,) = [r for r in bought["rewards"] if r["fulfilment_method"] == "coupon"]
    code = (await reward(client, admin, coupon["id"]))["fulfilment"]["code"]
    assert code in shopify.discounts


async def test_a_refusal_fails_at_once_and_is_listed_and_retryable(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON)
    # "carol" is neither a Shopify customer id nor an email, and the purchase gave none.
    bought = await buy(client, admin, prog, alice, "carol")
    assert await drain(dispatcher) == 1
    row = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert row["status"] == "failed" and "not a Shopify customer" in row["error"]
    listed = await client.get("/v1/fulfilments?status=failed", headers=auth(admin))
    assert [r["id"] for r in listed.json()["data"]] == [row["id"]]
    assert (await reward(client, admin, bought["rewards"][0]["id"]))["status"] == "approved"

    retried = await client.post(f"/v1/fulfilments/{row['id']}/retry", headers=auth(admin))
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    assert await drain(dispatcher) == 1  # still no such customer: failed again
    assert (await fulfilment_of(client, admin, bought["rewards"][0]["id"]))["status"] == "failed"


async def test_throttling_and_5xx_are_retried_with_backoff(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON)
    shopify.fail("discountCodeBasicCreate", 503)
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    assert await drain(dispatcher) == 1
    row = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert row["status"] == "pending" and row["error"] == "Shopify answered 503."
    # Not due again before the backoff (30 s ± 25 %).
    assert await dispatcher.run_once(utcnow() + timedelta(seconds=20)) == 0
    assert await drain(dispatcher, utcnow() + timedelta(seconds=40)) == 1
    assert (await fulfilment_of(client, admin, bought["rewards"][0]["id"]))["status"] == (
        "fulfilled"
    )
    assert len(shopify.discounts) == 1


async def test_a_full_refund_disables_the_unused_code_and_settles_the_clawback(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON)
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    await drain(dispatcher)
    reward_id = bought["rewards"][0]["id"]
    code = (await reward(client, admin, reward_id))["fulfilment"]["code"]
    refunded = await post_refund(client, admin, bought["id"], refund_id="r1")
    assert refunded.status_code == 201, refunded.text
    assert (await fulfilment_of(client, admin, reward_id))["status"] == "revoking"

    assert await drain(dispatcher) == 1
    (deactivate,) = shopify.variables("discountCodeDeactivate")
    assert deactivate == {"id": shopify.discounts[code]["id"]}
    assert shopify.discounts[code]["status"] == "EXPIRED"
    row = await fulfilment_of(client, admin, reward_id)
    assert row["status"] == "revoked" and row["revoked_at"] is not None
    rows = (await client.get("/v1/rewards", headers=auth(admin))).json()["data"]
    (clawback,) = [r for r in rows if r["entry_type"] == "clawback"]
    assert clawback["status"] == "paid" and clawback["payout_reference"] == f"revoked {code}"


async def test_a_used_code_is_kept_and_its_clawback_left_for_the_next_payout(
    client: AsyncClient, app: Any, shopify: FakeShopify, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await program_paying(client, app, REFEREE_COUPON)
    bought = await buy(client, admin, prog, alice, str(BOB_SHOPIFY))
    await drain(dispatcher)
    reward_id = bought["rewards"][0]["id"]
    code = (await reward(client, admin, reward_id))["fulfilment"]["code"]
    shopify.discounts[code]["usage"] = 1
    await post_refund(client, admin, bought["id"], refund_id="r1")
    await drain(dispatcher)
    assert shopify.calls("discountCodeDeactivate") == []
    row = await fulfilment_of(client, admin, reward_id)
    assert row["status"] == "kept" and "nets out" in row["error"]
    rows = (await client.get("/v1/rewards", headers=auth(admin))).json()["data"]
    (clawback,) = [r for r in rows if r["entry_type"] == "clawback"]
    assert clawback["status"] == "approved"  # owed back: the payout helper nets it out

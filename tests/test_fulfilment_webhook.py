"""The fulfilment webhook: a signed request per fulfilment to any issuer, deduped on its
webhook-id. The local issuer (tests/fakes/issuer.py) verifies the Standard Webhooks signature
with the `standardwebhooks` package, as the README's receiver contract asks."""

import asyncio
from datetime import timedelta
from typing import Any

from httpx import AsyncClient
from standardwebhooks import Webhook

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from tests.fakes.issuer import FakeIssuer
from tests.fulfilment_helpers import (  # noqa: F401
    buy,
    connect_issuer,
    dispatcher_fixture,
    drain,
    fulfilment_of,
    issuer_fixture,
    reward,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import add_rule, post_refund, setup_program

GIFT = {
    "recipient": "referee",
    "kind": "fixed",
    "amount": "25.00",
    "fulfilment": "gift_card",
    "fulfilment_provider": "webhook",
}


async def _program(
    client: AsyncClient, app: Any, issuer: FakeIssuer, *rules: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    admin, prog, alice = await setup_program(client, app)
    created = await connect_issuer(client, admin, prog["id"], issuer)
    assert created["signing_secret"].startswith("whsec_")
    assert created["prefix"] == created["signing_secret"][:10]
    for rule in rules:
        await add_rule(client, admin, prog["id"], **rule)
    return admin, prog, alice


async def test_the_issuer_gets_a_signed_request_and_its_reference_is_recorded(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, GIFT)
    bought = await buy(client, admin, prog, alice, "bob", email="bob@example.com")
    answered = bought["rewards"][0]
    assert await drain(dispatcher) == 1

    (request,) = issuer.calls("issue")
    assert issuer.secret is not None
    event = Webhook(issuer.secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == answered["fulfilment"]["id"]
    assert event["type"] == "fulfilment.requested"
    data = event["data"]
    assert data["reward_id"] == answered["id"]
    assert (data["method"], data["recipient"], data["recipient_id"]) == (
        "gift_card",
        "referee",
        "bob",
    )
    assert (data["amount"], data["currency"], data["email"]) == ("25.00", "USD", "bob@example.com")
    assert data["code"].startswith("REF")

    paid = await reward(client, admin, answered["id"])
    assert paid["status"] == "paid"
    assert paid["fulfilment"]["reference"] == "gc_1" and paid["fulfilment"]["code"] == data["code"]


async def test_a_retry_carries_the_same_webhook_id_and_the_issuer_issues_once(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, GIFT)
    issuer.stall("issue", 1.5)
    bought = await buy(client, admin, prog, alice, "bob")
    assert await dispatcher.run_once() == 1
    await asyncio.sleep(1.0)
    assert await drain(dispatcher, utcnow() + timedelta(minutes=10)) == 1
    first, second = issuer.calls("issue")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert len(issuer.issued) == 1
    assert (await reward(client, admin, bought["rewards"][0]["id"]))["fulfilment"][
        "reference"
    ] == "gc_1"


async def test_a_refusal_fails_at_once_and_a_5xx_is_retried(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, GIFT)
    issuer.fail("issue", 422)
    refused = await buy(client, admin, prog, alice, "bob")
    await drain(dispatcher)
    row = await fulfilment_of(client, admin, refused["rewards"][0]["id"])
    assert row["status"] == "failed" and row["error"].startswith(
        "The fulfilment webhook answered 422"
    )

    issuer.fail("issue", 503)
    retried = await buy(client, admin, prog, alice, "carol", event="order_2")
    await drain(dispatcher)
    assert (await fulfilment_of(client, admin, retried["rewards"][0]["id"]))["status"] == "pending"
    await drain(dispatcher, utcnow() + timedelta(minutes=5))
    row = await fulfilment_of(client, admin, retried["rewards"][0]["id"])
    assert row["status"] == "fulfilled" and row["attempts"] == 2


async def test_a_clawed_back_coupon_is_revoked_through_the_webhook(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    coupon = GIFT | {"fulfilment": "coupon"}
    admin, prog, alice = await _program(client, app, issuer, coupon)
    bought = await buy(client, admin, prog, alice, "bob")
    await drain(dispatcher)
    await post_refund(client, admin, bought["id"], refund_id="r1")
    await drain(dispatcher)
    (request,) = issuer.calls("revoke")
    fulfilment_id = bought["rewards"][0]["fulfilment"]["id"]
    assert request.headers["webhook-id"] == f"{fulfilment_id}:revoke"
    assert Webhook(issuer.secret or "").verify(request.body, request.headers)["type"] == (
        "fulfilment.revoke_requested"
    )
    assert (await fulfilment_of(client, admin, bought["rewards"][0]["id"]))["status"] == "revoked"


async def test_a_percent_coupon_is_requested_with_its_percent_in_plain_digits(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    # 10 % is "10", never Decimal's exponent form "1E+1" that an issuer would have to parse.
    coupon = GIFT | {"fulfilment": "coupon", "coupon_percent": "10"}
    admin, prog, alice = await _program(client, app, issuer, coupon)
    await buy(client, admin, prog, alice, "bob")
    assert await drain(dispatcher) == 1
    (request,) = issuer.calls("issue")
    data = Webhook(issuer.secret or "").verify(request.body, request.headers)["data"]
    assert (data["method"], data["percent_off"]) == ("coupon", "10")

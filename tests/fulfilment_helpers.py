"""Fixtures and factories for fulfilment: the fake providers, a dispatcher pointed at them,
programs with credentials and rules."""

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
from httpx import AsyncClient

from app.fulfilment.dispatcher import Dispatcher
from tests.factories import auth
from tests.fakes.issuer import FakeIssuer
from tests.fakes.shopify import TOKEN, FakeShopify
from tests.fakes.stripe import SECRET_KEY, FakeStripe
from tests.money_factories import add_rule, purchase, setup_program
from tests.settings import settings_for_tests

SHOP = "acme-test.myshopify.com"
# Alice (the referrer) and Bob (the referee) as customers of the fake shop and Stripe account.
ALICE_SHOPIFY, BOB_SHOPIFY = 7001, 7002
ALICE_STRIPE, BOB_STRIPE = "cus_alice0001", "cus_bob0002"


@pytest.fixture(name="shopify")
def shopify_fixture() -> Iterator[FakeShopify]:
    server = FakeShopify()
    server.add_customer(ALICE_SHOPIFY, "alice@example.com")
    server.add_customer(BOB_SHOPIFY, "bob@example.com")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="stripe_api")
def stripe_fixture() -> Iterator[FakeStripe]:
    server = FakeStripe()
    server.add_customer(ALICE_STRIPE, "alice@example.com")
    server.add_customer(BOB_STRIPE, "bob@example.com")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="issuer")
def issuer_fixture() -> Iterator[FakeIssuer]:
    server = FakeIssuer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="dispatcher")
async def dispatcher_fixture(
    app: Any, shopify: FakeShopify, stripe_api: FakeStripe
) -> AsyncIterator[Dispatcher]:
    """A dispatcher on the suite's database whose providers are the fakes; short timeouts."""
    settings = settings_for_tests(
        shopify_admin_base_url=shopify.url,
        stripe_api_base_url=stripe_api.url,
        fulfilment_timeout_seconds=1.0,
        fulfilment_retry_base_seconds=30,
        fulfilment_retry_max_delay_seconds=600,
        fulfilment_retry_window_hours=1,
    )
    dispatcher = Dispatcher(app.state.sessionmaker, settings)
    try:
        yield dispatcher
    finally:
        await dispatcher.aclose()


async def add_provider(client: AsyncClient, key: str, program_id: str, **body: Any) -> Any:
    response = await client.post(
        f"/v1/programs/{program_id}/fulfilment-providers", json=body, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def connect_shopify(client: AsyncClient, key: str, program_id: str) -> Any:
    return await add_provider(
        client, key, program_id, provider="shopify", shop_domain=SHOP, access_token=TOKEN
    )


async def connect_stripe(client: AsyncClient, key: str, program_id: str) -> Any:
    return await add_provider(client, key, program_id, provider="stripe", secret_key=SECRET_KEY)


async def connect_issuer(client: AsyncClient, key: str, program_id: str, issuer: FakeIssuer) -> Any:
    created = await add_provider(client, key, program_id, provider="webhook", url=issuer.hook_url)
    issuer.secret = created["signing_secret"]
    return created


async def program_paying(
    client: AsyncClient, app: Any, *rules: dict[str, Any], **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An admin key, a program (USD) with every provider connected as the rules need, alice
    (Shopify customer 7001 by id) and the rules."""
    admin, prog, alice = await setup_program(client, app, **program)
    providers = {rule.get("fulfilment_provider") for rule in rules}
    if "shopify" in providers:
        await connect_shopify(client, admin, prog["id"])
    if "stripe" in providers:
        await connect_stripe(client, admin, prog["id"])
    for rule in rules:
        await add_rule(client, admin, prog["id"], **rule)
    return admin, prog, alice


async def buy(
    client: AsyncClient,
    admin: str,
    prog: dict[str, Any],
    alice: dict[str, Any],
    customer: str,
    amount: str = "80.00",
    event: str = "order_1",
    **extra: Any,
) -> dict[str, Any]:
    """A purchase by `customer` with alice's code."""
    code = alice["default_code"]["code"]
    return await purchase(client, admin, prog, event, customer, amount, code=code, **extra)


async def fulfilment_of(client: AsyncClient, key: str, reward_id: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/fulfilments", params={"reward_id": reward_id}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


async def reward(client: AsyncClient, key: str, reward_id: str) -> dict[str, Any]:
    response = await client.get("/v1/rewards", params={"limit": 200}, headers=auth(key))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(r for r in response.json()["data"] if r["id"] == reward_id)
    return found


async def drain(dispatcher: Dispatcher, now: datetime | None = None, rounds: int = 5) -> int:
    """Dispatch rounds until nothing is due at `now`; returns the attempts made."""
    total = 0
    for _ in range(rounds):
        done = await dispatcher.run_once(now)
        total += done
        if done == 0:
            break
    return total

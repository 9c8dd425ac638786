"""SIGKILL the service between the provider's work and the commit: nothing issued twice, nothing
lost.

A real uvicorn process runs the fulfilment dispatcher against the local providers: a Shopify
coupon, a Stripe balance credit and a gift card through the fulfilment webhook, all for one
purchase. Each fake provider does the call (the coupon exists, the credit is booked, the card is
issued), then holds its answer; the test SIGKILLs the service meanwhile, so the outcome is never
recorded. After a restart the lease runs out, the dispatcher tries again, and each provider's
exactly-once mechanism finds the first: Shopify by the code chosen when the job was written,
Stripe by the idempotency key (or the credit's reward_id metadata), the issuer by webhook-id.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.fakes.issuer import FakeIssuer
from tests.fakes.shopify import TOKEN, FakeShopify
from tests.fakes.stripe import SECRET_KEY, FakeStripe
from tests.faults.server import ServiceProcess, create_admin_key, running_service, service_env
from tests.fulfilment_helpers import (  # noqa: F401
    ALICE_STRIPE,
    BOB_SHOPIFY,
    SHOP,
    issuer_fixture,
    shopify_fixture,
    stripe_fixture,
)
from tests.settings import DATABASE_URL

pytestmark = pytest.mark.postgres

# With a 1 s timeout an attempt may take 4 s, and the lease is 9 s: the restart waits that out.
SETTLE_SECONDS = 60
RULES = [
    {"recipient": "referee", "fulfilment": "coupon", "fulfilment_provider": "shopify"},
    {"recipient": "referrer", "fulfilment": "store_credit", "fulfilment_provider": "stripe"},
    {"recipient": "referee", "fulfilment": "gift_card", "fulfilment_provider": "webhook"},
]


async def _sql(query: str, **params: Any) -> list[Any]:
    engine = create_async_engine(DATABASE_URL, poolclass=NullPool)
    try:
        async with engine.begin() as db:
            result = await db.execute(text(query), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture
async def service(
    tmp_path: Path, shopify: FakeShopify, stripe_api: FakeStripe
) -> AsyncIterator[ServiceProcess]:
    # Earlier tests' due jobs would go to these fakes too: they are not this test's business.
    await _sql(
        "UPDATE fulfilments SET status = 'cancelled' WHERE status IN ('pending', 'revoking')"
    )
    env = service_env(
        DATABASE_URL,
        database_pool_size=5,
        fulfilment_dispatch_interval_seconds=0.2,
        fulfilment_timeout_seconds=1,
        fulfilment_retry_base_seconds=1,
        shopify_admin_base_url=shopify.url,
        stripe_api_base_url=stripe_api.url,
        webhook_allow_private_targets="true",
        webhook_dispatch_interval_seconds=0,
    )
    async with running_service(env, tmp_path / "service.log") as process:
        yield process


async def _seed(http: httpx.AsyncClient, issuer: FakeIssuer) -> tuple[str, dict[str, Any]]:
    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await http.post(path, json=body)
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    program = await post(
        "/v1/programs",
        {"name": "crash fulfilment", "landing_url": "https://shop.example.com/", "currency": "USD"},
    )
    pid = program["id"]
    providers = f"/v1/programs/{pid}/fulfilment-providers"
    await post(providers, {"provider": "shopify", "shop_domain": SHOP, "access_token": TOKEN})
    await post(providers, {"provider": "stripe", "secret_key": SECRET_KEY})
    hook = await post(providers, {"provider": "webhook", "url": issuer.hook_url})
    issuer.secret = hook["signing_secret"]
    for rule in RULES:
        await post(f"/v1/programs/{pid}/reward-rules", rule | {"kind": "fixed", "amount": "7.00"})
    alice = await post(
        f"/v1/programs/{pid}/referrers", {"external_id": "alice", "email": "alice@example.com"}
    )
    bought = await post(
        "/v1/conversions",
        {
            "program_id": pid,
            "event_id": "crash-order-1",
            "customer_id": str(BOB_SHOPIFY),
            "amount": "70.00",
            "currency": "USD",
            "code": alice["default_code"]["code"],
        },
    )
    return pid, bought


async def _fulfilments(http: httpx.AsyncClient, program_id: str) -> list[dict[str, Any]]:
    response = await http.get("/v1/fulfilments", params={"program_id": program_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def test_a_kill_between_the_provider_call_and_the_commit_issues_nothing_twice(
    service: ServiceProcess, shopify: FakeShopify, stripe_api: FakeStripe, issuer: FakeIssuer
) -> None:
    shopify.hold("discountCodeBasicCreate")
    stripe_api.hold("POST /v1/customers/{id}/balance_transactions")
    issuer.hold("issue")
    key = await create_admin_key(DATABASE_URL)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=service.base_url, headers=headers, timeout=10) as http:
        program_id, bought = await _seed(http, issuer)
        assert {r["fulfilment"]["status"] for r in bought["rewards"]} == {"pending"}
        for fake in (shopify, stripe_api, issuer):
            assert await asyncio.to_thread(fake.holding.wait, 20), "the call never came"

        # Each provider has done its work; its answer is held. Kill before the outcome is stored.
        await service.kill()
        for fake in (shopify, stripe_api, issuer):
            fake.release()
        stored = await _sql(
            "SELECT status, in_flight, reference FROM fulfilments WHERE program_id = :pid",
            pid=UUID(program_id),
        )
        assert sorted(stored) == [("pending", True, None)] * 3
        assert len(shopify.discounts) == 1 and len(issuer.issued) == 1
        assert len(stripe_api.balance[ALICE_STRIPE]) == 1

        await service.start()
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            rows = await _fulfilments(http, program_id)
            if all(row["status"] == "fulfilled" for row in rows):
                break
            await asyncio.sleep(0.5)
        assert [row["status"] for row in rows] == ["fulfilled"] * 3, (rows, service.log_tail())

        # Nothing twice: one discount, one credit, one gift card; the retries looked first.
        (code,) = shopify.discounts
        assert len(shopify.calls("discountCodeBasicCreate")) == 1
        assert shopify.calls("codeDiscountNodeByCode")
        (credit,) = stripe_api.balance[ALICE_STRIPE]
        assert len(issuer.issued) == 1
        first, second = issuer.calls("issue")
        assert first.headers["webhook-id"] == second.headers["webhook-id"]

        by_method = {row["method"]: row for row in rows}
        assert by_method["coupon"]["code"] == code
        assert by_method["coupon"]["reference"] == shopify.discounts[code]["id"]
        assert by_method["store_credit"]["reference"] == credit["id"]
        assert (
            by_method["gift_card"]["reference"] == next(iter(issuer.issued.values()))["reference"]
        )
        assert all(row["attempts"] == 2 for row in rows), rows
        ledger = await http.get("/v1/rewards", params={"program_id": program_id})
        assert [r["status"] for r in ledger.json()["data"]] == ["paid"] * 3

"""Payout batches under races, on a real Postgres: no reward in two batches, nothing lost."""

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from app.payouts.models import PayoutBatch, PayoutLine
from app.rewards.models import Reward
from tests.factories import db_all
from tests.money_factories import Shop
from tests.payout_factories import batch_call, create_batch, earn, pay_to, referrer_of

pytestmark = pytest.mark.postgres

CASH = {
    "recipient": "referrer",
    "kind": "fixed",
    "amount": "10.00",
    "fulfilment": "cash",
    "trigger": "every_purchase",
}


async def paid_referrers(shop: Shop, count: int) -> list[dict[str, Any]]:
    await shop.rule(**CASH)
    referrers = []
    for index in range(count):
        referrer = await referrer_of(shop, f"ref{index}")
        await pay_to(shop.client, shop.admin, referrer["id"], "paypal", f"r{index}@example.com")
        referrers.append(referrer)
    return referrers


async def test_concurrent_batch_creations_take_each_reward_once(shop: Shop, app: Any) -> None:
    referrers = await paid_referrers(shop, 4)
    for index, referrer in enumerate(referrers):
        for sale in range(index + 1):
            await earn(shop, referrer, f"c{index}-{sale}")

    responses = await asyncio.gather(*(create_batch(shop) for _ in range(6)))
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 5}, [
        r.text for r in responses
    ]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"empty_batch"}
    (created,) = [r.json() for r in responses if r.status_code == 201]
    assert (created["total"], created["reward_count"]) == ("100.00", 10)

    batches = await db_all(app, select(PayoutBatch))
    assert [str(b.id) for b in batches] == [created["id"]]
    rewards = await db_all(app, select(Reward))
    assert {str(r.payout_batch_id) for r in rewards} == {created["id"]}
    lines = await db_all(app, select(PayoutLine))
    assert sum((line.amount for line in lines), Decimal(0)) == Decimal("100.00")
    assert sum(line.reward_count for line in lines) == len(rewards) == 10


async def test_a_batch_racing_refunds_pays_each_reward_net_of_what_was_refunded(
    shop: Shop, app: Any
) -> None:
    (referrer,) = await paid_referrers(shop, 1)
    sales = [await earn(shop, referrer, f"c{index}") for index in range(8)]
    refunds = [shop.refund(sale) for sale in sales[:4]]
    results = await asyncio.gather(create_batch(shop), *refunds)
    assert results[0].status_code == 201, results[0].text
    assert all(r.status_code == 201 for r in results[1:]), [r.text for r in results[1:]]
    batch_id = UUID(results[0].json()["id"])

    entries = await db_all(app, select(Reward))
    by_adjusted = {e.adjusts_reward_id: e for e in entries if e.adjusts_reward_id}
    refunded = {UUID(sale["rewards"][0]["id"]) for sale in sales[:4]}
    for entry in entries:
        if entry.entry_type != "reward":
            continue
        if entry.id not in refunded:
            assert (entry.status, entry.payout_batch_id) == ("approved", batch_id)
        elif entry.payout_batch_id is None:
            # The refund came first: reversed in place, never batched.
            assert entry.status == "reversed" and entry.id not in by_adjusted
        else:
            # The batch came first: the reward stays in it, a clawback offsets it.
            clawback = by_adjusted[entry.id]
            assert (clawback.amount, clawback.status, clawback.payout_batch_id) == (
                Decimal("-10.0000"),
                "approved",
                None,
            )
    (batch,) = await db_all(app, select(PayoutBatch))
    batched = [e for e in entries if e.payout_batch_id == batch_id]
    assert batch.total == sum((e.amount for e in batched), Decimal(0))
    # Whatever the order, paid plus still owed is what the four kept sales earned.
    owed = sum((e.amount for e in entries if e.status != "reversed"), Decimal(0))
    assert owed == Decimal("40.00")


async def test_concurrent_mark_paid_and_cancel_settle_a_batch_one_way(shop: Shop, app: Any) -> None:
    referrers = await paid_referrers(shop, 3)
    for index, referrer in enumerate(referrers):
        await earn(shop, referrer, f"c{index}")
    batch = (await create_batch(shop)).json()
    calls = [batch_call(shop, batch, "mark-paid", {"reference": f"P{n}"}) for n in range(3)]
    calls += [batch_call(shop, batch, "cancel") for _ in range(3)]
    responses = await asyncio.gather(*calls)
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 5}, [
        r.text for r in responses
    ]
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    rewards = await db_all(app, select(Reward))
    if winner["status"] == "paid":
        assert {(r.status, r.payout_reference) for r in rewards} == {("paid", winner["reference"])}
    else:
        assert {(r.status, r.payout_batch_id) for r in rewards} == {("approved", None)}

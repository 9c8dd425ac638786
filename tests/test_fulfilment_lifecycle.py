"""When a fulfilment runs, and when it must not: jobs follow the ledger in its transactions.

Written with the reward, released by the approval (at once, by hand, or by the sweep — a
reward that only *reads* approved is not issued), cancelled by a reversal or a payment by hand,
taken back when the reward is reversed while its call is out; failures retry for the window,
then `failed` (with `reward.fulfilment_failed`), listed for ops and retryable.
"""

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from app.rewards.models import Reward
from app.rewards.service import approve_due
from app.webhooks.models import WebhookEvent
from tests.factories import assert_problem, auth
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
from tests.money_factories import add_rule, post_refund, setup_program, transition

COUPON = {
    "recipient": "referee",
    "kind": "fixed",
    "amount": "10.00",
    "fulfilment": "coupon",
    "fulfilment_provider": "webhook",
}


async def _program(
    client: AsyncClient, app: Any, issuer: FakeIssuer, **rule: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    admin, prog, alice = await setup_program(client, app)
    await connect_issuer(client, admin, prog["id"], issuer)
    await add_rule(client, admin, prog["id"], **(COUPON | rule))
    return admin, prog, alice


async def _events(app: Any, event_type: str) -> list[dict[str, Any]]:
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(WebhookEvent.payload)
            .where(WebhookEvent.event_type == event_type)
            .order_by(WebhookEvent.created_at)
        )
        return list(rows)


async def _listen(client: AsyncClient, admin: str, program_id: str) -> None:
    response = await client.post(
        "/v1/webhook-endpoints",
        json={
            "url": "http://127.0.0.1:9/events",
            "program_id": program_id,
            "event_types": ["reward.fulfilled", "reward.fulfilment_failed", "reward.paid"],
        },
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text


async def test_a_held_reward_waits_and_is_issued_when_approved_by_hand(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, hold_days=14)
    bought = await buy(client, admin, prog, alice, "bob")
    answered = bought["rewards"][0]
    assert answered["status"] == "pending" and answered["fulfilment"]["status"] == "waiting"
    assert await drain(dispatcher) == 0
    assert issuer.requests == []
    approved = await transition(client, admin, answered["id"], "approve")
    assert approved.json()["fulfilment"]["status"] == "pending"
    assert await drain(dispatcher) == 1
    assert (await reward(client, admin, answered["id"]))["status"] == "paid"


async def test_a_reward_that_only_reads_approved_is_issued_when_the_sweep_stores_it(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, hold_days=1)
    bought = await buy(client, admin, prog, alice, "bob")
    reward_id = bought["rewards"][0]["id"]
    async with app.state.sessionmaker() as session:
        past = utcnow() - timedelta(minutes=1)
        await session.execute(
            update(Reward).where(Reward.id == UUID(reward_id)).values(hold_until=past)
        )
        await session.commit()
    shown = await reward(client, admin, reward_id)
    assert shown["status"] == "approved"  # reads never write…
    assert shown["fulfilment"]["status"] == "waiting"  # …so nothing is issued yet
    assert await drain(dispatcher) == 0
    async with app.state.sessionmaker() as session:
        assert await approve_due(session, utcnow()) == 1
        await session.commit()
    assert (await fulfilment_of(client, admin, reward_id))["status"] == "pending"
    assert await drain(dispatcher) == 1
    assert (await reward(client, admin, reward_id))["status"] == "paid"


async def test_a_reward_reversed_or_paid_by_hand_before_its_turn_issues_nothing(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer, trigger="every_purchase")
    first = await buy(client, admin, prog, alice, "bob")
    second = await buy(client, admin, prog, alice, "bob", event="order_2")
    third = await buy(client, admin, prog, alice, "bob", event="order_3")
    reversed_ = await transition(
        client, admin, first["rewards"][0]["id"], "reverse", {"reason": "fraud"}
    )
    assert reversed_.json()["fulfilment"]["status"] == "cancelled"
    by_hand = await transition(client, admin, second["rewards"][0]["id"], "mark-paid", {})
    assert by_hand.json()["fulfilment"] == by_hand.json()["fulfilment"] | {
        "status": "cancelled",
        "error": "paid by hand",
    }
    refunded = await post_refund(client, admin, third["id"], refund_id="r1")
    assert refunded.status_code == 201
    assert await drain(dispatcher) == 0
    assert issuer.requests == []
    rows = [await fulfilment_of(client, admin, b["rewards"][0]["id"]) for b in (first, third)]
    assert [row["error"] for row in rows] == ["reversed: fraud", "reversed by a refund"]


async def test_a_reward_reversed_while_its_coupon_is_being_made_gets_it_disabled(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer)
    bought = await buy(client, admin, prog, alice, "bob")
    reward_id = bought["rewards"][0]["id"]
    issuer.hold("issue")
    dispatching = asyncio.create_task(dispatcher.run_once())
    await asyncio.to_thread(issuer.holding.wait, 10)
    reversed_ = await transition(client, admin, reward_id, "reverse", {"reason": "fraud"})
    assert reversed_.status_code == 200, reversed_.text
    issuer.release()
    assert await dispatching == 1
    row = await fulfilment_of(client, admin, reward_id)
    assert row["status"] == "revoking" and "disabling the code" in row["error"]
    assert await drain(dispatcher) == 1
    assert (await fulfilment_of(client, admin, reward_id))["status"] == "revoked"
    assert len(issuer.revoked) == 1
    assert (await reward(client, admin, reward_id))["status"] == "reversed"


async def test_a_partial_refund_keeps_the_coupon_and_leaves_the_clawback_owed(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(
        client, app, issuer, kind="percent", percent="10", amount=None
    )
    bought = await buy(client, admin, prog, alice, "bob", "80.00")
    await drain(dispatcher)
    await post_refund(client, admin, bought["id"], refund_id="r1", amount="40.00")
    assert await drain(dispatcher) == 0
    row = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert row["status"] == "fulfilled"
    rows = (await client.get("/v1/rewards", headers=auth(admin))).json()["data"]
    (clawback,) = [r for r in rows if r["entry_type"] == "clawback"]
    assert (clawback["amount"], clawback["status"]) == ("-4.00", "approved")


async def test_failures_retry_for_the_window_then_fail_with_an_event_and_can_be_retried(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer)
    await _listen(client, admin, prog["id"])
    issuer.fail("issue", 500, times=50)
    bought = await buy(client, admin, prog, alice, "bob")
    reward_id = bought["rewards"][0]["id"]
    start = utcnow()
    moments = [start + timedelta(minutes=minutes) for minutes in (0, 1, 3, 6, 12, 25, 50, 61)]
    for moment in moments:
        await drain(dispatcher, moment)
    row = await fulfilment_of(client, admin, reward_id)
    assert row["status"] == "failed" and row["error"] == (
        'The fulfilment webhook answered 500: {"errors": "scripted failure"}'
    )
    assert 4 <= row["attempts"] <= 8
    (failed,) = await _events(app, "reward.fulfilment_failed")
    assert failed["data"]["id"] == reward_id
    assert failed["data"]["fulfilment"]["status"] == "failed"

    listed = await client.get(
        "/v1/fulfilments",
        params={"status": "failed", "program_id": prog["id"]},
        headers=auth(admin),
    )
    assert [r["id"] for r in listed.json()["data"]] == [row["id"]]
    issuer._faults.clear()
    retried = await client.post(f"/v1/fulfilments/{row['id']}/retry", headers=auth(admin))
    assert retried.json()["status"] == "pending"
    assert await drain(dispatcher) == 1
    (fulfilled,) = await _events(app, "reward.fulfilled")
    assert fulfilled["data"]["fulfilment"]["code"].startswith("REF")
    assert fulfilled["data"]["status"] == "paid"
    assert fulfilled["data"]["fulfilment"]["reference"] == "gc_1"
    paid_events = [e for e in await _events(app, "reward.paid") if e["data"]["id"] == reward_id]
    assert len(paid_events) == 1

    done = await client.post(f"/v1/fulfilments/{row['id']}/retry", headers=auth(admin))
    assert_problem(done, 409, "fulfilment_not_retryable")
    unknown = await client.get(f"/v1/fulfilments/{UUID(int=7)}", headers=auth(admin))
    assert_problem(unknown, 404, "fulfilment_not_found")
    one = await client.get(f"/v1/fulfilments/{row['id']}", headers=auth(admin))
    assert one.json()["status"] == "fulfilled" and one.json()["code"].startswith("REF")


async def test_a_job_whose_credentials_are_gone_waits_for_new_ones(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await _program(client, app, issuer)
    bought = await buy(client, admin, prog, alice, "bob")
    rules = (
        await client.get(f"/v1/programs/{prog['id']}/reward-rules", headers=auth(admin))
    ).json()
    await client.patch(
        f"/v1/reward-rules/{rules[0]['id']}", json={"active": False}, headers=auth(admin)
    )
    path = f"/v1/programs/{prog['id']}/fulfilment-providers"
    assert (await client.delete(f"{path}/webhook", headers=auth(admin))).status_code == 204
    await drain(dispatcher)
    row = await fulfilment_of(client, admin, bought["rewards"][0]["id"])
    assert row["status"] == "pending" and "no webhook credentials" in row["error"]
    await connect_issuer(client, admin, prog["id"], issuer)
    await drain(dispatcher, utcnow() + timedelta(minutes=5))
    assert (await fulfilment_of(client, admin, bought["rewards"][0]["id"]))["status"] == "fulfilled"


@pytest.mark.postgres
async def test_two_dispatchers_share_the_due_jobs_and_issue_each_once(
    client: AsyncClient, app: Any, issuer: FakeIssuer, dispatcher: Dispatcher
) -> None:
    """Two replicas' rounds at the same moment: SKIP LOCKED gives each job to one of them."""
    admin, prog, alice = await _program(client, app, issuer, trigger="every_purchase")
    for n in range(12):
        await buy(client, admin, prog, alice, f"buyer_{n}", event=f"order_{n}")
    issuer.stall("issue", 0.2, times=12)  # keep the first claim's calls out a little
    twin = Dispatcher(app.state.sessionmaker, dispatcher.settings)
    try:
        counts = await asyncio.gather(dispatcher.run_once(), twin.run_once())
    finally:
        await twin.aclose()
    assert sum(counts) == 12
    assert len(issuer.calls("issue")) == 12 == len(issuer.issued)
    listed = await client.get(
        "/v1/fulfilments", params={"program_id": prog["id"]}, headers=auth(admin)
    )
    assert {row["status"] for row in listed.json()["data"]} == {"fulfilled"}

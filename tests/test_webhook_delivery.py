"""Outbound webhook delivery: the outbox written with each change, signed delivery to a real
receiver on loopback (verified with the standardwebhooks package), retries, backoff, order."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient

from app.rewards.service import approve_due
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.models import WebhookEvent
from tests.factories import assert_problem, auth, make_key, make_program, redeem
from tests.money_factories import add_rule, post_refund, purchase, setup_program, transition
from tests.webhook_helpers import (
    FAR,
    count,
    deliveries,
    dispatch_settings,
    drain,
    make_endpoint,
    outcome_count,
)
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401


@pytest.fixture
async def dispatcher(app: Any) -> AsyncIterator[Dispatcher]:
    worker = Dispatcher(app.state.sessionmaker, dispatch_settings())
    yield worker
    await worker.aclose()


# --- what is sent -----------------------------------------------------------------------------


async def test_every_event_is_delivered_signed_per_standard_webhooks(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    code = alice["default_code"]["code"]
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00")
    await add_rule(client, admin, prog["id"], recipient="referee", kind="percent", percent="10")
    endpoint = await make_endpoint(client, admin, receiver.url, program_id=prog["id"])

    assert (await redeem(client, admin, code, "bob")).status_code == 201
    bought = await purchase(client, admin, prog, "o1", "bob", "50.00", code=code)
    referrer_reward = next(r for r in bought["rewards"] if r["recipient"] == "referrer")
    referee_reward = next(r for r in bought["rewards"] if r["recipient"] == "referee")
    paid = await transition(client, admin, referrer_reward["id"], "mark-paid")
    assert paid.status_code == 200, paid.text
    assert (await post_refund(client, admin, bought["id"], refund_id="rf_1")).status_code == 201

    await drain(dispatcher)
    secret = endpoint["secret"]
    events = [request.verify(secret) for request in receiver.received]
    assert sorted(event["type"] for event in events) == sorted(
        [
            "referral.created",
            "conversion.attributed",
            "reward.created",
            "reward.approved",  # referrer's reward: no hold
            "reward.created",
            "reward.approved",  # referee's
            "reward.paid",
            "conversion.refunded",
            "reward.reversed",  # the referee's unpaid percent reward; the paid one is clawed back
        ]
    )
    by_object: dict[str, list[str]] = {}
    for event in events:
        by_object.setdefault(event["data"]["id"], []).append(event["type"])
    assert by_object[referrer_reward["id"]] == ["reward.created", "reward.approved", "reward.paid"]
    assert by_object[referee_reward["id"]] == [
        "reward.created",
        "reward.approved",
        "reward.reversed",
    ]
    assert by_object[bought["id"]] == ["conversion.attributed", "conversion.refunded"]

    for request in receiver.received:
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["content-type"] == "application/json"
        assert abs(int(request.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
        assert request.headers["webhook-signature"].startswith("v1,")
    assert len({request.headers["webhook-id"] for request in receiver.received}) == len(events)

    attributed = next(e for e in events if e["type"] == "conversion.attributed")
    assert attributed["data"]["referrer_id"] == alice["id"]
    assert {r["recipient"] for r in attributed["data"]["rewards"]} == {"referrer", "referee"}
    refunded = next(e for e in events if e["type"] == "conversion.refunded")
    assert refunded["data"]["refunded_amount"] == "50.00"
    assert refunded["data"]["refund"]["refund_id"] == "rf_1"
    referral = next(e for e in events if e["type"] == "referral.created")
    assert referral["data"]["customer_id"] == "bob" and referral["data"]["source"] == "redemption"
    assert referral["data"]["code"] == code
    assert next(e for e in events if e["type"] == "reward.paid")["data"]["status"] == "paid"
    assert datetime.fromisoformat(events[0]["timestamp"]).tzinfo is not None

    rows = await deliveries(client, admin, endpoint["id"])
    assert {row["status"] for row in rows} == {"succeeded"}
    assert all(row["attempt_count"] == 1 and row["response_status"] == 200 for row in rows)
    assert rows[0]["attempts"][0]["response_excerpt"].startswith('{"received"')


async def test_a_referral_made_by_a_purchase_is_announced(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["referral.created"])
    await purchase(client, admin, prog, "o1", "carol", "20.00", code=alice["default_code"]["code"])
    await purchase(client, admin, prog, "o2", "carol", "20.00")  # same referral: no new event
    await drain(dispatcher)
    [event] = [request.verify(endpoint["secret"]) for request in receiver.received]
    assert event["data"]["source"] == "conversion" and event["data"]["customer_id"] == "carol"


async def test_nothing_is_queued_without_a_listener(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00")
    await make_endpoint(client, admin, receiver.url, program_id=other["id"])
    paid_only = await make_endpoint(client, admin, receiver.url, ["reward.paid"])
    disabled = await make_endpoint(client, admin, receiver.url, enabled=False)
    bought = await purchase(
        client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"]
    )
    assert await count(app, WebhookEvent) == 0  # the other program's endpoint, paid only, off
    await transition(client, admin, bought["rewards"][0]["id"], "mark-paid")
    await drain(dispatcher)
    assert receiver.types() == ["reward.paid"]
    assert await deliveries(client, admin, disabled["id"]) == []
    assert len(await deliveries(client, admin, paid_only["id"])) == 1


async def test_rewards_approved_when_their_hold_ends_are_announced(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await add_rule(
        client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00", hold_days=3
    )
    endpoint = await make_endpoint(client, admin, receiver.url, ["reward.approved"])
    bought = await purchase(
        client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"]
    )
    assert bought["rewards"][0]["status"] == "pending"
    async with app.state.sessionmaker() as session:
        assert await approve_due(session, datetime.now(UTC) + timedelta(days=4)) == 1
        await session.commit()
    await drain(dispatcher)
    [event] = [request.verify(endpoint["secret"]) for request in receiver.received]
    assert event["data"]["id"] == bought["rewards"][0]["id"]
    assert event["data"]["status"] == "approved"


# --- retries, order, failure ------------------------------------------------------------------


async def test_a_500_is_retried_with_backoff_and_the_same_webhook_id(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["conversion.attributed"])
    code = alice["default_code"]["code"]
    retrying, succeeded = outcome_count("retrying"), outcome_count("succeeded")
    receiver.answer(500, 500)
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=code)

    assert await dispatcher.run_once() == 1
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "pending" and row["attempt_count"] == 1
    assert row["response_status"] == 500 and '"status": 500' in row["response_excerpt"]
    assert datetime.fromisoformat(row["next_attempt_at"]) > datetime.now(UTC)
    assert await dispatcher.run_once() == 0  # not due yet: backing off

    assert await dispatcher.run_once(datetime.now(UTC) + FAR) == 1  # 500 again
    assert await dispatcher.run_once(datetime.now(UTC) + 2 * FAR) == 1  # 200
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "succeeded" and row["attempt_count"] == 3
    assert [a["response_status"] for a in row["attempts"]] == [500, 500, 200]
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    for request in receiver.received:
        request.verify(endpoint["secret"])
    assert outcome_count("retrying") - retrying == 2
    assert outcome_count("succeeded") - succeeded == 1


async def test_backoff_grows_exponentially_with_jitter(app: Any) -> None:
    worker = Dispatcher(
        app.state.sessionmaker,
        dispatch_settings(webhook_retry_base_seconds=30, webhook_retry_max_delay_seconds=3600),
    )
    try:
        delays = [worker._backoff(n).total_seconds() for n in range(1, 10)]
    finally:
        await worker.aclose()
    for attempt, delay in enumerate(delays, start=1):
        expected = min(30 * 2 ** (attempt - 1), 3600)
        assert 0.75 * expected <= delay <= 1.25 * expected


async def test_a_timeout_is_retried(client: AsyncClient, app: Any, receiver: Receiver) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["conversion.attributed"])
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    receiver.answer(200, delay=2.0)
    worker = Dispatcher(app.state.sessionmaker, dispatch_settings(webhook_timeout_seconds=0.3))
    try:
        assert await worker.run_once() == 1
        [row] = await deliveries(client, admin, endpoint["id"])
        assert row["status"] == "pending" and row["error"] == "timeout"
        assert row["attempts"][0]["response_status"] is None
        assert await worker.run_once(datetime.now(UTC) + FAR) == 1
    finally:
        await worker.aclose()
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "succeeded"
    assert [a["error"] for a in row["attempts"]] == ["timeout", None]
    assert len(receiver.received) == 2


async def test_an_object_s_events_wait_for_the_earlier_ones(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await add_rule(
        client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00", hold_days=30
    )
    endpoint = await make_endpoint(client, admin, receiver.url)
    bought = await purchase(
        client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"]
    )
    reward_id = bought["rewards"][0]["id"]
    assert (await transition(client, admin, reward_id, "approve")).status_code == 200
    assert (await transition(client, admin, reward_id, "mark-paid")).status_code == 200
    receiver.fail("reward.created", times=2)

    assert await dispatcher.run_once() == 3  # the first event of each object; 500 for the reward
    assert sorted(receiver.types()) == [
        "conversion.attributed",
        "referral.created",
        "reward.created",
    ]
    assert await dispatcher.run_once() == 0  # approved and paid wait behind the failed created
    await drain(dispatcher, later=True)
    events = [request.verify(endpoint["secret"]) for request in receiver.received]
    of_reward = [event["type"] for event in events if event["data"]["id"] == reward_id]
    assert of_reward == [
        "reward.created",
        "reward.created",
        "reward.created",
        "reward.approved",
        "reward.paid",
    ]
    statuses = {row["status"] for row in await deliveries(client, admin, endpoint["id"])}
    assert statuses == {"succeeded"}


async def test_after_three_days_a_delivery_fails_and_can_be_redelivered(
    client: AsyncClient, app: Any, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["conversion.attributed"])
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    failed = outcome_count("failed")
    receiver.answer(503, 503, 503)
    assert await dispatcher.run_once() == 1
    [row] = await deliveries(client, admin, endpoint["id"])
    assert await dispatcher.run_once() == 0  # backing off
    # "I fixed my endpoint, send it now": a pending delivery skips the rest of its backoff
    now = await client.post(f"/v1/webhook-deliveries/{row['id']}/redeliver", headers=auth(admin))
    assert now.status_code == 202 and now.json()["id"] == row["id"]
    assert await dispatcher.run_once() == 1  # answered 503 again
    assert await dispatcher.run_once(datetime.now(UTC) + timedelta(days=4)) == 1
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "failed" and row["response_status"] == 503
    assert outcome_count("failed") - failed == 1
    assert await drain(dispatcher, later=True) == 0  # failed for good: not retried

    again = await client.post(f"/v1/webhook-deliveries/{row['id']}/redeliver", headers=auth(admin))
    assert again.status_code == 202, again.text
    assert again.json()["redelivery_of"] == row["id"] and again.json()["status"] == "pending"
    assert await drain(dispatcher) == 1
    assert receiver.received[-1].headers["webhook-id"] == row["webhook_id"]
    receiver.received[-1].verify(endpoint["secret"])
    rows = {r["id"]: r for r in await deliveries(client, admin, endpoint["id"])}
    assert rows[again.json()["id"]]["status"] == "succeeded"
    assert (await deliveries(client, admin, endpoint["id"], status="failed"))[0]["id"] == row["id"]

    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(
        await client.post(f"/v1/webhook-deliveries/{missing}/redeliver", headers=auth(admin)),
        404,
        "webhook_delivery_not_found",
    )
    other = await make_key(app, "secret", [UUID((await make_program(client, admin))["id"])])
    assert_problem(
        await client.post(f"/v1/webhook-deliveries/{row['id']}/redeliver", headers=auth(other)),
        404,
        "webhook_delivery_not_found",
    )

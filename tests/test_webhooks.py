"""Outbound webhooks: endpoints, the outbox written with each change, signed delivery to a real
receiver on loopback (verified with the standardwebhooks package), retries, order, crashes."""

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.core.config import Settings
from app.main import create_app
from app.rewards.service import approve_due
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.models import WebhookDelivery, WebhookEvent
from app.webhooks.outbox import EVENT_TYPES
from app.webhooks.targets import UnsafeTarget, check_target
from tests.factories import assert_problem, auth, make_key, make_program, redeem
from tests.money_factories import add_rule, post_refund, purchase, setup_program, transition
from tests.settings import settings_for_tests
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401

FAR = timedelta(days=1)


def dispatch_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"webhook_retry_base_seconds": 1, "webhook_timeout_seconds": 2}
    return settings_for_tests(**(values | overrides))


@pytest.fixture
async def dispatcher(app: Any) -> AsyncIterator[Dispatcher]:
    worker = Dispatcher(app.state.sessionmaker, dispatch_settings())
    yield worker
    await worker.aclose()


async def make_endpoint(
    client: AsyncClient, key: str, url: str, event_types: Any = EVENT_TYPES, **extra: Any
) -> dict[str, Any]:
    body = {"url": url, "event_types": list(event_types)} | extra
    response = await client.post("/v1/webhook-endpoints", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()


async def drain(worker: Dispatcher, *, later: bool = False, rounds: int = 30) -> int:
    """Dispatch rounds until nothing is due; `later` moves the clock a day on every round."""
    sent = 0
    for round_ in range(1, rounds + 1):
        count = await worker.run_once(datetime.now(UTC) + round_ * FAR if later else None)
        if count == 0:
            return sent
        sent += count
    raise AssertionError("the outbox did not drain")


async def deliveries(client: AsyncClient, key: str, endpoint_id: str, **params: Any) -> list[Any]:
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    rows: list[Any] = response.json()["data"]
    return rows


def outcome_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("referral_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


async def count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# --- endpoints ------------------------------------------------------------------------------


async def test_endpoint_is_registered_with_a_secret_shown_once(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    created = await make_endpoint(
        client,
        admin,
        "https://hooks.example.net/referrals",
        ["reward.created", "reward.created"],
        program_id=prog["id"],
        description="payouts",
    )
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["event_types"] == ["reward.created"]
    assert created["program_id"] == prog["id"] and created["enabled"] is True

    path = f"/v1/webhook-endpoints/{created['id']}"
    fetched = (await client.get(path, headers=auth(admin))).json()
    assert "secret" not in fetched
    listed = (await client.get("/v1/webhook-endpoints", headers=auth(admin))).json()["data"]
    assert [row["id"] for row in listed] == [created["id"]] and "secret" not in listed[0]

    patched = await client.patch(
        path, json={"event_types": ["reward.paid"], "enabled": False}, headers=auth(admin)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["reward.paid"] and patched.json()["enabled"] is False
    assert_problem(
        await client.patch(path, json={"url": None}, headers=auth(admin)), 422, "invalid_request"
    )

    assert (await client.delete(path, headers=auth(admin))).status_code == 204
    assert_problem(await client.get(path, headers=auth(admin)), 404, "webhook_endpoint_not_found")


async def test_endpoint_input_is_checked(client: AsyncClient, app: Any) -> None:
    admin, _, _ = await setup_program(client, app)
    for body in (
        {"url": "https://hooks.example.net/x", "event_types": ["reward.exploded"]},
        {"url": "https://hooks.example.net/x", "event_types": []},
        {"url": "ftp://hooks.example.net/x", "event_types": ["reward.paid"]},
        {"url": "not a url", "event_types": ["reward.paid"]},
    ):
        response = await client.post("/v1/webhook-endpoints", json=body, headers=auth(admin))
        assert_problem(response, 422, "validation_error")
    publishable = await make_key(app, "publishable")
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.net/x", "event_types": ["reward.paid"]},
        headers=auth(publishable),
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await client.get("/v1/webhook-endpoints"), 401, "unauthorized")


async def test_keys_limited_to_a_program_see_only_its_endpoints(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    limited = await make_key(app, "secret", [UUID(prog["id"])])
    url = "https://hooks.example.net/x"
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["reward.paid"]},
        headers=auth(limited),
    )
    assert_problem(response, 403, "forbidden")  # every program's events: not for this key
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["reward.paid"], "program_id": other["id"]},
        headers=auth(limited),
    )
    assert_problem(response, 404, "program_not_found")
    own = await make_endpoint(client, limited, url, ["reward.paid"], program_id=prog["id"])
    theirs = await make_endpoint(client, admin, url, ["reward.paid"], program_id=other["id"])
    everything = await make_endpoint(client, admin, url, ["reward.paid"])
    listed = (await client.get("/v1/webhook-endpoints", headers=auth(limited))).json()["data"]
    assert [row["id"] for row in listed] == [own["id"]]
    for hidden in (theirs, everything):
        path = f"/v1/webhook-endpoints/{hidden['id']}"
        assert_problem(
            await client.get(path, headers=auth(limited)), 404, "webhook_endpoint_not_found"
        )
        assert_problem(
            await client.delete(path, headers=auth(limited)), 404, "webhook_endpoint_not_found"
        )
        assert_problem(
            await client.get(path + "/deliveries", headers=auth(limited)),
            404,
            "webhook_endpoint_not_found",
        )


# --- where webhooks may go (SSRF) -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://user:secret@8.8.8.8/hook",
        "gopher://8.8.8.8/hook",
    ],
)
async def test_private_and_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        await check_target(url, settings_for_tests(webhook_allow_private_targets=False))


async def test_public_targets_pass_and_production_wants_https() -> None:
    await check_target(
        "http://8.8.8.8/hook", settings_for_tests(webhook_allow_private_targets=False)
    )
    production = Settings(
        environment="production",
        ip_hash_salt="not-the-default",
        pseudonym_key="not-the-default-either",
        database_url="postgresql+asyncpg://db.internal/referrals",
    )
    await check_target("https://8.8.8.8/hook", production)
    with pytest.raises(UnsafeTarget, match="https"):
        await check_target("http://8.8.8.8/hook", production)
    # the setting lets tests (and nothing else) reach a receiver on loopback
    await check_target("http://127.0.0.1:9/hook", settings_for_tests())


async def test_private_url_is_refused_at_registration_and_at_delivery(
    client: AsyncClient, app: Any, receiver: Receiver
) -> None:
    strict_settings = settings_for_tests(webhook_allow_private_targets=False)
    strict = create_app(strict_settings)
    try:
        transport = ASGITransport(app=strict)
        async with AsyncClient(transport=transport, base_url="http://testserver") as strict_client:
            admin = await make_key(strict)
            response = await strict_client.post(
                "/v1/webhook-endpoints",
                json={"url": "http://169.254.169.254/latest", "event_types": ["reward.created"]},
                headers=auth(admin),
            )
            assert_problem(response, 422, "invalid_webhook_url")
    finally:
        await strict.state.webhook_dispatcher.aclose()
        await strict.state.engine.dispose()

    # registered while allowed, then the dispatcher of a strict replica will not send it
    admin, prog, alice = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00")
    endpoint = await make_endpoint(client, admin, receiver.url, ["reward.created"])
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    worker = Dispatcher(
        app.state.sessionmaker, dispatch_settings(webhook_allow_private_targets=False)
    )
    try:
        assert await worker.run_once() == 1
    finally:
        await worker.aclose()
    assert receiver.received == []
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "pending" and row["error"].startswith("refused target")
    assert row["attempts"][0]["response_status"] is None


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


# --- crashes and replicas ---------------------------------------------------------------------


async def test_an_event_committed_before_a_crash_is_still_delivered(
    client: AsyncClient, app: Any, receiver: Receiver, settings: Settings
) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["conversion.attributed"])
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    # The process that committed the purchase dies before sending anything; a new one starts.
    restarted = create_app(settings)
    try:
        async with restarted.router.lifespan_context(restarted):
            assert await restarted.state.webhook_dispatcher.run_once() == 1
    finally:
        await restarted.state.engine.dispose()
    [request] = receiver.received
    assert request.verify(endpoint["secret"])["type"] == "conversion.attributed"
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "succeeded"


async def test_a_replica_dying_mid_request_leaves_the_delivery_to_another(
    client: AsyncClient, app: Any, receiver: Receiver
) -> None:
    admin, prog, alice = await setup_program(client, app)
    endpoint = await make_endpoint(client, admin, receiver.url, ["conversion.attributed"])
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    receiver.answer(200, delay=2.0)
    first = Dispatcher(app.state.sessionmaker, dispatch_settings())
    second = Dispatcher(app.state.sessionmaker, dispatch_settings())
    try:
        round_ = asyncio.create_task(first.run_once())
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.01)
        round_.cancel()  # the replica dies with the request in flight: no answer recorded
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert await second.run_once() == 0  # leased by the dead replica
        after_lease = datetime.now(UTC) + second.lease + timedelta(seconds=1)
        assert await second.run_once(after_lease) == 1
    finally:
        await first.aclose()
        await second.aclose()
    assert len(receiver.received) == 2  # at least once: the same webhook-id twice
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    [row] = await deliveries(client, admin, endpoint["id"])
    assert row["status"] == "succeeded" and row["attempt_count"] == 2


async def test_two_dispatchers_deliver_each_event_once(
    client: AsyncClient, app: Any, receiver: Receiver
) -> None:
    admin, prog, alice = await setup_program(client, app)
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="1.00",
        trigger="every_purchase",
    )
    endpoint = await make_endpoint(client, admin, receiver.url)
    for i in range(8):
        await purchase(
            client, admin, prog, f"o{i}", f"cust_{i}", "10.00", code=alice["default_code"]["code"]
        )
    expected = await count(app, WebhookDelivery)
    assert expected == 8 * 4  # referral, conversion, reward created and approved
    workers = [
        Dispatcher(app.state.sessionmaker, dispatch_settings(webhook_dispatch_batch_size=5))
        for _ in range(2)
    ]
    try:
        await asyncio.gather(*(drain(worker) for worker in workers))
    finally:
        for worker in workers:
            await worker.aclose()
    ids = [request.headers["webhook-id"] for request in receiver.received]
    assert len(ids) == expected and len(set(ids)) == expected
    for request in receiver.received:
        request.verify(endpoint["secret"])
    rows = await deliveries(client, admin, endpoint["id"], limit=100)
    assert {row["status"] for row in rows} == {"succeeded"}

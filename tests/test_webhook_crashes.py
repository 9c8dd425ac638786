"""Outbound webhooks across crashes and replicas: a committed event is still delivered, a dying
replica leaves the delivery to another, two dispatchers deliver each event once."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from app.core.config import Settings
from app.main import create_app
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.models import WebhookDelivery
from tests.money_factories import add_rule, purchase, setup_program
from tests.webhook_helpers import (
    count,
    deliveries,
    dispatch_settings,
    drain,
    make_endpoint,
)
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401

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

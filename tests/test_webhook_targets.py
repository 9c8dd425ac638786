"""Where outbound webhooks may go (SSRF): private and odd targets refused at registration and at
delivery, public targets pass, production wants https."""

from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient

from app.core.config import Settings
from app.main import create_app
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.targets import UnsafeTarget, check_target
from tests.factories import assert_problem, auth, make_key
from tests.money_factories import add_rule, purchase, setup_program
from tests.settings import settings_for_tests
from tests.webhook_helpers import deliveries, dispatch_settings, make_endpoint
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401

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

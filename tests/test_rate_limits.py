import socket
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from httpx import ASGITransport, AsyncClient

from app.main import create_app
from tests.factories import auth, make_key, make_program, make_referrer
from tests.settings import settings_for_tests


def _redis_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
async def limited(client: AsyncClient) -> AsyncIterator[tuple[AsyncClient, Any]]:
    """A second app on the same (emptied) database, with small limits switched on."""
    app = create_app(
        settings_for_tests(
            rate_limits_enabled=True,
            rate_limit_public_per_ip="5/minute",
            rate_limit_code_lookup_per_ip="3/minute",
            rate_limit_failed_auth_per_ip="3/minute",
            database_pool_size=5,
        )
    )
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def test_clicks_from_one_ip_are_throttled_and_counted_once(
    limited: tuple[AsyncClient, Any],
) -> None:
    http, app = limited
    admin = await make_key(app)
    program = await make_program(http, admin)
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    statuses = []
    for _ in range(8):
        response = await http.post("/v1/clicks", json={"code": code}, headers=auth(admin))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["code"] == "rate_limited"
            assert int(response.headers["retry-after"]) >= 1
    assert statuses[:5] == [201] * 5
    assert statuses[5:] == [429] * 3


async def test_guessing_codes_is_throttled(limited: tuple[AsyncClient, Any]) -> None:
    http, app = limited
    admin = await make_key(app)
    statuses = [
        (await http.get(f"/v1/codes/GUESS{n}", headers=auth(admin))).status_code for n in range(5)
    ]
    assert statuses == [404, 404, 404, 429, 429]


async def test_failed_authentication_is_throttled(limited: tuple[AsyncClient, Any]) -> None:
    http, app = limited
    statuses = [
        (await http.get("/v1/programs", headers=auth(f"rk_sec_wrong{n}"))).status_code
        for n in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    refused = await http.get("/v1/programs", headers=auth("rk_sec_wrong"))
    assert int(refused.headers["retry-after"]) >= 1
    # A key that authenticates always passes, from the same address too (behind a proxy every
    # client shares one); the fixture's app caches no key, so it is checked in the database.
    admin = await make_key(app)
    assert (await http.get("/v1/programs", headers=auth(admin))).status_code == 200
    assert (await http.get("/v1/programs", headers=auth("rk_sec_wrong"))).status_code == 429


@pytest.mark.skipif(not _redis_answers(), reason="needs Redis on 127.0.0.1:6379")
async def test_limits_are_shared_through_redis(client: AsyncClient) -> None:
    """Two replicas (two apps) with one Redis share one budget."""
    prefix = uuid4().hex  # keeps this run's counters apart from earlier runs'
    settings = settings_for_tests(
        rate_limits_enabled=True,
        redis_url="redis://127.0.0.1:6379/0",
        rate_limit_failed_auth_per_ip="4/minute",
        database_pool_size=5,
    )
    apps = [create_app(settings), create_app(settings)]
    statuses = []
    for n in range(6):
        app = apps[n % 2]
        transport = ASGITransport(app=app, client=(f"replica-test-{prefix}", 1234))
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/v1/programs", headers=auth(f"rk_sec_{prefix}{n}"))
            statuses.append(response.status_code)
    for app in apps:
        await app.state.engine.dispose()
    assert statuses == [401, 401, 401, 401, 429, 429]

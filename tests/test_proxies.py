"""The client address behind proxies: X-Forwarded-For read from the right, past trusted proxies.

REFERRAL_FORWARDED_ALLOW_IPS lists the proxies (addresses or networks); the app runs uvicorn's
ProxyHeadersMiddleware with them, so the client is the right-most address that is not one of
them. What a client writes itself (the left of the header) is never taken. Per-IP limits and
duplicate-click flags use that address.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import ValidationError
from sqlalchemy import select

from app.core.config import Settings
from app.main import create_app
from app.tracking.models import Click
from app.tracking.service import hash_ip
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.faults.server import create_admin_key, running_service, service_env
from tests.settings import DATABASE_URL, settings_for_tests

PROXY = "10.1.2.3"  # the load balancer the service sees connecting


@asynccontextmanager
async def _behind_proxy(
    peer: str = PROXY, **overrides: object
) -> AsyncIterator[tuple[AsyncClient, Any]]:
    settings = settings_for_tests(
        forwarded_allow_ips="10.0.0.0/8", database_pool_size=5, **overrides
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, client=(peer, 40000))
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def _code(http: AsyncClient, app: Any) -> tuple[str, str]:
    admin = await make_key(app)
    program = await make_program(http, admin)
    return admin, (await make_referrer(http, admin, program["id"]))["default_code"]["code"]


async def _click(http: AsyncClient, key: str, code: str, forwarded: str) -> httpx.Response:
    return await http.post(
        "/v1/clicks",
        json={"code": code},
        headers=auth(key) | {"User-Agent": BROWSER_UA, "X-Forwarded-For": forwarded},
    )


async def _ip_hashes(app: Any) -> list[str | None]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(Click.ip_hash).order_by(Click.created_at)))


async def test_a_value_the_client_sends_first_is_not_taken(client: AsyncClient) -> None:
    async with _behind_proxy() as (http, app):
        key, code = await _code(http, app)
        # The proxy appends the address it saw; the client made up what comes before it.
        first = await _click(http, key, code, "203.0.113.1, 198.51.100.20")
        second = await _click(http, key, code, "203.0.113.2, 198.51.100.20")
        other = await _click(http, key, code, "203.0.113.2, 198.51.100.21")
        assert [r.json()["is_duplicate"] for r in (first, second, other)] == [False, True, False]
        settings = app.state.settings
        assert await _ip_hashes(app) == [
            hash_ip(settings, "198.51.100.20"),
            hash_ip(settings, "198.51.100.20"),
            hash_ip(settings, "198.51.100.21"),
        ]


async def test_the_right_most_untrusted_address_is_the_client(client: AsyncClient) -> None:
    async with _behind_proxy() as (http, app):
        key, code = await _code(http, app)
        # client (spoofing) → CDN edge 198.51.100.7 → internal proxy 10.0.0.9 → PROXY
        await _click(http, key, code, "203.0.113.1, 198.51.100.7, 10.0.0.9")
        assert await _ip_hashes(app) == [hash_ip(app.state.settings, "198.51.100.7")]


async def test_an_untrusted_peer_is_the_client_whatever_it_sends(client: AsyncClient) -> None:
    async with _behind_proxy(peer="192.0.2.50") as (http, app):
        key, code = await _code(http, app)
        await _click(http, key, code, "198.51.100.20")
        assert await _ip_hashes(app) == [hash_ip(app.state.settings, "192.0.2.50")]


async def test_per_ip_limits_count_the_client_behind_the_proxy(client: AsyncClient) -> None:
    async with _behind_proxy(rate_limits_enabled=True, rate_limit_public_per_ip="2/minute") as (
        http,
        app,
    ):
        key, code = await _code(http, app)
        spoofed = [
            (await _click(http, key, code, f"203.0.113.{n}, 198.51.100.20")).status_code
            for n in range(4)
        ]
        assert spoofed == [201, 201, 429, 429]
        # Another client behind the same proxy has its own budget.
        assert (await _click(http, key, code, "198.51.100.99")).status_code == 201


def test_the_setting_takes_addresses_and_networks_only() -> None:
    settings = Settings(forwarded_allow_ips="10.0.0.1/8, 192.0.2.7 ,::1")
    assert settings.forwarded_allow_ips == ["10.0.0.0/8", "192.0.2.7", "::1"]
    assert Settings().forwarded_allow_ips == []
    for bad in ("*", "proxy.internal", "10.0.0.0/33"):
        with pytest.raises(ValidationError, match="REFERRAL_FORWARDED_ALLOW_IPS"):
            Settings(forwarded_allow_ips=bad)


@pytest.mark.parametrize("via_cli", [True, False], ids=["referral-service serve", "uvicorn"])
async def test_served_processes_read_the_header_once(
    client: AsyncClient, tmp_path: Path, via_cli: bool
) -> None:
    """uvicorn's own handling is off (it would trust 127.0.0.1 whatever the setting says)."""
    admin = await create_admin_key(DATABASE_URL)
    for trusted, duplicate in (("", True), ("127.0.0.1", False)):
        env = service_env(DATABASE_URL, forwarded_allow_ips=trusted)
        log = tmp_path / "service.log"
        async with (
            running_service(env, log, via_cli=via_cli) as service,
            httpx.AsyncClient(base_url=service.base_url, timeout=10) as http,
        ):
            program = await make_program(http, admin)
            referrer = await make_referrer(http, admin, program["id"])
            code = referrer["default_code"]["code"]
            first = await _click(http, admin, code, "198.51.100.1")
            second = await _click(http, admin, code, "198.51.100.2")
        assert first.json()["is_duplicate"] is False
        assert second.json()["is_duplicate"] is duplicate, (trusted, via_cli)

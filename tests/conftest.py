import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli import migrate
from app.core.config import Settings
from app.main import create_app
from tests.attribution_factories import World, make_world
from tests.database import empty_tables, reset_postgres_schema
from tests.factories import auth, make_key, make_program, make_referrer
from tests.money_factories import Shop, setup_program
from tests.settings import (
    DATABASE_REASON,
    DATABASE_URL,
    ON_POSTGRES,
    mail_settings_for_tests,
    settings_for_tests,
)
from tests.smtp_server import SmtpServer


def pytest_report_header() -> list[str]:
    return [f"database: {'postgres' if ON_POSTGRES else 'sqlite'} ({DATABASE_REASON})"]


def pytest_sessionstart(session: pytest.Session) -> None:
    if ON_POSTGRES:
        asyncio.run(reset_postgres_schema(DATABASE_URL))
    migrate(settings_for_tests())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    name = "Postgres" if ON_POSTGRES else "SQLite"
    terminalreporter.write_line(f"tests ran on {name}: {DATABASE_REASON}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs Postgres (row locks and real concurrency)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return settings_for_tests()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[AsyncClient]:
    """An HTTP client over the app, on empty tables."""
    await empty_tables(app)
    transport = ASGITransport(app=app)  # type: ignore[arg-type]
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def session(app: object, client: AsyncClient) -> AsyncIterator[AsyncSession]:
    """A session on the same database as `client`, for service-level tests; committed on exit."""
    async with app.state.sessionmaker() as db_session:  # type: ignore[attr-defined]
        yield db_session
        await db_session.commit()


@pytest.fixture
async def shop(client: AsyncClient, app: object) -> Shop:
    """A program with referrer alice and an admin key (tests/money_factories.py Shop)."""
    admin, program, alice = await setup_program(client, app)
    return Shop(client, admin, program, alice)


# The shared fixtures of the money and tracking tests. A module shapes them with constants:
# PROGRAM = {...} (make_program overrides) and REFERRER = {...} (make_referrer overrides).
@pytest.fixture
async def admin(client: AsyncClient, app: object) -> str:
    """An admin key, used once: its first last_used_at write is then no part of any race."""
    key = await make_key(app)
    assert (await client.get("/v1/programs", headers=auth(key))).status_code == 200
    return key


@pytest.fixture
async def program(
    request: pytest.FixtureRequest, client: AsyncClient, admin: str
) -> dict[str, Any]:
    return await make_program(client, admin, **getattr(request.module, "PROGRAM", {}))


@pytest.fixture
async def referrer(
    request: pytest.FixtureRequest, client: AsyncClient, admin: str, program: dict[str, Any]
) -> dict[str, Any]:
    overrides = {"external_id": "ref_1"} | getattr(request.module, "REFERRER", {})
    external_id = overrides.pop("external_id")
    return await make_referrer(client, admin, program["id"], external_id, **overrides)


@pytest.fixture
async def world(client: AsyncClient, app: object) -> World:
    """A program with referrers alice and bob (tests/attribution_factories.py World)."""
    return await make_world(client, app)


# --- lifecycle emails: a real SMTP server on loopback, and an app that sends to it -----------


@pytest.fixture(scope="session")
async def smtp_server() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def mail_app(smtp_server: SmtpServer) -> AsyncIterator[object]:
    application = create_app(mail_settings_for_tests(smtp_server.port))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def mail_client(mail_app: object, smtp_server: SmtpServer) -> AsyncIterator[AsyncClient]:
    """An HTTP client over the app with emails on, on empty tables and a fresh SMTP server."""
    await empty_tables(mail_app)
    smtp_server.reset()
    transport = ASGITransport(app=mail_app)  # type: ignore[arg-type]
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http

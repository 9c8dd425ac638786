import asyncio
from collections.abc import AsyncIterator

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli import migrate
from app.core.config import Settings
from app.main import create_app
from app.models import Base
from tests.database import choose_database_url, reset_postgres_schema

DATABASE_URL, DATABASE_REASON = choose_database_url()
ON_POSTGRES = DATABASE_URL.startswith("postgresql")


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


def settings_for_tests(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": DATABASE_URL,
        "environment": "test",
        "ip_hash_salt": "test-salt",
        "housekeeping_interval_seconds": 0,
        # Tests run dispatch rounds themselves, against receivers on loopback.
        "webhook_dispatch_interval_seconds": 0,
        "webhook_allow_private_targets": True,
        "database_pool_size": 30,
        # The suite sends thousands of requests from one address; tests/test_rate_limits.py
        # builds its own app with the limits on.
        "rate_limits_enabled": False,
        "cors_cache_seconds": 0,
        # Caches make changes visible after a few seconds; tests/test_hot_paths.py turns them on.
        "auth_cache_seconds": 0,
        "code_cache_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return settings_for_tests()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def _empty_tables(application: object) -> None:
    engine = application.state.engine  # type: ignore[attr-defined]
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    # Rollups last: deleting the events writes their negative deltas (app.metrics.models).
    tables.sort(key=lambda name: name.startswith("metrics_"))
    # DELETE, not TRUNCATE: on tables this small it is many times faster, and it takes no
    # ACCESS EXCLUSIVE lock that would wait on a straggling connection.
    async with engine.begin() as connection:
        for table in tables:
            await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def client(app: object) -> AsyncIterator[AsyncClient]:
    """An HTTP client over the app, on empty tables."""
    await _empty_tables(app)
    transport = ASGITransport(app=app)  # type: ignore[arg-type]
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def session(app: object, client: AsyncClient) -> AsyncIterator[AsyncSession]:
    """A session on the same database as `client`, for service-level tests; committed on exit."""
    async with app.state.sessionmaker() as db_session:  # type: ignore[attr-defined]
        yield db_session
        await db_session.commit()

"""Which database the suite runs on: Postgres when reachable (or required), else a SQLite file."""

import asyncio
import os
import tempfile
from pathlib import Path

import asyncpg
from sqlalchemy import text

from app.models import Base

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _postgres_answers(url: str) -> str | None:
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


def choose_database_url() -> tuple[str, str]:
    """(url, why) for this run; REFERRAL_TEST_REQUIRE_POSTGRES=1 turns a fallback into an error."""
    url = os.environ.get("REFERRAL_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    if url.startswith("sqlite"):
        return url, "REFERRAL_TEST_DATABASE_URL names SQLite"
    problem = asyncio.run(_postgres_answers(url))
    if problem is None:
        return url, "Postgres answered"
    if os.environ.get("REFERRAL_TEST_REQUIRE_POSTGRES") == "1":
        raise RuntimeError(f"Postgres is required but does not answer at {url}: {problem}")
    path = Path(tempfile.mkdtemp(prefix="referral-tests-")) / "test.db"
    return f"sqlite+aiosqlite:///{path}", f"Postgres unreachable ({problem}); using SQLite"


async def reset_postgres_schema(url: str) -> None:
    """The test database is the suite's own: start every run from an empty schema."""
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await connection.close()


async def empty_tables(application: object) -> None:
    """Delete every row (the schema stays): each test starts on empty tables."""
    engine = application.state.engine  # type: ignore[attr-defined]
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    # Rollups last: deleting the events writes their negative deltas (app.metrics.models).
    tables.sort(key=lambda name: name.startswith("metrics_"))
    # DELETE, not TRUNCATE: on tables this small it is many times faster, and it takes no
    # ACCESS EXCLUSIVE lock that would wait on a straggling connection.
    async with engine.begin() as connection:
        for table in tables:
            await connection.execute(text(f"DELETE FROM {table}"))

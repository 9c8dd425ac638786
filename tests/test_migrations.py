"""Migrations are the schema: they match the models, and go down and up again cleanly."""

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import alembic_config
from app.core.db import configure_sqlite
from app.models import Base
from tests.settings import DATABASE_URL


def _config() -> Any:
    config = alembic_config(DATABASE_URL)
    config.attributes["configure_logging"] = False  # type: ignore[attr-defined]
    return config


async def _alembic(name: str, revision: str) -> None:
    # env.py calls asyncio.run, which cannot nest in this test's running loop.
    await asyncio.to_thread(getattr(command, name), _config(), revision)


async def _inspect(work: Any) -> Any:
    engine = create_async_engine(DATABASE_URL, poolclass=pool.NullPool)
    if DATABASE_URL.startswith("sqlite"):
        configure_sqlite(engine)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def test_one_head() -> None:
    heads = ScriptDirectory.from_config(_config()).get_heads()
    assert len(heads) == 1, heads


async def test_models_and_migrations_agree_and_round_trip(app: Any) -> None:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    model_tables = set(Base.metadata.tables)
    try:
        await _alembic("upgrade", "head")
        assert await _inspect(_revision) == head
        assert await _inspect(_diff) == []
        assert model_tables <= await _inspect(_tables)

        await _alembic("downgrade", "base")
        assert await _inspect(_revision) is None
        assert await _inspect(_tables) & model_tables == set()

        await _alembic("upgrade", "head")
        assert await _inspect(_revision) == head
        assert await _inspect(_diff) == []
    finally:
        await _alembic("upgrade", "head")
        # The app's pooled connections may hold plans for the dropped tables.
        await app.state.engine.dispose()

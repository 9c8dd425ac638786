import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy import DateTime, MetaData, String, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

from app.core.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; times are timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class StrEnumText(TypeDecorator[E]):
    """A StrEnum kept as its plain string value: a new state needs no migration of values,
    and a misspelt state fails on the way in instead of being stored."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Any) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL, foreign keys and immediate write transactions."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {
        "statement_cache_size": settings.database_statement_cache_size,
        "server_settings": {"timezone": "UTC"},
        # Fail fast when the database is unreachable: the caller gets a 503, not a hang.
        "timeout": 5,
        "command_timeout": settings.database_command_timeout_seconds,
    }
    if settings.database_statement_cache_size == 0:
        connect_args["prepared_statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        # No overflow: overflow connections are closed as soon as they are returned, and under
        # load that meant opening hundreds of connections a minute. Waiting is bounded by
        # pool_timeout, then the request answers 503.
        max_overflow=0,
        pool_timeout=settings.database_pool_timeout_seconds,
        connect_args=connect_args,
    )
    ping_when_idle(engine)
    return engine


# A pooled connection idle longer than this is pinged before use (SQLAlchemy's pre-ping, but
# not for one that was in use a moment ago: under load that ping was a round trip per checkout).
IDLE_PING_SECONDS = 1.0


def ping_when_idle(engine: AsyncEngine) -> None:
    """Pre-ping a connection on checkout only when it sat idle in the pool: a dead one (a
    restarted database, a proxy that dropped it) is replaced before use, as with pre-ping."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection is gone") from exc
        if not alive:
            raise DisconnectionError("the pooled connection is gone")


def configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself, so that it can be BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # One writer at a time from the start: no lock upgrades that fail with "database is locked".
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def insert_ignoring_conflicts(session: AsyncSession, table: Any, values: dict[str, Any]) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect (Postgres or SQLite)."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).values(**values).on_conflict_do_nothing()


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def transaction_cache(session: AsyncSession, name: str) -> dict[Any, Any]:
    """A dict kept on the session for its current transaction only (lookups a request repeats,
    such as who listens to events: a purchase emits several)."""
    transaction = session.sync_session.get_transaction()
    held = session.info.get(name)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[name] = held
    cache: dict[Any, Any] = held[1]
    return cache

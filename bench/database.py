"""The bench database: created and migrated when missing, and one session that watches it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from bench.config import BIN, DATABASE, DSN, PG_HOST, PG_PORT, PG_USER, ROOT, SERVICE_ENV
from bench.console import log

# New sessions of the bench database so far, and sessions inside a transaction now.
SESSIONS_OPENED = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
BUSY_SESSIONS = (
    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle')"
)


def psql(sql: str, database: str = DATABASE, timeout: float = 600) -> str:
    out = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            PG_USER,
            "-d",
            database,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}\n  SQL: {sql[:300]}")
    return out.stdout.strip()


def ensure_database() -> None:
    """The bench database exists and is at the newest migration."""
    ready = subprocess.run(["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT)], capture_output=True)
    if ready.returncode != 0:
        sys.exit(f"Postgres is not answering on {PG_HOST}:{PG_PORT}")
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres"):
        log(f"creating database {DATABASE}")
        psql(f"CREATE DATABASE {DATABASE}", database="postgres")
    migrate = subprocess.run(
        [str(BIN / "referral-service"), "migrate"],
        env={**os.environ, **SERVICE_ENV},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if migrate.returncode != 0:
        sys.exit(f"migration failed:\n{migrate.stdout}\n{migrate.stderr}")


class Monitor:
    """One database session held for the whole run, for the counts and checks between runs.

    Opened before any load, so a server that runs out of connection slots under load (other
    sessions share it) cannot make the checks fail. asyncpg on its own thread's event loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection: Any = None

    def _call(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def connect(self, attempts: int = 60) -> None:
        for attempt in range(attempts):
            try:
                self.connection = self._call(lambda: asyncpg.connect(DSN), timeout=30)
                return
            except (OSError, asyncpg.PostgresError) as exc:  # e.g. too many clients already
                if attempt == attempts - 1:
                    raise
                log(f"  (monitor connection refused: {exc}; retrying)")
                time.sleep(1)

    def value(self, sql: str) -> Any:
        return self._call(lambda: self.connection.fetchval(sql))

    def row(self, sql: str) -> Any:
        return self._call(lambda: self.connection.fetchrow(sql))

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(self._call(lambda: self.connection.fetch(sql, *args)))

    def execute(self, sql: str) -> None:
        self._call(lambda: self.connection.execute(sql))

    def available_connections(self) -> int:
        """Connection slots still free for clients that are not superusers."""
        return int(
            self.value(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int - count(*)"
                " FROM pg_stat_activity"
            )
        )

    def close(self) -> None:
        if self.connection is not None:
            self._call(self.connection.close, timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def monitoring() -> Iterator[Monitor]:
    """The monitor session, connected, for the length of the block."""
    monitor = Monitor()
    try:
        monitor.connect()
        yield monitor
    finally:
        monitor.close()

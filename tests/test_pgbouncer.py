"""The service behind PgBouncer in transaction mode: a mixed load, no errors, exactly once.

PgBouncer hands a server connection to a client for one transaction only, so nothing may live
on a server connection between transactions: no named prepared statements (asyncpg's statement
cache and SQLAlchemy's prepared statement cache are both off with
REFERRAL_DATABASE_STATEMENT_CACHE_SIZE=0, see app.core.db.create_engine), no session-level locks or
settings. Advisory *transaction* locks (Idempotency-Key) and SET LOCAL are fine. The bouncer
here has fewer server connections than the service has client connections, so transactions
of different requests really do take turns on the same server connections.

Needs the `pgbouncer` binary (Debian: `apt-get install pgbouncer`; .ci/run installs it).
Without it the test is skipped, unless REFERRAL_TEST_REQUIRE_POSTGRES=1, where it fails.
"""

import asyncio
import dataclasses
import os
import pwd
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path
from uuid import uuid4

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.faults.server import create_admin_key, free_port, running_service, service_env
from tests.faults.traffic import (
    Load,
    LogicalRequest,
    Seeded,
    assert_metrics_match_recount,
    assert_stored_exactly_once,
    auth,
    mixed_events,
    read_stored,
    seed_program,
)
from tests.settings import DATABASE_URL

pytestmark = pytest.mark.postgres

EVENTS = 200  # 50 each: keyed clicks, plain clicks, keyed redemptions, keyed purchases
CLIENTS = 12
SERVER_CONNECTIONS = 3  # PgBouncer's connections to Postgres; the service has up to 10 to it
LOAD_TIMEOUT_SECONDS = 90
START_TIMEOUT_SECONDS = 15


def pgbouncer_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


def pgbouncer_ini(directory: Path, port: int) -> Path:
    """A transaction-mode bouncer on 127.0.0.1:`port` in front of the suite's database."""
    target = make_url(DATABASE_URL)
    assert target.database and target.username
    server = f"host={target.host or '127.0.0.1'} port={target.port or 5432}"
    server += f" dbname={target.database} user={target.username}"
    if target.password:
        server += f" password={target.password}"
    userlist = directory / "userlist.txt"
    userlist.write_text(f'"{target.username}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "[databases]",
                f"{target.database} = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                # Loopback only, a throwaway database: the test trusts its one client.
                "auth_type = trust",
                f"auth_file = {userlist}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_CONNECTIONS}",
                f"max_db_connections = {SERVER_CONNECTIONS}",
                "max_client_conn = 100",
                "ignore_startup_parameters = extra_float_digits",
                "",
            ]
        )
    )
    return ini


def run_as() -> list[str]:
    """PgBouncer refuses to run as root; then it drops to the postgres user (or nobody)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with suppress(KeyError):
            pwd.getpwnam(user)
            return ["-u", user]
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_until_answering(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"pgbouncer exited at start:\n{_text(log)}")
        try:
            connection = await asyncpg.connect(url, timeout=2, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"pgbouncer did not answer in {START_TIMEOUT_SECONDS} s:\n{_text(log)}"
                ) from None
            await asyncio.sleep(0.1)
            continue
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()
        return


@pytest.fixture
async def pgbouncer_url(tmp_path: Path) -> AsyncIterator[str]:
    """The suite's database URL, through a PgBouncer started for this test and always stopped."""
    binary = pgbouncer_binary()
    if binary is None:
        if os.environ.get("REFERRAL_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("pgbouncer is not installed (apt-get install pgbouncer); CI needs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    port = free_port()
    ini = pgbouncer_ini(tmp_path, port)
    log = tmp_path / "pgbouncer.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            binary,
            *run_as(),
            str(ini),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    url = make_url(DATABASE_URL).set(host="127.0.0.1", port=port)
    try:
        await wait_until_answering(
            url.set(drivername="postgresql").render_as_string(hide_password=False), process, log
        )
        yield url.render_as_string(hide_password=False)
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def keyed(requests: Iterator[LogicalRequest], run: str) -> Iterator[LogicalRequest]:
    """The fault tests' mixed events, with an Idempotency-Key on purchases too."""
    for n, request in enumerate(requests):
        if request.kind == "conversion":
            key = {"Idempotency-Key": f"{run}-purchase-{n}"}
            request = dataclasses.replace(request, headers=request.headers | key)
        yield request


async def read_metrics(base_url: str, seeded: Seeded, until: asyncio.Event) -> int:
    """Ops reading every metrics endpoint in turn while the load runs; returns the reads."""
    paths = [
        f"/v1/programs/{seeded.program_id}/metrics/{name}"
        for name in ("summary", "timeseries", "referrers", "channels")
    ] + [f"/v1/referrers/{seeded.referrer_id}/metrics"]
    reads = 0
    deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
    async with httpx.AsyncClient(
        base_url=base_url, timeout=15, headers=auth(seeded.secret_key)
    ) as http:
        while not until.is_set() and time.monotonic() < deadline:
            response = await http.get(paths[reads % len(paths)])
            assert response.status_code == 200, (paths[reads % len(paths)], response.text)
            reads += 1
    return reads


async def test_mixed_load_through_pgbouncer_in_transaction_mode(
    pgbouncer_url: str, tmp_path: Path
) -> None:
    env = service_env(
        pgbouncer_url,
        database_statement_cache_size=0,
        database_pool_size=5,
        database_pool_timeout_seconds=30,
        forwarded_allow_ips="127.0.0.1",
    )
    async with running_service(env, tmp_path / "service.log") as service:
        run = f"bouncer-{uuid4().hex[:8]}"
        seeded = await seed_program(service.base_url, await create_admin_key(DATABASE_URL), run)
        requests = list(keyed(mixed_events(seeded, run, EVENTS), run))

        load = Load(service.base_url, requests, clients=CLIENTS)
        done = asyncio.Event()
        reader = asyncio.create_task(read_metrics(service.base_url, seeded, done))
        try:
            await asyncio.wait_for(load.run(), LOAD_TIMEOUT_SECONDS)
        finally:
            done.set()
            reads = await reader

        # Every keyed request again, twice at once: the first answer comes back, nothing new.
        again = [r for r in requests if "Idempotency-Key" in r.headers for _ in range(2)]
        replay = Load(service.base_url, again, clients=CLIENTS)
        await asyncio.wait_for(replay.run(), LOAD_TIMEOUT_SECONDS)

        assert reads > 0
        failed = [
            (a.kind, a.status, a.error, a.body[:200])
            for a in load.attempts + replay.attempts
            if a.status is None or a.status >= 500
        ]
        assert not failed, f"errors behind PgBouncer: {failed[:5]}"
        log = service.log_text()
        assert "Traceback" not in log, log[-3000:]

        first = {o.request.headers.get("Idempotency-Key"): o for o in load.outcomes}
        for outcome in replay.outcomes:
            original = first[outcome.request.headers["Idempotency-Key"]]
            assert (outcome.status, outcome.answer) == (original.status, original.answer)
        assert all(a.replayed for a in replay.attempts if a.status == 201)

        stored = await read_stored(DATABASE_URL, seeded, run)
        acked = assert_stored_exactly_once(load.outcomes, stored)
        assert acked == dict.fromkeys(
            ("click", "plain_click", "redemption", "conversion"), EVENTS // 4
        )
        await assert_metrics_match_recount(service.base_url, seeded, stored, acked, load.outcomes)

"""The database goes away mid-load and comes back: 503s at once, then recovery by itself.

The service reaches Postgres through a small TCP proxy the test controls. Cutting the proxy drops
every open connection and refuses new ones, as a crashed or restarted database does. While it is
cut, every request is answered quickly with a 503 problem+json carrying Retry-After (never a
500, never a hang) and /readyz is red. When it is restored, the same process recovers with no
restart, and every event acknowledged before, during and after is stored exactly once.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.faults.server import ServiceProcess, create_admin_key, running_service, service_env
from tests.faults.traffic import (
    Attempt,
    Load,
    assert_metrics_match_recount,
    assert_stored_exactly_once,
    click,
    mixed_events,
    read_stored,
    seed_program,
)
from tests.settings import DATABASE_URL

pytestmark = pytest.mark.postgres

# The answer to any request while the database is away; a hang would go far past it.
MAX_ANSWER_SECONDS = 6.0
OUTAGE_SECONDS = 4.0
RECOVERY_SECONDS = 10.0
MAX_EVENTS = 3000


class CuttableProxy:
    """127.0.0.1:<port> → the database. `cut()` drops every connection and stops listening."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        # The same port every time, so the service's database URL stays right.
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()  # new connections are refused from here on
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()

    async def _link(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        server = self._server
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            client.transport.abort()
            return
        if server is None or server is not self._server:
            # Accepted just before a cut: it must not outlive it.
            client.transport.abort()
            upstream.transport.abort()
            return
        self.connections += 1
        self._links.update((client, upstream))
        try:
            await asyncio.gather(_pipe(client_reader, upstream), _pipe(upstream_reader, client))
        finally:
            for writer in (client, upstream):
                writer.transport.abort()
                self._links.discard(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # Either side ending ends both: abort the writer, which wakes the other pipe.
    writer.transport.abort()


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    url = make_url(DATABASE_URL)
    cuttable = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    await cuttable.start()
    try:
        yield cuttable
    finally:
        await cuttable.close()


@pytest.fixture
async def service(proxy: CuttableProxy, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    through_proxy = make_url(DATABASE_URL).set(host="127.0.0.1", port=proxy.port)
    env = service_env(
        through_proxy.render_as_string(hide_password=False),
        forwarded_allow_ips="127.0.0.1",
        database_pool_size=5,
    )
    async with running_service(env, tmp_path / "service.log") as process:
        yield process


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `condition()` until true; returns how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} did not happen in {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def assert_retry_later(attempt: Attempt) -> None:
    """A 503 problem+json that says when to come back."""
    assert attempt.status == 503, attempt
    assert attempt.content_type.startswith("application/problem+json"), attempt
    assert attempt.code == "database_unavailable", attempt
    assert attempt.retry_after is not None and int(attempt.retry_after) > 0, attempt


async def test_database_outage_answers_503_and_recovers_by_itself(
    proxy: CuttableProxy, service: ServiceProcess
) -> None:
    run = f"outage-{uuid4().hex[:8]}"
    seeded = await seed_program(service.base_url, await create_admin_key(DATABASE_URL), run)
    load = Load(
        service.base_url,
        mixed_events(seeded, run, MAX_EVENTS),
        clients=4,
        pause_seconds=0.02,
        request_deadline_seconds=60,
    )
    loading = asyncio.create_task(load.run())
    readiness: list[tuple[float, int, float]] = []  # (when, status, seconds)
    probes: list[Attempt] = []
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=15) as http:

            async def ready() -> int:
                started = time.monotonic()
                status = (await http.get("/readyz")).status_code
                readiness.append((started, status, time.monotonic() - started))
                return status

            assert await ready() == 200
            await wait_for(lambda: load.acknowledged >= 30, 30, "30 events before the outage")

            await proxy.cut()
            cut_at = time.monotonic()
            acked_at_cut = load.acknowledged
            probe = 0
            while time.monotonic() - cut_at < OUTAGE_SECONDS:
                assert await ready() == 503
                # A fresh request too, not only the retries of the load.
                request = click(seeded, f"{run}-probe", probe)
                probe += 1
                started = time.monotonic()
                response = await http.post(request.path, json=request.body, headers=request.headers)
                probes.append(
                    Attempt(
                        "probe",
                        started,
                        time.monotonic() - started,
                        response.status_code,
                        content_type=response.headers.get("content-type", ""),
                        retry_after=response.headers.get("retry-after"),
                        code=response.json().get("code"),
                        body=response.text[:300],
                    )
                )
                await asyncio.sleep(0.2)
            acked_during = load.acknowledged - acked_at_cut

            restore_at = time.monotonic()
            await proxy.restore()
            restored_at = time.monotonic()
            while await ready() != 200:
                assert time.monotonic() - restored_at < RECOVERY_SECONDS, "/readyz stays red"
                await asyncio.sleep(0.1)
            recovered_in = time.monotonic() - restored_at
            acked_at_restore = load.acknowledged
            await wait_for(
                lambda: load.acknowledged >= acked_at_restore + 30, 30, "30 events after it"
            )
        load.stop()
        await asyncio.wait_for(asyncio.shield(loading), 90)
    finally:
        if not loading.done():
            loading.cancel()
            with suppress(asyncio.CancelledError):
                await loading

    # The same process served throughout: it recovered by itself.
    assert service.starts == 1 and service.running
    assert recovered_in < RECOVERY_SECONDS

    answers = load.attempts + probes
    assert all(a.status is not None for a in answers), [a for a in answers if a.status is None][:3]
    slow = [a for a in answers if a.seconds > MAX_ANSWER_SECONDS]
    assert not slow, slow[:3]
    assert all(seconds < MAX_ANSWER_SECONDS for _, _, seconds in readiness)
    for attempt in answers:
        if attempt.status is not None and attempt.status >= 500:
            assert_retry_later(attempt)
    # What was sent while the database was away was refused (not queued), and quickly.
    during = [a for a in answers if cut_at < a.started and a.started + a.seconds < restore_at]
    assert len(during) >= 10
    for attempt in during:
        assert_retry_later(attempt)
    assert acked_during <= load.clients  # at most what was already committing at the cut
    assert probes

    assert all(o.acknowledged for o in load.outcomes), [
        (o.request.tag, o.status, o.answer) for o in load.outcomes if not o.acknowledged
    ][:5]
    stored = await read_stored(DATABASE_URL, seeded, run)
    acked = assert_stored_exactly_once(load.outcomes, stored)
    await assert_metrics_match_recount(service.base_url, seeded, stored, acked, load.outcomes)

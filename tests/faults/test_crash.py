"""SIGKILL the service mid-load, again and again: nothing acknowledged is lost, nothing doubles.

A real uvicorn process takes clicks (with an Idempotency-Key, and without one through the
group-commit click writer), redemptions and purchases from clients that retry the same request
(same Idempotency-Key, same event_id) until they get an answer. The process is killed several
times, with requests in flight, and restarted on the same port. Afterwards the database is read
directly: every acknowledged event is there once under the id it was acknowledged with, nothing
is stored twice (a retried click without a key at most as a flagged duplicate), and the metrics
the service reports equal a recount.
"""

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from uuid import uuid4

import pytest

from tests.faults.server import ServiceProcess, create_admin_key, running_service, service_env
from tests.faults.traffic import (
    Load,
    assert_metrics_match_recount,
    assert_stored_exactly_once,
    mixed_events,
    read_stored,
    seed_program,
)
from tests.settings import DATABASE_URL

pytestmark = pytest.mark.postgres

EVENTS = 200  # 50 each: keyed clicks, plain clicks, redemptions and purchases
CLIENTS = 12
# Kill when this share of the events has been acknowledged: always mid-load, whatever the speed.
KILL_AT = (0.2, 0.45, 0.7)
LOAD_TIMEOUT_SECONDS = 120


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    env = service_env(DATABASE_URL, forwarded_allow_ips="127.0.0.1", database_pool_size=5)
    async with running_service(env, tmp_path / "service.log") as process:
        yield process


async def kill_during(load: Load, service: ServiceProcess, total: int) -> list[int]:
    """SIGKILL and restart the service at each KILL_AT mark; returns the acknowledged counts.

    The kill comes right as an answer arrives: were the service to answer before its commit,
    that commit would still be under way and die with the process. The other clients' requests
    are caught wherever they are.
    """
    killed_at = []
    for share in KILL_AT:
        await asyncio.wait_for(load.until_acknowledged(int(share * total)), LOAD_TIMEOUT_SECONDS)
        await service.kill()
        killed_at.append(load.acknowledged)
        await asyncio.sleep(random.uniform(0.1, 0.5))  # clients meet a closed port meanwhile
        await service.start()
    return killed_at


async def test_acknowledged_events_survive_repeated_sigkill(service: ServiceProcess) -> None:
    run = f"crash-{uuid4().hex[:8]}"
    seeded = await seed_program(service.base_url, await create_admin_key(DATABASE_URL), run)
    load = Load(service.base_url, mixed_events(seeded, run, EVENTS), clients=CLIENTS)

    loading = asyncio.create_task(load.run())
    try:
        killed_at = await kill_during(load, service, EVENTS)
        await asyncio.wait_for(asyncio.shield(loading), LOAD_TIMEOUT_SECONDS)
    finally:
        if not loading.done():
            loading.cancel()
            with suppress(asyncio.CancelledError):
                await loading

    assert service.starts == len(KILL_AT) + 1
    assert all(0 < at < EVENTS for at in killed_at), killed_at
    assert len(load.outcomes) == EVENTS
    unanswered = [o.request.tag for o in load.outcomes if o.status is None]
    assert not unanswered, f"never answered: {unanswered[:10]}"
    errors = [a for a in load.attempts if a.status is not None and a.status >= 500]
    assert all(a.status == 503 for a in errors), [(a.status, a.body) for a in errors[:5]]
    # The kills hit requests in flight, not only an idle port.
    assert any(a.error not in (None, "ConnectError") for a in load.attempts)

    stored = await read_stored(DATABASE_URL, seeded, run)
    acked = assert_stored_exactly_once(load.outcomes, stored)
    assert acked == dict.fromkeys(("click", "plain_click", "redemption", "conversion"), EVENTS // 4)
    await assert_metrics_match_recount(service.base_url, seeded, stored, acked, load.outcomes)

"""A flood of one visitor's clicks on two service processes at once counts one unique click.

Two separate uvicorn processes (two replicas; each its own group-commit click writer, pool and
memory) serve one Postgres. Every round floods a fresh code with one visitor's clicks, split
between the two and sent all at once, some with an Idempotency-Key (the per-request path, which
writes the click in the request's own transaction) and most without (the writers' batches).
Afterwards the database is read directly: exactly one click per code is unique, the answers said
the same, and the metrics (kept by the rollup triggers) count one unique click per code.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.factories import BROWSER_UA
from tests.faults.server import ServiceProcess, create_admin_key, service_env
from tests.faults.traffic import Seeded, auth, seed_program
from tests.settings import DATABASE_URL

pytestmark = pytest.mark.postgres

POOL_SIZE = 4
CLICKS_PER_ROUND = 40  # 20 on each replica
# Each visitor shape once per pass: one visitor id (and one IP), many visitor ids from one IP,
# no visitor id at all (the IP alone).
SHAPES = ("same_visitor", "one_ip", "ip_only") * 2


@dataclass(frozen=True)
class Replicas:
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
    seeded: Seeded
    admin_key: str


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    logs = tmp_path_factory.mktemp("click-replicas")
    env = service_env(
        DATABASE_URL,
        database_pool_size=POOL_SIZE,
        database_pool_timeout_seconds=30,
        webhook_dispatch_interval_seconds=0,
    )
    services = (
        ServiceProcess(env, logs / "replica-a.log"),
        ServiceProcess(env, logs / "replica-b.log"),
    )
    try:
        admin_key, _, _ = await asyncio.gather(
            create_admin_key(DATABASE_URL), services[0].start(), services[1].start()
        )
        assert services[0].pid != services[1].pid
        seeded = await seed_program(services[0].base_url, admin_key, f"claims-{uuid4().hex[:8]}")
        async with (
            httpx.AsyncClient(base_url=services[0].base_url, timeout=30) as a,
            httpx.AsyncClient(base_url=services[1].base_url, timeout=30) as b,
        ):
            yield Replicas((a, b), seeded, admin_key)
    finally:
        for service in services:
            try:
                await service.stop()
            finally:
                service.kill_now()
                service.close_log()


async def query(sql: str, **params: Any) -> list[Any]:
    engine = create_async_engine(DATABASE_URL, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


def click_body(shape: str, code: str, run: str, n: int) -> dict[str, Any]:
    if shape == "same_visitor":
        return {"code": code, "visitor_id": f"{run}-visitor"}
    if shape == "one_ip":
        return {"code": code, "visitor_id": f"{run}-visitor-{n}"}
    return {"code": code}


async def flood(replicas: Replicas, shape: str, code: str, run: str) -> list[dict[str, Any]]:
    """All the round's clicks at once, alternately to each replica; every fifth with a key."""
    headers = auth(replicas.seeded.publishable_key) | {"User-Agent": BROWSER_UA}
    start = asyncio.Event()

    async def click(n: int) -> dict[str, Any]:
        extra = {"Idempotency-Key": f"{run}-{n}"} if n % 5 == 0 else {}
        await start.wait()
        response = await replicas.clients[n % 2].post(
            "/v1/clicks", json=click_body(shape, code, run, n), headers=headers | extra
        )
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    tasks = [asyncio.create_task(click(n)) for n in range(CLICKS_PER_ROUND)]
    await asyncio.sleep(0.05)
    start.set()
    return list(await asyncio.gather(*tasks))


async def test_a_flood_from_one_visitor_on_two_replicas_counts_one_unique_click(
    replicas: Replicas,
) -> None:
    seeded, run = replicas.seeded, f"flood-{uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(minutes=5)
    headers = auth(replicas.admin_key)
    codes: dict[str, str] = {}
    for n, shape in enumerate(SHAPES):
        made = await replicas.clients[0].post(
            f"/v1/referrers/{seeded.referrer_id}/codes", json={}, headers=headers
        )
        assert made.status_code == 201, made.text
        code = made.json()["code"]
        codes[code] = shape
        answers = await flood(replicas, shape, code, f"{run}-{n}")
        assert sum(not a["is_duplicate"] for a in answers) == 1, (shape, answers)

    stored = await query(
        "SELECT k.code, c.id, c.is_duplicate FROM clicks c JOIN codes k ON k.id = c.code_id "
        "WHERE k.code = ANY(:codes)",
        codes=list(codes),
    )
    assert len(stored) == CLICKS_PER_ROUND * len(SHAPES)
    unique = sorted(row.code for row in stored if not row.is_duplicate)
    assert unique == sorted(codes), {codes[c]: unique.count(c) for c in codes}

    # The rollups (migration 0006 triggers) count what the rows say, on both replicas.
    for client in replicas.clients:
        response = await client.get(
            f"/v1/programs/{seeded.program_id}/metrics/summary",
            params={"from": since.isoformat()},
            headers=auth(seeded.secret_key),
        )
        assert response.status_code == 200, response.text
        assert response.json()["unique_clicks"] == len(SHAPES)
        assert response.json()["clicks"] == CLICKS_PER_ROUND * len(SHAPES)

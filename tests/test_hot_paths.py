"""The click path: group commit, and short caches of API keys and codes."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, func, select

from app.core.telemetry import WRITE_BATCH_SIZE
from app.main import create_app
from app.tracking.models import Click
from tests.factories import auth, make_key, make_program, make_referrer
from tests.settings import settings_for_tests


@pytest.fixture
async def cached(client: AsyncClient) -> AsyncIterator[tuple[AsyncClient, Any]]:
    """An app with the production defaults for the caches, on the emptied test database."""
    app = create_app(
        settings_for_tests(auth_cache_seconds=60, code_cache_seconds=60, database_pool_size=20)
    )
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def _click_count(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Click)) or 0)


def _batches_observed() -> float:
    return next(
        sample.value
        for metric in WRITE_BATCH_SIZE.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )


async def test_concurrent_clicks_share_commits_and_all_are_stored(
    cached: tuple[AsyncClient, Any],
) -> None:
    http, app = cached
    admin = await make_key(app)
    program = await make_program(http, admin)
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    batches_before = _batches_observed()
    responses = await asyncio.gather(
        *(
            http.post(
                "/v1/clicks", json={"code": code, "visitor_id": f"v{n % 10}"}, headers=auth(admin)
            )
            for n in range(60)
        )
    )
    assert [r.status_code for r in responses] == [201] * 60
    assert await _click_count(app) == 60
    # One IP address (the test client's): however many visitor ids, one unique click.
    assert sum(not r.json()["is_duplicate"] for r in responses) == 1
    assert _batches_observed() - batches_before < 60


async def test_warm_click_costs_two_statements(cached: tuple[AsyncClient, Any]) -> None:
    http, app = cached
    admin = await make_key(app)
    program = await make_program(http, admin)
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    assert (
        await http.post("/v1/clicks", json={"code": code}, headers=auth(admin))
    ).status_code == 201
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await http.post("/v1/clicks", json={"code": code}, headers=auth(admin))
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 201
    # The key and the code come from the caches: the claim of the visitor (which decides the
    # duplicate, INSERT … ON CONFLICT) and the click's INSERT remain.
    # (SQLite shows its explicit BEGIN IMMEDIATE too.)
    assert sorted(s for s in statements if s != "BEGIN") == ["INSERT", "INSERT"]
    assert await _click_count(app) == 2


async def test_revoking_a_key_takes_effect_at_once_on_this_replica(
    cached: tuple[AsyncClient, Any],
) -> None:
    http, app = cached
    admin = await make_key(app)
    created = await http.post("/v1/api-keys", json={"kind": "secret"}, headers=auth(admin))
    secret = created.json()["key"]
    assert (await http.get("/v1/programs", headers=auth(secret))).status_code == 200
    revoke = await http.post(f"/v1/api-keys/{created.json()['id']}/revoke", headers=auth(admin))
    assert revoke.status_code == 200
    assert (await http.get("/v1/programs", headers=auth(secret))).status_code == 401


async def test_idempotent_clicks_commit_with_their_stored_answer(
    cached: tuple[AsyncClient, Any],
) -> None:
    http, app = cached
    admin = await make_key(app)
    program = await make_program(http, admin)
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    headers = auth(admin) | {"Idempotency-Key": "one"}
    answers = await asyncio.gather(
        *(http.post("/v1/clicks", json={"code": code}, headers=headers) for _ in range(5))
    )
    assert {a.status_code for a in answers} <= {201, 409}
    assert await _click_count(app) == 1


async def test_cached_codes_survive_the_rollback_of_the_request_that_cached_them(
    cached: tuple[AsyncClient, Any],
) -> None:
    """A request that loads a code into the cache and then fails must not spoil the entry."""
    http, app = cached
    admin = await make_key(app)
    program = await make_program(http, admin)
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    paused = await http.patch(
        f"/v1/programs/{program['id']}", json={"status": "paused"}, headers=auth(admin)
    )
    assert paused.status_code == 200
    # The code is looked up (and cached), then the click is refused: the transaction rolls back.
    refused = await http.post("/v1/clicks", json={"code": code}, headers=auth(admin))
    assert refused.status_code == 409
    for _ in range(3):
        link = await http.get(f"/r/{code}")
        assert link.status_code == 302  # served from the cache: a paused program, no ref
        assert "ref=" not in link.headers["location"]

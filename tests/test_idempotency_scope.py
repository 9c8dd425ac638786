"""An Idempotency-Key is claimed only after its API key authenticates.

A request that fails authentication, routing or a rate limit stores nothing, so nobody without
a key can fill the table; a revoked key gets 401, never the answers stored for it.
"""

from typing import Any
from uuid import uuid4

from httpx import AsyncClient
from sqlalchemy import func, select

from app.idempotency.models import IdempotencyRecord
from app.programs.models import Program
from tests.factories import assert_problem, auth, make_key, make_program

PROGRAM = {
    "name": "Summer",
    "landing_url": "https://shop.example.com/",
    "currency": "USD",
}


async def _count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_junk_key_stores_nothing(client: AsyncClient, app: Any) -> None:
    for n in range(5):
        response = await client.post(
            "/v1/programs",
            json=PROGRAM,
            headers=auth(f"rk_sec_junk{n}") | {"Idempotency-Key": uuid4().hex},
        )
        assert_problem(response, 401, "unauthorized")
    no_key = await client.post("/v1/programs", json=PROGRAM, headers={"Idempotency-Key": "k"})
    assert_problem(no_key, 401, "unauthorized")
    assert await _count(app, IdempotencyRecord) == 0


async def test_routing_failures_store_nothing(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    unknown = await client.post(
        "/v1/no-such-thing", json={}, headers=auth(admin) | {"Idempotency-Key": "a"}
    )
    assert_problem(unknown, 404, "not_found")
    wrong_method = await client.post(
        f"/v1/programs/{program['id']}", json={}, headers=auth(admin) | {"Idempotency-Key": "b"}
    )
    assert_problem(wrong_method, 405, "method_not_allowed")
    assert await _count(app, IdempotencyRecord) == 0


async def test_a_revoked_key_gets_401_not_its_stored_answer(client: AsyncClient, app: Any) -> None:
    operator = await make_key(app)
    admin = await make_key(app)
    headers = auth(admin) | {"Idempotency-Key": "create-summer"}
    created = await client.post("/v1/programs", json=PROGRAM, headers=headers)
    assert created.status_code == 201
    replayed = await client.post("/v1/programs", json=PROGRAM, headers=headers)
    assert replayed.headers["idempotent-replayed"] == "true"
    keys = (await client.get("/v1/api-keys", headers=auth(operator))).json()
    [revoked] = [k for k in keys if admin.startswith(k["prefix"]) and k["prefix"] != operator[:12]]
    revoke = await client.post(f"/v1/api-keys/{revoked['id']}/revoke", headers=auth(operator))
    assert revoke.status_code == 200
    refused = await client.post("/v1/programs", json=PROGRAM, headers=headers)
    assert_problem(refused, 401, "unauthorized")
    assert "idempotent-replayed" not in refused.headers
    assert "Summer" not in refused.text
    assert await _count(app, Program) == 1


async def test_the_same_key_of_another_caller_runs_anew(client: AsyncClient, app: Any) -> None:
    """Scoped to the API key that authenticated, whatever the Authorization header looks like."""
    first, second = await make_key(app), await make_key(app)
    for key in (first, second):
        response = await client.post(
            "/v1/programs", json=PROGRAM, headers=auth(key) | {"Idempotency-Key": "same"}
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    # The same key written another way ("bearer", spaces) is the same caller: a replay.
    again = await client.post(
        "/v1/programs",
        json=PROGRAM,
        headers={"Authorization": f"bearer   {first}", "Idempotency-Key": "same"},
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert await _count(app, Program) == 2

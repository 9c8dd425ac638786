import asyncio
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from app.background import forget_expired_idempotency_keys
from app.conversions.models import Conversion
from app.idempotency.models import IdempotencyRecord
from app.tracking.models import Click
from tests.factories import auth, make_key, make_program, make_referrer


async def _setup(client: AsyncClient, app: Any) -> tuple[str, dict, str]:
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"])
    return admin, program, referrer["default_code"]["code"]


async def _count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_replay_returns_the_first_answer(client: AsyncClient, app: Any) -> None:
    admin, _, code = await _setup(client, app)
    headers = auth(admin) | {"Idempotency-Key": "click-1"}
    first = await client.post("/v1/clicks", json={"code": code}, headers=headers)
    second = await client.post("/v1/clicks", json={"code": code}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _count(app, Click) == 1


async def test_same_key_other_body_is_422(client: AsyncClient, app: Any) -> None:
    admin, _, code = await _setup(client, app)
    headers = auth(admin) | {"Idempotency-Key": "k"}
    assert (
        await client.post("/v1/clicks", json={"code": code}, headers=headers)
    ).status_code == 201
    other = await client.post("/v1/clicks", json={"code": code, "utm_source": "x"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert await _count(app, Click) == 1


async def test_keys_are_scoped_per_api_key(client: AsyncClient, app: Any) -> None:
    admin, program, code = await _setup(client, app)
    other = await make_key(app, "publishable", [UUID(program["id"])])
    for key in (admin, other):
        response = await client.post(
            "/v1/clicks", json={"code": code}, headers=auth(key) | {"Idempotency-Key": "same"}
        )
        assert response.status_code == 201
    assert await _count(app, Click) == 2


async def test_client_errors_are_stored_and_change_nothing(client: AsyncClient, app: Any) -> None:
    admin, _, _ = await _setup(client, app)
    headers = auth(admin) | {"Idempotency-Key": "bad"}
    first = await client.post("/v1/clicks", json={"code": "NOPE"}, headers=headers)
    again = await client.post("/v1/clicks", json={"code": "NOPE"}, headers=headers)
    assert first.status_code == again.status_code == 404
    assert again.content == first.content
    assert again.headers["content-type"] == "application/problem+json"
    assert await _count(app, Click) == 0


async def test_expired_keys_are_forgotten(client: AsyncClient, app: Any) -> None:
    admin, _, code = await _setup(client, app)
    headers = auth(admin) | {"Idempotency-Key": "old"}
    await client.post("/v1/clicks", json={"code": code}, headers=headers)
    async with app.state.sessionmaker() as session:
        record = await session.scalar(select(IdempotencyRecord))
        assert record is not None
        record.expires_at = record.created_at
        await session.commit()
    assert await forget_expired_idempotency_keys(app.state.sessionmaker) == 1
    again = await client.post("/v1/clicks", json={"code": code}, headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert await _count(app, Click) == 2


async def test_oversized_body_is_413(client: AsyncClient, app: Any) -> None:
    admin, _, _code = await _setup(client, app)
    response = await client.post(
        "/v1/clicks",
        content=b'{"code": "' + b"A" * 70_000 + b'"}',
        headers=auth(admin) | {"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.postgres
async def test_200_keys_by_20_concurrent_posts(client: AsyncClient, app: Any) -> None:
    """Exactly one effect per key, and every reply to one key is byte-identical."""
    admin, program, code = await _setup(client, app)
    semaphore = asyncio.Semaphore(40)

    async def post(key_number: int) -> tuple[int, int, bytes]:
        async with semaphore:
            response = await client.post(
                "/v1/conversions",
                json={
                    "program_id": program["id"],
                    "event_id": f"evt-{key_number}",
                    "customer_id": f"cust-{key_number}",
                    "amount": "10.00",
                    "currency": "USD",
                    "code": code,
                },
                headers=auth(admin) | {"Idempotency-Key": f"idem-{key_number}"},
            )
        return key_number, response.status_code, response.content

    results = await asyncio.gather(*(post(k) for k in range(200) for _ in range(20)))
    by_key: dict[int, list[tuple[int, bytes]]] = {}
    for key_number, status, content in results:
        by_key.setdefault(key_number, []).append((status, content))
    for answers in by_key.values():
        done = [content for status, content in answers if status in (200, 201)]
        assert {status for status, _ in answers} <= {201, 409}, answers[0]
        assert len(set(done)) == 1
    assert await _count(app, Conversion) == 200
    assert await _count(app, IdempotencyRecord) == 200

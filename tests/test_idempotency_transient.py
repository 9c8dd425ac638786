"""Transient answers are never stored under an Idempotency-Key: the retry runs anew.

Stored (and replayed for REFERRAL_IDEMPOTENCY_TTL_HOURS): 2xx and the 4xx that the same request
gets again. Not stored: 429 rate_limited, 409 concurrent_update, 409
idempotency_key_in_progress, every 5xx. Each case here is forced for real: a rate limit, a
deadlock in Postgres, a statement that times out behind a lock.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import func, select, text

from app.conversions.models import Conversion
from app.idempotency.models import IdempotencyRecord
from app.main import create_app
from app.tracking.models import Referral
from tests.factories import assert_problem, auth, make_key, make_program, make_referrer
from tests.settings import settings_for_tests


async def _count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@asynccontextmanager
async def _own_app(**overrides: object) -> AsyncIterator[tuple[AsyncClient, Any]]:
    """A second app on the suite's (emptied) database, with its own settings."""
    app = create_app(settings_for_tests(database_pool_size=5, **overrides))
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def _shop(http: AsyncClient, app: Any) -> tuple[str, dict[str, Any], str]:
    admin = await make_key(app)
    program = await make_program(http, admin)
    referrer = await make_referrer(http, admin, program["id"])
    return admin, program, referrer["default_code"]["code"]


def _purchase(program: dict[str, Any], code: str, n: int = 1) -> dict[str, Any]:
    return {
        "program_id": program["id"],
        "event_id": f"order-{n}",
        "customer_id": f"cust-{n}",
        "amount": "80.00",
        "currency": "USD",
        "code": code,
    }


async def _assert_retry_runs_anew(
    http: AsyncClient, app: Any, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Response:
    """After a transient answer: nothing stored, the retry runs, and its answer is kept."""
    assert await _count(app, IdempotencyRecord) == 0
    retry = await http.post(path, json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    again = await http.post(path, json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == retry.content
    return retry


async def test_a_rate_limited_answer_is_not_replayed(client: AsyncClient) -> None:
    async with _own_app(rate_limits_enabled=True, rate_limit_public_per_ip="1/5 seconds") as (
        http,
        app,
    ):
        admin, _, code = await _shop(http, app)
        first = await http.post(
            "/v1/redemptions", json={"code": code, "customer_id": "c0"}, headers=auth(admin)
        )
        assert first.status_code == 201
        headers = auth(admin) | {"Idempotency-Key": "redeem-c1"}
        body = {"code": code, "customer_id": "c1"}
        limited = await http.post("/v1/redemptions", json=body, headers=headers)
        assert_problem(limited, 429, "rate_limited")
        # A five-second window: the second request cannot fall into a fresh one on a busy
        # machine (with one second it sometimes did, and was not limited at all).
        await asyncio.sleep(5.5)  # the window has passed
        await _assert_retry_runs_anew(http, app, "/v1/redemptions", body, headers)
        assert await _count(app, Referral) == 2


async def test_a_purchase_after_a_flood_of_bad_keys_is_recorded(client: AsyncClient) -> None:
    """Failed authentications from the address used to answer a valid key 429, stored."""
    async with _own_app(rate_limits_enabled=True, rate_limit_failed_auth_per_ip="3/minute") as (
        http,
        app,
    ):
        admin, program, code = await _shop(http, app)
        for n in range(5):
            await http.get("/v1/programs", headers=auth(f"rk_sec_wrong{n}"))
        headers = auth(admin) | {"Idempotency-Key": "purchase-1"}
        purchase = await http.post(
            "/v1/conversions", json=_purchase(program, code), headers=headers
        )
        assert purchase.status_code == 201, purchase.text
        again = await http.post("/v1/conversions", json=_purchase(program, code), headers=headers)
        assert again.headers["idempotent-replayed"] == "true"
        assert await _count(app, Conversion) == 1


DEADLOCK_TRIGGER = """
CREATE FUNCTION test_deadlock_on_purchase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(917001);
    PERFORM pg_advisory_xact_lock(917002);
    RETURN NEW;
END $$
"""


@pytest.mark.postgres
async def test_a_deadlock_answer_is_not_replayed(client: AsyncClient, app: Any) -> None:
    """A real deadlock: the purchase's insert and another transaction take two locks crosswise;
    Postgres aborts the purchase (409 concurrent_update), and the retry records it."""
    admin, program, code = await _shop(client, app)
    headers = auth(admin) | {"Idempotency-Key": "purchase-deadlock"}
    body = _purchase(program, code)
    async with app.state.engine.begin() as ddl:
        await ddl.execute(text(DEADLOCK_TRIGGER))
        await ddl.execute(
            text(
                "CREATE TRIGGER test_deadlock_on_purchase BEFORE INSERT ON conversions "
                "FOR EACH ROW EXECUTE FUNCTION test_deadlock_on_purchase()"
            )
        )
    try:
        async with app.state.engine.connect() as other:
            # The purchase's backend detects the deadlock first (1 s), so it is the victim.
            await other.execute(text("SET LOCAL deadlock_timeout = '60s'"))
            await other.execute(text("SELECT pg_advisory_xact_lock(917002)"))
            request = asyncio.create_task(
                client.post("/v1/conversions", json=body, headers=headers)
            )
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            for _ in range(500):
                if (await other.scalar(text(waiting + " AND objid = 917002"))) == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the purchase never waited for the second lock")
            await other.execute(text("SELECT pg_advisory_xact_lock(917001)"))
            deadlocked = await request
            await other.rollback()
    finally:
        async with app.state.engine.begin() as ddl:
            await ddl.execute(text("DROP TRIGGER test_deadlock_on_purchase ON conversions"))
            await ddl.execute(text("DROP FUNCTION test_deadlock_on_purchase()"))
    assert_problem(deadlocked, 409, "concurrent_update")
    assert await _count(app, Conversion) == 0
    await _assert_retry_runs_anew(client, app, "/v1/conversions", body, headers)
    assert await _count(app, Conversion) == 1


@pytest.mark.postgres
async def test_a_503_answer_is_not_replayed(client: AsyncClient) -> None:
    """The purchase waits behind a lock past the statement timeout: 503, then the retry."""
    async with _own_app(database_command_timeout_seconds=1) as (http, app):
        admin, program, code = await _shop(http, app)
        headers = auth(admin) | {"Idempotency-Key": "purchase-timeout"}
        body = _purchase(program, code)
        async with app.state.engine.connect() as other:
            await other.execute(text("LOCK TABLE conversions IN ACCESS EXCLUSIVE MODE"))
            unavailable = await http.post("/v1/conversions", json=body, headers=headers)
            await other.rollback()
        assert_problem(unavailable, 503, "database_unavailable")
        assert unavailable.headers["retry-after"]
        await _assert_retry_runs_anew(http, app, "/v1/conversions", body, headers)
        assert await _count(app, Conversion) == 1


async def test_a_final_client_error_is_still_replayed(client: AsyncClient, app: Any) -> None:
    """A 4xx of the request itself is stored: the same request would get it again."""
    admin, program, _ = await _shop(client, app)
    headers = auth(admin) | {"Idempotency-Key": "unknown-code"}
    body = _purchase(program, "NOSUCHCODE")
    first = await client.post("/v1/redemptions", json={"code": "NOPE"}, headers=headers)
    assert first.status_code == 422
    again = await client.post("/v1/redemptions", json={"code": "NOPE"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    other_key = auth(admin) | {"Idempotency-Key": "bad-amount"}
    refused = await client.post(
        "/v1/conversions", json=body | {"amount": "-1.00"}, headers=other_key
    )
    assert refused.status_code == 422
    replayed = await client.post(
        "/v1/conversions", json=body | {"amount": "-1.00"}, headers=other_key
    )
    assert replayed.headers["idempotent-replayed"] == "true"
    assert await _count(app, IdempotencyRecord) == 2

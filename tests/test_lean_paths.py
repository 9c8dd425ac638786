"""The lean path (app.http.lean): POST /v1/clicks and GET /r/{code} answered from the caches
(refilled on a miss, one read per key) before the FastAPI stack, with the same answers, limits,
headers, logs and metrics, and a bounded staleness: what another replica changes takes effect
within the cache time."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from app.core import db
from app.main import create_app
from app.tracking import service
from app.tracking.models import Click
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.settings import DATABASE_URL, settings_for_tests

SHOP = "https://shop.example.com"
CACHED = {"auth_cache_seconds": 60, "code_cache_seconds": 60}


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[AsyncClient, Any]]:
    """Another app (a replica) on the suite's database, with the caches on."""
    app = create_app(settings_for_tests(**(CACHED | settings)))
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


@pytest.fixture
async def cached(client: AsyncClient) -> AsyncIterator[tuple[AsyncClient, Any]]:
    async with serving() as served:
        yield served


async def _program(http: AsyncClient, app: Any, **program: Any) -> tuple[str, str, str]:
    """An admin key, a program's id and one of its codes."""
    admin = await make_key(app)
    made = await make_program(http, admin, **program)
    code = (await make_referrer(http, admin, made["id"]))["default_code"]["code"]
    return admin, made["id"], code


async def _clicks(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Click)) or 0)


def _click(http: AsyncClient, key: str, code: str, **headers: str) -> Any:
    return http.post(
        "/v1/clicks",
        json={"code": code, "utm_source": "news", "landing_url": "https://shop.example.com/a"},
        headers=auth(key) | {"User-Agent": BROWSER_UA} | headers,
    )


async def test_lean_answers_read_as_the_full_stacks(client: AsyncClient, app: Any) -> None:
    admin, _, code = await _program(client, app)
    full_click = await _click(client, admin, code)  # the suite's app caches nothing
    full_link = await client.get(f"/r/{code}?utm_source=mail&x=1", headers={"Referer": SHOP})
    async with serving() as (http, _replica):
        await _click(http, admin, code)  # fills the caches
        lean_click = await _click(http, admin, code, **{"X-Request-ID": "req-1"})
        await http.get(f"/r/{code}")
        lean_link = await http.get(f"/r/{code}/?utm_source=mail&x=1", headers={"Referer": SHOP})
    assert lean_click.status_code == full_click.status_code == 201
    assert lean_click.headers["content-type"] == full_click.headers["content-type"]
    assert lean_click.headers["x-request-id"] == "req-1"
    assert lean_click.json().keys() == full_click.json().keys()
    assert lean_click.json()["code"] == code
    assert lean_click.json()["is_duplicate"] is True  # the same address as the first
    assert lean_link.status_code == full_link.status_code == 302
    assert len(lean_link.headers["x-request-id"]) == 32
    lean_to, full_to = lean_link.headers["location"], full_link.headers["location"]
    assert lean_to.split("click_id=")[0] == full_to.split("click_id=")[0]
    assert lean_to.endswith(f"&ref={code}") and full_to.endswith(f"&ref={code}")
    async with app.state.sessionmaker() as session:
        stored = (await session.scalars(select(Click).order_by(Click.created_at))).all()
    assert len(stored) == 6
    last = stored[-1]
    assert (last.source, last.utm_source, last.referring_url) == ("link", "mail", SHOP)


async def test_a_cached_click_and_link_never_reach_the_full_stack(
    cached: tuple[AsyncClient, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, app = cached
    admin, program_id, code = await _program(http, app)
    other = (await make_referrer(http, admin, program_id, "ref_2"))["default_code"]["code"]
    assert (await _click(http, admin, code)).status_code == 201  # fills the caches
    app.state.code_cache.clear()
    app.state.principal_cache.clear()

    async def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("reached the full stack")

    monkeypatch.setattr(service, "record_click", refuse)
    monkeypatch.setattr(service, "follow_link", refuse)
    # Not cached: read once by the lean path itself, then cached.
    answers = await asyncio.gather(*(_click(http, admin, c) for c in (code, other, code, other)))
    assert [a.status_code for a in answers] == [201] * 4
    assert (await http.get(f"/r/{code}")).status_code == 302
    assert (await _click(http, admin, other)).status_code == 201
    assert await _clicks(app) == 7
    # What the lean path does not answer (here an unknown code) goes down the full stack.
    with pytest.raises(RuntimeError, match="reached the full stack"):
        await _click(http, admin, "NOPE")


async def test_the_lean_path_counts_the_public_rate_limits(client: AsyncClient) -> None:
    async with serving(rate_limits_enabled=True, rate_limit_public_per_ip="5/minute") as (
        http,
        app,
    ):
        admin, _, code = await _program(http, app)
        statuses = [(await _click(http, admin, code)).status_code for _ in range(8)]
        links = [(await http.get(f"/r/{code}")).status_code for _ in range(7)]
        assert await _clicks(app) == 10
    # The first click went down the full stack, the others the lean path: one count for both.
    assert statuses == [201] * 5 + [429] * 3
    assert links == [302] * 5 + [429] * 2


async def test_widget_clicks_keep_the_origin_check_and_cors(client: AsyncClient) -> None:
    async with serving() as (http, app):
        _admin, program_id, code = await _program(http, app, allowed_origins=[SHOP])
        widget = await make_key(app, "publishable", [UUID(program_id)])
        answers = [await _click(http, widget, code, Origin=SHOP) for _ in range(3)]
        foreign = await _click(http, widget, code, Origin="https://evil.example")
        assert await _clicks(app) == 3
    assert [a.status_code for a in answers] == [201] * 3
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == SHOP
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
    assert foreign.status_code == 403
    assert foreign.json()["code"] == "origin_not_allowed"


async def test_requests_id_metrics_and_access_log(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as (http, app):
        admin, _, code = await _program(http, app)
        await _click(http, admin, code)
        await http.get(f"/r/{code}")
        with caplog.at_level(logging.INFO, logger="app.access"):
            click = await _click(http, admin, code, **{"X-Forwarded-For": "203.0.113.9"})
            link = await http.get(f"/r/{code}", headers={"X-Request-ID": "bad id"})
        body = (await http.get("/metrics")).text
    assert click.status_code == 201 and link.status_code == 302
    lines = [r for r in caplog.records if r.name == "app.access"]
    assert [(r.route, r.status) for r in lines] == [("/v1/clicks", 201), ("/r/{code}", 302)]  # type: ignore[attr-defined]
    assert lines[0].request_id == click.headers["x-request-id"]  # type: ignore[attr-defined]
    assert lines[0].key_id is not None and lines[1].key_id is None  # type: ignore[attr-defined]
    assert link.headers["x-request-id"] != "bad id"
    assert "203.0.113.9" not in str([r.__dict__ for r in lines])
    assert 'referral_http_requests_total{method="POST",route="/v1/clicks",status="201"}' in body
    assert 'referral_http_requests_total{method="GET",route="/r/{code}",status="302"}' in body


async def test_load_is_shed_against_the_one_in_flight_count(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(max_in_flight_requests=2) as (http, app):
        admin, _, code = await _program(http, app)
        await _click(http, admin, code)
        release = asyncio.Event()
        write = app.state.click_writer.write

        async def held(values: dict[str, Any]) -> bool:
            await release.wait()
            return bool(await write(values))

        monkeypatch.setattr(app.state.click_writer, "write", held)
        waiting = [asyncio.create_task(_click(http, admin, code)) for _ in range(2)]
        await asyncio.sleep(0.1)
        shed = await _click(http, admin, code)
        other = await http.get("/v1/programs", headers=auth(admin))  # the full stack's count
        release.set()
        assert [(await w).status_code for w in waiting] == [201, 201]
        assert app.state.in_flight.count == 0
    assert shed.status_code == 503 and shed.json()["code"] == "overloaded"
    assert other.status_code == 503


async def test_a_failed_batch_answers_503_and_stores_nothing(
    cached: tuple[AsyncClient, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, app = cached
    admin, _, code = await _program(http, app)
    await _click(http, admin, code)

    async def unreachable(*_: Any) -> list[bool]:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("gone"))

    monkeypatch.setattr(app.state.click_writer, "_flush", unreachable)
    answers = await asyncio.gather(*(_click(http, admin, code) for _ in range(3)))
    link = await http.get(f"/r/{code}")
    assert [a.status_code for a in answers] == [503] * 3
    assert answers[0].json()["code"] == "database_unavailable"
    assert link.status_code == 503
    assert await _clicks(app) == 1


async def test_everything_but_a_plain_click_goes_down_the_full_stack(
    cached: tuple[AsyncClient, Any],
) -> None:
    http, app = cached
    admin, _, code = await _program(http, app)
    await _click(http, admin, code)
    unknown = await http.post("/v1/clicks", json={"code": "NOPE"}, headers=auth(admin))
    invalid = await http.post("/v1/clicks", json={"code": code, "x": 1}, headers=auth(admin))
    not_json = await http.post("/v1/clicks", content=b"code=1", headers=auth(admin))
    too_large = await http.post(
        "/v1/clicks", json={"code": code, "visitor_id": "v" * 70_000}, headers=auth(admin)
    )
    keyed = await http.post(
        "/v1/clicks", json={"code": code}, headers=auth(admin) | {"Idempotency-Key": "k1"}
    )
    replayed = await http.post(
        "/v1/clicks", json={"code": code}, headers=auth(admin) | {"Idempotency-Key": "k1"}
    )
    unknown_link = await http.get("/r/NOPE")
    assert unknown.status_code == 404 and unknown.json()["code"] == "code_not_found"
    assert invalid.status_code == 422
    assert not_json.status_code == 415
    assert too_large.status_code == 413
    assert keyed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
    assert unknown_link.status_code == 404
    assert await _clicks(app) == 2


async def test_another_replicas_changes_take_effect_within_the_cache_time(
    client: AsyncClient, app: Any
) -> None:
    """A replica that cached a key and a code sees them revoked, disabled or paused elsewhere
    within REFERRAL_AUTH_CACHE_SECONDS / REFERRAL_CODE_CACHE_SECONDS (this replica at once)."""
    admin, program_id, code = await _program(client, app)
    secret = await client.post("/v1/api-keys", json={"kind": "secret"}, headers=auth(admin))
    key, key_id = secret.json()["key"], secret.json()["id"]
    ttl = {"auth_cache_seconds": 0.5, "code_cache_seconds": 0.5}
    async with serving(**ttl) as (http, _):
        assert (await _click(http, key, code)).status_code == 201
        assert (await http.get(f"/r/{code}")).status_code == 302
        revoked = await client.post(f"/v1/api-keys/{key_id}/revoke", headers=auth(admin))
        assert revoked.status_code == 200
        disabled = await client.patch(
            f"/v1/codes/{code}", json={"disabled": True}, headers=auth(admin)
        )
        assert disabled.status_code == 200
        await asyncio.sleep(0.6)
        assert (await _click(http, key, code)).status_code == 401
        link = await http.get(f"/r/{code}")
        assert link.status_code == 302 and "ref=" not in link.headers["location"]
        click = await _click(http, admin, code)
        assert click.status_code == 201 and click.json()["attributable"] is False
        paused = await client.patch(
            f"/v1/programs/{program_id}", json={"status": "paused"}, headers=auth(admin)
        )
        assert paused.status_code == 200
        await asyncio.sleep(0.6)
        refused = await _click(http, admin, code)
        assert refused.status_code == 409 and refused.json()["code"] == "program_not_active"
        link = await http.get(f"/r/{code}")
        assert link.status_code == 302 and "click_id=" not in link.headers["location"]


async def test_concurrent_misses_read_the_key_and_the_code_once(
    cached: tuple[AsyncClient, Any],
) -> None:
    http, app = cached
    admin, _, code = await _program(http, app)
    assert (await _click(http, admin, code)).status_code == 201
    app.state.code_cache.clear()
    app.state.principal_cache.clear()
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
    try:
        answers = await asyncio.gather(*(_click(http, admin, code) for _ in range(20)))
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", record)
    assert [a.status_code for a in answers] == [201] * 20
    selects = [s for s in statements if s.upper().startswith("SELECT")]
    assert len([s for s in selects if "FROM api_keys" in s]) == 1
    assert len([s for s in selects if "FROM codes" in s]) == 1


@pytest.mark.postgres
async def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
    client: AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pre-ping on every checkout (app.core.db.ping_when_idle), but one that sat idle in the
    pool is pinged: connections killed meanwhile (a restarted database) are not used."""
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    admin, _, code = await _program(client, app)
    killer = await asyncpg.connect(DATABASE_URL.replace("+asyncpg", ""))
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    await asyncio.sleep(0.1)
    assert (await _click(client, admin, code)).status_code == 201
    assert (await client.get(f"/r/{code}")).status_code == 302


async def test_batches_in_flight_together_keep_the_first_click_the_unique_one(
    cached: tuple[AsyncClient, Any],
) -> None:
    """Two batches may be in flight per process; their claims still go in the order the clicks
    came (app.tracking.click_writer), so the earliest click of a flood is the unique one."""
    http, app = cached
    admin, program_id, _ = await _program(http, app)
    code = (await make_referrer(http, admin, program_id, "ref_2"))["default_code"]["code"]
    for _ in range(3):
        answers = await asyncio.gather(*(_click(http, admin, code) for _ in range(60)))
        assert [a.status_code for a in answers] == [201] * 60
    async with app.state.sessionmaker() as session:
        stored = (
            await session.scalars(
                select(Click).where(Click.utm_source == "news").order_by(Click.occurred_at)
            )
        ).all()
    assert len(stored) == 180
    assert [c.is_duplicate for c in stored] == [False] + [True] * 179

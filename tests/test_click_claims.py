"""Unique clicks are decided in the database by claims (app.tracking.models.ClickClaim), with
today's definition: a click is a duplicate when the same visitor id or the same IP hash clicked
the same code within REFERRAL_DUPLICATE_CLICK_WINDOW_HOURS before it — any click, duplicates
included, so a visitor who keeps coming back inside the window stays a duplicate.

On Postgres and SQLite; two separate processes are in tests/test_click_uniqueness_replicas.py.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from alembic import command
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, func, select

from app.background import forget_lapsed_click_claims
from app.cli import alembic_config
from app.main import create_app
from app.tracking.click_writer import NO_CLICK, PRUNE_MARGIN, claim_unique_visits
from app.tracking.models import Click, ClickClaim
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.money_factories import set_occurred_at
from tests.settings import DATABASE_URL, settings_for_tests

WINDOW = timedelta(hours=24)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def visit(code_id: UUID, at: datetime, visitor: str | None, ip: str | None) -> dict[str, Any]:
    return {
        "id": uuid4(),
        "code_id": code_id,
        "occurred_at": at,
        "visitor_id": visitor,
        "ip_hash": ip,
    }


async def duplicates(app: Any, *batches: list[dict[str, Any]]) -> list[list[bool]]:
    """Each batch claimed in its own transaction, in order, as the click writer does."""
    found = []
    for batch in batches:
        async with app.state.sessionmaker() as session, session.begin():
            found.append(await claim_unique_visits(session, batch, WINDOW))
    return found


async def test_the_window_slides_from_every_click(client: AsyncClient, app: Any) -> None:
    code = uuid4()
    hours = [0, 23, 46, 69.5, 94, 94.5, 200]
    got = await duplicates(
        app, *([visit(code, T0 + timedelta(hours=h), "v1", None)] for h in hours)
    )
    # 23 h after the first: duplicate; 46 h: still (23 h after the 23 h one); 69.5 h: 23.5 h
    # after 46 h, still; 94 h: 24.5 h after the last, unique again; and so on.
    assert [d for [d] in got] == [False, True, True, True, False, True, False]


async def test_exactly_the_window_is_still_a_duplicate(client: AsyncClient, app: Any) -> None:
    code = uuid4()
    got = await duplicates(
        app,
        [visit(code, T0, None, "ip1")],
        [visit(code, T0 + WINDOW, None, "ip1")],
        [visit(code, T0 + 2 * WINDOW + timedelta(microseconds=1), None, "ip1")],
    )
    assert got == [[False], [True], [False]]


async def test_either_key_makes_a_duplicate(client: AsyncClient, app: Any) -> None:
    code, other = uuid4(), uuid4()
    got = await duplicates(
        app,
        [visit(code, T0, "v1", "ip1")],
        [
            visit(code, T0 + timedelta(minutes=1), "v2", "ip1"),  # same IP
            visit(code, T0 + timedelta(minutes=2), "v1", "ip9"),  # same visitor id
            visit(code, T0 + timedelta(minutes=3), "v2", "ip2"),  # v2 came in this batch
            visit(code, T0 + timedelta(minutes=4), "v3", "ip3"),  # new on both
            visit(code, T0 + timedelta(minutes=5), None, None),  # nothing to tell: unique
            visit(other, T0 + timedelta(minutes=6), "v1", "ip1"),  # another code
        ],
    )
    assert got == [[False], [True, True, True, False, False, False]]


async def test_within_one_batch_the_first_click_is_the_unique_one(
    client: AsyncClient, app: Any
) -> None:
    code = uuid4()
    batch = [visit(code, T0 + timedelta(milliseconds=n), "v1", "ip1") for n in range(50)]
    [got] = await duplicates(app, batch)
    assert got == [False] + [True] * 49
    async with app.state.sessionmaker() as session:
        claims = (await session.scalars(select(ClickClaim))).all()
    assert {(c.kind, c.value, c.claimed_by) for c in claims} == {
        ("visitor", "v1", batch[0]["id"]),
        ("ip", "ip1", batch[0]["id"]),
    }
    # seen until the batch's last click + the window
    assert {c.seen_until for c in claims} == {batch[-1]["occurred_at"] + WINDOW}


async def test_a_batch_is_one_statement(client: AsyncClient, app: Any) -> None:
    code = uuid4()
    batch = [visit(code, T0, f"v{n % 40}", f"ip{n % 7}") for n in range(500)]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
    try:
        [got] = await duplicates(app, batch)
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", record)
    assert [s.split()[0].upper() for s in statements if s.split()[0].upper() != "BEGIN"] == [
        "INSERT"
    ]
    # Clicks 0-6 are new on both keys; from 7 on, every IP hash has been seen.
    assert [n for n, d in enumerate(got) if not d] == list(range(7))


async def test_a_rolled_back_batch_leaves_no_claim(client: AsyncClient, app: Any) -> None:
    code = uuid4()
    async with app.state.sessionmaker() as session:
        await claim_unique_visits(session, [visit(code, T0, "v1", None)], WINDOW)
        await session.rollback()
    assert await duplicates(app, [visit(code, T0, "v1", None)]) == [[False]]


async def test_housekeeping_prunes_only_lapsed_claims(client: AsyncClient, app: Any) -> None:
    code = uuid4()
    now = datetime.now(UTC)
    await duplicates(
        app,
        [
            visit(code, now - WINDOW - PRUNE_MARGIN - timedelta(minutes=1), "old", None),
            visit(code, now - WINDOW - timedelta(minutes=1), "recently_lapsed", None),
            visit(code, now - timedelta(hours=1), "recent", None),
        ],
    )
    assert await forget_lapsed_click_claims(app.state.sessionmaker) == 1
    async with app.state.sessionmaker() as session:
        left = set(await session.scalars(select(ClickClaim.value)))
    assert left == {"recently_lapsed", "recent"}
    # Pruning decides nothing: the pruned visitor is unique again, as it was anyway.
    assert await duplicates(
        app,
        [visit(code, now, "old", None), visit(code, now, "recently_lapsed", None)],
        [visit(code, now, "recent", None)],
    ) == [[False, False], [True]]


async def test_clicks_through_the_api_take_claims(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    headers = auth(admin) | {"User-Agent": BROWSER_UA}
    first = await client.post("/v1/clicks", json={"code": code, "visitor_id": "v"}, headers=headers)
    # The per-request path (an Idempotency-Key) and the link use the same claims.
    keyed = await client.post(
        "/v1/clicks",
        json={"code": code, "visitor_id": "w"},
        headers=headers | {"Idempotency-Key": "k1"},
    )
    link = await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    assert link.status_code == 302
    assert (first.json()["is_duplicate"], keyed.json()["is_duplicate"]) == (False, True)
    async with app.state.sessionmaker() as session:
        claims = (await session.scalars(select(ClickClaim))).all()
        flags = dict((await session.execute(select(Click.id, Click.is_duplicate))).all())
    first_id, keyed_id = UUID(first.json()["click_id"]), UUID(keyed.json()["click_id"])
    # The keyed click was new as visitor "w", but its IP was the first click's.
    assert sorted((c.kind, c.claimed_by == first_id, c.claimed_by == keyed_id) for c in claims) == [
        ("ip", True, False),
        ("visitor", False, True),
        ("visitor", True, False),
    ]
    assert sorted(flags.values()) == [False, True, True]


@pytest.mark.postgres
async def test_two_workers_flooded_at_once_count_one_unique_click(
    client: AsyncClient, app: Any
) -> None:
    # Two app instances in one process: two click writers and two pools, as two workers.
    admin = await make_key(app)
    program = await make_program(client, admin)
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    # Small pools, as in production per worker; a generous checkout timeout, so a busy machine
    # slows the flood down instead of answering 503 (this test is about uniqueness, not load).
    workers = [
        create_app(settings_for_tests(database_pool_size=4, database_pool_timeout_seconds=30))
        for _ in range(2)
    ]
    try:
        clients = [
            AsyncClient(transport=ASGITransport(app=worker), base_url="http://testserver")
            for worker in workers
        ]
        headers = auth(admin) | {"User-Agent": BROWSER_UA}
        responses = await asyncio.gather(
            *(
                clients[n % 2].post(
                    "/v1/clicks",
                    json={"code": code, "visitor_id": "flood"},
                    headers=headers | ({"Idempotency-Key": f"f{n}"} if n % 4 == 0 else {}),
                )
                for n in range(80)
            )
        )
        for http in clients:
            await http.aclose()
    finally:
        for worker in workers:
            await worker.state.click_writer.stop()
            await worker.state.webhook_dispatcher.aclose()
            await worker.state.engine.dispose()
    assert [r.status_code for r in responses] == [201] * 80
    assert sum(not r.json()["is_duplicate"] for r in responses) == 1
    async with app.state.sessionmaker() as session:
        unique = await session.scalar(
            select(func.count()).select_from(Click).where(Click.is_duplicate.is_(False))
        )
    assert unique == 1


async def migrate_to(revision: str, down: bool = False) -> None:
    config: Any = alembic_config(DATABASE_URL)
    config.attributes["configure_logging"] = False
    # env.py calls asyncio.run, which cannot nest in this test's running loop.
    await asyncio.to_thread(command.downgrade if down else command.upgrade, config, revision)


async def test_the_upgrade_takes_over_the_last_window_of_clicks(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]

    async def click_from(ip: str, visitor: str) -> dict[str, Any]:
        transport = ASGITransport(app=app, client=(ip, 40000))
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.post(
                "/v1/clicks",
                json={"code": code, "visitor_id": visitor},
                headers=auth(admin) | {"User-Agent": BROWSER_UA},
            )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    recent = await click_from("198.51.100.1", "recent")
    old = await click_from("198.51.100.2", "old")
    await set_occurred_at(
        app, Click, old["click_id"], datetime.now(UTC) - WINDOW - timedelta(hours=1)
    )
    # As before migration 0008: clicks, no claims.
    await migrate_to("0007", down=True)  # to before 0008 (later migrations go too, and return)
    await migrate_to("head")
    async with app.state.sessionmaker() as session:
        claims = (await session.scalars(select(ClickClaim))).all()
    assert {(c.kind, c.claimed_by) for c in claims} == {("visitor", NO_CLICK), ("ip", NO_CLICK)}
    assert {c.value for c in claims if c.kind == "visitor"} == {"recent"}
    [seen_until] = {c.seen_until for c in claims}
    assert seen_until == datetime.fromisoformat(recent["occurred_at"]) + WINDOW
    # Still a duplicate just after the upgrade; a visitor from before the window is not.
    assert (await click_from("198.51.100.1", "recent"))["is_duplicate"] is True
    assert (await click_from("198.51.100.2", "old"))["is_duplicate"] is False

"""Lists cost a constant number of SQL statements per page, and no GET writes.

Every list and export endpoint is called at two page sizes over the same data; the statements
the app sends to the database are counted, and the count must not grow with the page. Every
statement of every GET is also checked: none inserts, updates or deletes (the one named
exception is the API key's `last_used_at`, the caller's own bookkeeping: ARCHITECTURE.md).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import AsyncClient
from sqlalchemy import event

from app.core.db import utcnow
from app.http import exports
from app.integrations.models import IntegrationEvent
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.fulfilment_helpers import connect_stripe
from tests.money_factories import add_rule, purchase

ROWS = 24
SMALL, LARGE = 4, 20
WRITES = ("INSERT", "UPDATE", "DELETE")
KEY_BOOKKEEPING = "UPDATE api_keys SET last_used_at"


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def reads(self) -> int:
        return len([s for s in self.seen if not s.startswith(KEY_BOOKKEEPING)])

    def writes(self) -> list[str]:
        return [
            s
            for s in self.seen
            if s.lstrip().upper().startswith(WRITES) and not s.startswith(KEY_BOOKKEEPING)
        ]


@contextmanager
def counting(app: Any) -> Iterator[Statements]:
    statements = Statements()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SELECT 1")):
            statements.seen.append(" ".join(statement.split()))

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def add_coupon_rule(client: AsyncClient, admin: str, program_id: str) -> None:
    """A coupon for each referee too: the lists show each reward's fulfilment."""
    await connect_stripe(client, admin, program_id)
    await add_rule(
        client,
        admin,
        program_id,
        recipient="referee",
        kind="fixed",
        amount="1.00",
        fulfilment="coupon",
        fulfilment_provider="stripe",
    )


@pytest.fixture
async def seeded(client: AsyncClient, app: Any) -> dict[str, Any]:
    """One program with ROWS of everything a list shows; ROWS programs, keys and endpoints."""
    admin = await make_key(app)
    prog = await make_program(client, admin)
    for n in range(ROWS - 1):
        await make_program(client, admin, name=f"Other {n}")
    for n in range(ROWS):
        await make_key(app, "secret", [UUID(prog["id"])])
        endpoint = await client.post(
            "/v1/webhook-endpoints",
            json={
                "url": f"http://127.0.0.1:9/hook{n}",
                "event_types": ["reward.created", "conversion.attributed"],
                "program_id": prog["id"],
            },
            headers=auth(admin),
        )
        assert endpoint.status_code == 201, endpoint.text
    for recipient in ("referrer", "referee"):
        await add_rule(client, admin, prog["id"], recipient=recipient, kind="fixed", amount="5.00")
    await add_coupon_rule(client, admin, prog["id"])
    referrers = []
    for n in range(ROWS):
        referrer = await make_referrer(client, admin, prog["id"], f"ref_{n}")
        referrers.append(referrer)
        code = referrer["default_code"]["code"]
        clicked = await client.get(
            f"/r/{code}",
            params={"utm_source": f"source{n}", "utm_medium": "social"},
            headers={"User-Agent": BROWSER_UA},
        )
        assert clicked.status_code == 302
        await purchase(client, admin, prog, f"order_{n}", f"buyer_{n}", "20.00", code=code)
    async with app.state.sessionmaker() as session:
        now = utcnow()
        for n in range(ROWS):
            session.add(
                IntegrationEvent(
                    id=uuid4(),
                    created_at=now,
                    updated_at=now,
                    program_id=UUID(prog["id"]),
                    provider="stripe",
                    external_id=f"evt_{n}",
                    topic="checkout.session.completed",
                    outcome="ignored",
                )
            )
        await session.commit()
    small = await make_program(client, admin, name="Small")
    for recipient in ("referrer", "referee"):
        await add_rule(client, admin, small["id"], recipient=recipient, kind="fixed", amount="5.00")
    await add_coupon_rule(client, admin, small["id"])
    for n in range(2):
        referrer = await make_referrer(client, admin, small["id"], f"small_{n}")
        code = referrer["default_code"]["code"]
        await purchase(client, admin, small, f"small_{n}", f"small_buyer_{n}", "9.00", code=code)
    endpoints = (await client.get("/v1/webhook-endpoints", headers=auth(admin))).json()["data"]
    fulfilments = (await client.get("/v1/fulfilments", headers=auth(admin))).json()["data"]
    return {
        "admin": admin,
        "program": prog["id"],
        "small": small["id"],
        "referrer": referrers[0]["id"],
        "endpoint": endpoints[0]["id"],
        "fulfilment": fulfilments[0]["id"],
    }


PAGED_LISTS = [
    "/v1/programs",
    "/v1/programs/{program}/referrers",
    "/v1/conversions",
    "/v1/rewards",
    "/v1/webhook-endpoints",
    "/v1/webhook-endpoints/{endpoint}/deliveries",
    "/v1/programs/{program}/integrations/stripe/events",
    "/v1/fulfilments",
]
LIMITED_TABLES = [
    "/v1/programs/{program}/metrics/referrers",
    "/v1/programs/{program}/metrics/channels",
]


async def _count(
    client: AsyncClient, app: Any, admin: str, path: str, params: dict[str, Any]
) -> Statements:
    with counting(app) as statements:
        response = await client.get(path, params=params, headers=auth(admin))
    assert response.status_code == 200, response.text
    return statements


@pytest.mark.parametrize("template", PAGED_LISTS + LIMITED_TABLES)
async def test_a_page_costs_the_same_whatever_its_size(
    client: AsyncClient, app: Any, seeded: dict[str, Any], template: str
) -> None:
    path = template.format(**seeded)
    admin = seeded["admin"]
    small = await _count(client, app, admin, path, {"limit": SMALL})
    large = await _count(client, app, admin, path, {"limit": LARGE})
    listed = (await client.get(path, params={"limit": LARGE}, headers=auth(admin))).json()
    assert len(listed["data"]) == LARGE, "the seed must fill the larger page"
    assert small.reads() == large.reads(), (path, small.seen, large.seen)
    assert large.writes() == [], large.writes()


@pytest.mark.parametrize(
    "template",
    [
        "/v1/conversions?program_id={program}",
        "/v1/rewards?program_id={program}",
        "/v1/programs/{program}/metrics/referrers",
    ],
)
async def test_csv_exports_cost_the_same_for_many_rows_as_for_few(
    client: AsyncClient,
    app: Any,
    seeded: dict[str, Any],
    template: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One export page over the big program (24 rows) and over the small one (2 rows)."""
    admin = seeded["admin"]
    monkeypatch.setattr(exports, "EXPORT_PAGE_SIZE", 4 * ROWS)
    counts = []
    for program in (seeded["program"], seeded["small"]):
        path, _, query = template.format(**(seeded | {"program": program})).partition("?")
        params = dict(part.split("=") for part in query.split("&") if part) | {"format": "csv"}
        with counting(app) as statements:
            response = await client.get(path, params=params, headers=auth(admin))
            assert response.status_code == 200, response.text
            lines = response.text.strip().splitlines()
        assert len(lines) > 2
        assert statements.writes() == []
        counts.append((len(lines), statements.reads()))
    (many, many_reads), (few, few_reads) = counts
    assert many > few
    assert many_reads == few_reads, counts


GETS = [
    "/v1/programs/{program}",
    "/v1/programs/{program}/reward-rules",
    "/v1/referrers/{referrer}",
    "/v1/referrers/{referrer}/balance",
    "/v1/referrers/{referrer}/codes",
    "/v1/referrers/{referrer}/metrics",
    "/v1/programs/{program}/metrics/summary",
    "/v1/programs/{program}/metrics/timeseries",
    "/v1/programs/{program}/metrics/cohorts",
    "/v1/api-keys",
    "/v1/webhook-endpoints/{endpoint}",
    "/v1/programs/{program}/fulfilment-providers",
    "/v1/fulfilments/{fulfilment}",
    "/v1/programs/{program}/email-templates",
    "/v1/programs/{program}/email-templates/enrolled",
    "/v1/programs/{program}/email-messages",
]


async def test_no_get_writes(client: AsyncClient, app: Any, seeded: dict[str, Any]) -> None:
    admin = seeded["admin"]
    conversion = (await client.get("/v1/conversions", headers=auth(admin))).json()["data"][0]
    paths = [t.format(**seeded) for t in GETS + PAGED_LISTS + LIMITED_TABLES] + [
        f"/v1/conversions/{conversion['id']}",
        f"/v1/conversions/{conversion['id']}/attribution",
    ]
    for path in paths:
        statements = await _count(client, app, admin, path, {})
        assert statements.writes() == [], (path, statements.writes())


# --- /v1/me…: a referrer session's own lists ---------------------------------------------------


@pytest.fixture
async def referrer_session(client: AsyncClient, app: Any) -> dict[str, Any]:
    """A referrer with ROWS friends (redeemed, some bought, one refunded) and their rewards."""
    admin = await make_key(app)
    prog = await make_program(client, admin)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00")
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="points", points=10)
    star = await make_referrer(client, admin, prog["id"], "star")
    other = await make_referrer(client, admin, prog["id"], "other")
    code = star["default_code"]["code"]
    for n in range(ROWS):
        redeemed = await client.post(
            "/v1/redemptions",
            json={"code": code, "customer_id": f"friend_{n}", "email": f"f{n}@example.com"},
            headers=auth(admin),
        )
        assert redeemed.status_code == 201, redeemed.text
        if n % 4:
            bought = await purchase(client, admin, prog, f"order_{n}", f"friend_{n}", "20.00")
            if n % 4 == 3:
                refund = await client.post(
                    f"/v1/conversions/{bought['id']}/refunds", json={}, headers=auth(admin)
                )
                assert refund.status_code == 201
        await purchase(
            client,
            admin,
            prog,
            f"o_{n}",
            f"o_friend_{n}",
            "9.00",
            code=other["default_code"]["code"],
        )
    minted = await client.post(f"/v1/referrers/{star['id']}/sessions", headers=auth(admin))
    assert minted.status_code == 201
    return {"token": minted.json()["token"]}


ME_LISTS = ["/v1/me/referrals", "/v1/me/rewards"]
ME_GETS = ["/v1/me", "/v1/me/balance", "/v1/me/progress", "/v1/me/leaderboard"]


async def _count_me(
    client: AsyncClient, app: Any, token: str, path: str, params: dict[str, Any]
) -> Statements:
    with counting(app) as statements:
        response = await client.get(path, params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return statements


@pytest.mark.parametrize("path", ME_LISTS)
async def test_a_referrers_page_costs_the_same_whatever_its_size(
    client: AsyncClient, app: Any, referrer_session: dict[str, Any], path: str
) -> None:
    token = referrer_session["token"]
    small = await _count_me(client, app, token, path, {"limit": SMALL})
    large = await _count_me(client, app, token, path, {"limit": LARGE})
    listed = (await client.get(path, params={"limit": LARGE}, headers=auth(token))).json()
    assert len(listed["data"]) == LARGE, "the seed must fill the larger page"
    assert small.reads() == large.reads(), (path, small.seen, large.seen)
    assert large.writes() == [], large.writes()


async def test_no_me_get_writes_and_the_leaderboard_takes_one_ranking_statement(
    client: AsyncClient, app: Any, referrer_session: dict[str, Any]
) -> None:
    token = referrer_session["token"]
    for path in ME_GETS + ME_LISTS:
        statements = await _count_me(client, app, token, path, {})
        assert statements.writes() == [], (path, statements.writes())
    board = await _count_me(client, app, token, "/v1/me/leaderboard", {"limit": 100})
    # The session's token, the referrer with its program, the ranking.
    assert board.reads() == 3, board.seen


async def test_the_email_outbox_pages_cost_the_same(
    mail_client: AsyncClient, mail_app: Any
) -> None:
    admin = await make_key(mail_app)
    prog = await make_program(mail_client, admin)
    for n in range(ROWS):
        await make_referrer(mail_client, admin, prog["id"], f"ref_{n}", email=f"r{n}@example.com")
    path = f"/v1/programs/{prog['id']}/email-messages"
    small = await _count(mail_client, mail_app, admin, path, {"limit": SMALL})
    large = await _count(mail_client, mail_app, admin, path, {"limit": LARGE})
    listed = (await mail_client.get(path, params={"limit": LARGE}, headers=auth(admin))).json()
    assert len(listed["data"]) == LARGE
    assert small.reads() == large.reads(), (small.seen, large.seen)
    assert large.writes() == []
    code = (
        listed["data"]
        and (
            await mail_client.get(f"/v1/programs/{prog['id']}/referrers", headers=auth(admin))
        ).json()["data"][0]["default_code"]["code"]
    )
    with counting(mail_app) as statements:
        for url in (f"/v1/codes/{code}/qr.svg", f"/v1/codes/{code}/qr.png"):
            assert (await mail_client.get(url)).status_code == 200
    assert statements.writes() == []

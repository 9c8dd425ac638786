"""The purchase path (POST /v1/conversions): its statements, and the rules cached in process."""

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, update

from app.conversions.service import _purchase_program
from app.core.access import OPERATOR
from app.core.db import utcnow
from app.main import create_app
from app.rewards.models import RewardRule
from app.rewards.rules import rules_for
from tests.factories import auth, make_key, make_program, make_referrer
from tests.settings import settings_for_tests

RULES = [
    {
        "name": "referrer: 10 % of every purchase",
        "recipient": "referrer",
        "kind": "percent",
        "percent": "10",
        "trigger": "every_purchase",
    },
    {
        "name": "referee: 5.00 on the first purchase",
        "recipient": "referee",
        "kind": "fixed",
        "amount": "5.00",
        "trigger": "first_purchase",
    },
]


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


def _recording(app: Any, statements: list[str]) -> Any:
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
    return record


def _purchase(program_id: str, event_id: str, code: str, amount: str = "80.00") -> dict[str, Any]:
    return {
        "program_id": program_id,
        "event_id": event_id,
        "customer_id": f"cust-{event_id}",
        "amount": amount,
        "currency": "USD",
        "code": code,
    }


async def _program_with_rules(
    http: AsyncClient, admin: str
) -> tuple[dict[str, Any], str, list[str]]:
    program = await make_program(http, admin)
    rule_ids = []
    for rule in RULES:
        made = await http.post(
            f"/v1/programs/{program['id']}/reward-rules", json=rule, headers=auth(admin)
        )
        assert made.status_code == 201, made.text
        rule_ids.append(made.json()["id"])
    code = (await make_referrer(http, admin, program["id"]))["default_code"]["code"]
    return program, code, rule_ids


async def _buy(http: AsyncClient, admin: str, program_id: str, event_id: str, code: str) -> Any:
    answer = await http.post(
        "/v1/conversions", json=_purchase(program_id, event_id, code), headers=auth(admin)
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def _paid(conversion: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((r["recipient"], r["amount"]) for r in conversion["rewards"])


async def test_a_warm_purchase_sends_six_statements(cached: tuple[AsyncClient, Any]) -> None:
    http, app = cached
    admin = await make_key(app)
    program, code, _ = await _program_with_rules(http, admin)
    await _buy(http, admin, program["id"], "e1", code)
    statements: list[str] = []
    record = _recording(app, statements)
    try:
        body = await _buy(http, admin, program["id"], "e2", code)
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", record)
    assert _paid(body) == [("referee", "5.00"), ("referrer", "8.00")]
    # The program (locked key-share, with its rules version and whether anyone listens), the
    # claim of the event_id, every attribution candidate, the referral (with "first purchase"),
    # the conversion's attribution, the rewards. Nothing is read back; no rules are read.
    kinds = [s.split()[0].upper() for s in statements if s.split()[0].upper() != "BEGIN"]
    assert kinds == ["SELECT", "INSERT", "SELECT", "INSERT", "UPDATE", "INSERT"], statements
    assert not any("reward_rules.version, reward_rules.active" in s for s in statements)
    # The answer built from what was written is the one a read gives.
    read = await http.get(f"/v1/conversions/{body['id']}", headers=auth(admin))
    assert read.json() == body


async def test_a_rule_change_in_another_process_is_paid_by_the_next_purchase(
    cached: tuple[AsyncClient, Any], client: AsyncClient
) -> None:
    """Two apps, two engines: `cached` buys (and caches the rules), `client` changes them."""
    http, app = cached
    admin = await make_key(app)
    program, code, (percent_rule, fixed_rule) = await _program_with_rules(http, admin)
    assert _paid(await _buy(http, admin, program["id"], "e1", code)) == [
        ("referee", "5.00"),
        ("referrer", "8.00"),
    ]
    changed = await client.patch(
        f"/v1/reward-rules/{percent_rule}", json={"percent": "20"}, headers=auth(admin)
    )
    assert changed.status_code == 200, changed.text
    bought = await _buy(http, admin, program["id"], "e2", code)
    assert _paid(bought) == [("referee", "5.00"), ("referrer", "16.00")]
    assert {r["rule_version"] for r in bought["rewards"] if r["recipient"] == "referrer"} == {2}
    off = await client.patch(
        f"/v1/reward-rules/{fixed_rule}", json={"active": False}, headers=auth(admin)
    )
    assert off.status_code == 200, off.text
    assert _paid(await _buy(http, admin, program["id"], "e3", code)) == [("referrer", "16.00")]
    added = await client.post(
        f"/v1/programs/{program['id']}/reward-rules",
        json={"recipient": "referrer", "kind": "points", "points": 7, "trigger": "every_purchase"},
        headers=auth(admin),
    )
    assert added.status_code == 201, added.text
    assert _paid(await _buy(http, admin, program["id"], "e4", code)) == [
        ("referrer", "16.00"),
        ("referrer", "7"),
    ]


async def test_a_rule_change_rolled_back_is_never_paid(cached: tuple[AsyncClient, Any]) -> None:
    """Rules read inside a transaction that changed them and rolled back are not served later."""
    http, app = cached
    admin = await make_key(app)
    program, code, (percent_rule, _) = await _program_with_rules(http, admin)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(RewardRule)
            .where(RewardRule.id == UUID(percent_rule))
            .values(percent=Decimal(50), version=RewardRule.version + 1, updated_at=utcnow())
        )
        program_row, version = await _purchase_program(session, OPERATOR, UUID(program["id"]))
        rules = await rules_for(session, program_row.id, version)
        assert {rule.percent for rule in rules} == {Decimal(50), None}
        await session.rollback()
    assert _paid(await _buy(http, admin, program["id"], "e1", code)) == [
        ("referee", "5.00"),
        ("referrer", "8.00"),
    ]

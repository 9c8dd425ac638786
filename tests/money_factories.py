"""Factories for the money path: programs with a referrer, rules, purchases, refunds, the ledger."""

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from httpx import AsyncClient, Response
from sqlalchemy import update

from tests.factories import auth, make_key, make_program, make_referrer


async def setup_program(
    client: AsyncClient, app: Any, **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An admin key, a program and its referrer alice (alice@example.com)."""
    admin = await make_key(app)
    prog = await make_program(client, admin, **program)
    referrer = await make_referrer(client, admin, prog["id"], "alice", email="alice@example.com")
    return admin, prog, referrer


async def add_rule(client: AsyncClient, key: str, program_id: str, **rule: Any) -> dict[str, Any]:
    response = await client.post(
        f"/v1/programs/{program_id}/reward-rules", json=rule, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def patch_rule(client: AsyncClient, key: str, rule_id: str, **changes: Any) -> dict[str, Any]:
    response = await client.patch(f"/v1/reward-rules/{rule_id}", json=changes, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def post_conversion(client: AsyncClient, key: str, **body: Any) -> Response:
    return await client.post("/v1/conversions", json=body, headers=auth(key))


async def purchase(
    client: AsyncClient,
    key: str,
    program: dict[str, Any],
    event_id: str,
    customer_id: str,
    amount: str,
    **extra: Any,
) -> dict[str, Any]:
    """POST a new conversion in the program's currency; asserts 201 and returns the body."""
    response = await post_conversion(
        client,
        key,
        program_id=program["id"],
        event_id=event_id,
        customer_id=customer_id,
        amount=amount,
        currency=program["currency"],
        **extra,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def post_refund(client: AsyncClient, key: str, conversion_id: str, **body: Any) -> Response:
    return await client.post(
        f"/v1/conversions/{conversion_id}/refunds", json=body, headers=auth(key)
    )


async def get_conversion(client: AsyncClient, key: str, conversion_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/conversions/{conversion_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def list_all(client: AsyncClient, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a paginated list, following next_cursor."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 100} | ({"cursor": cursor} if cursor else {})
        response = await client.get(path, params=query, headers=auth(key))
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def rewards(client: AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    return await list_all(client, key, "/v1/rewards", **params)


async def balance(client: AsyncClient, key: str, referrer_id: str) -> dict[str, dict[str, str]]:
    """The referrer's balance lines by unit."""
    response = await client.get(f"/v1/referrers/{referrer_id}/balance", headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["referrer_id"] == referrer_id
    return {line["unit"]: line for line in body["balances"]}


async def transition(
    client: AsyncClient, key: str, reward_id: str, action: str, body: Any = None
) -> Response:
    """POST /v1/rewards/{id}/approve|mark-paid|reverse."""
    return await client.post(f"/v1/rewards/{reward_id}/{action}", json=body, headers=auth(key))


async def set_occurred_at(app: Any, model: Any, row_id: str | UUID, when: datetime) -> None:
    """Move a stored touch (click, referral) in time: the API stamps them with the current time."""
    async with app.state.sessionmaker() as session:
        result = await session.execute(
            update(model).where(model.id == UUID(str(row_id))).values(occurred_at=when)
        )
        assert result.rowcount == 1
        await session.commit()


def amounts(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(recipient, amount, status) of ledger rows, sorted: an order-free view of a ledger."""
    return sorted((r["recipient"], r["amount"], r["status"]) for r in rows)


def total(rows: list[dict[str, Any]], unit: str, *statuses: str) -> Decimal:
    return sum(
        (
            Decimal(r["amount"])
            for r in rows
            if r["unit"] == unit and (not statuses or r["status"] in statuses)
        ),
        Decimal(0),
    )


class Shop:
    """A program with referrer alice; `buy` posts a purchase with alice's code."""

    def __init__(
        self, client: AsyncClient, admin: str, program: dict[str, Any], alice: dict[str, Any]
    ):
        self.client = client
        self.admin = admin
        self.program = program
        self.alice = alice
        self.events = 0

    @property
    def pid(self) -> str:
        return str(self.program["id"])

    async def rule(self, **rule: Any) -> dict[str, Any]:
        return await add_rule(self.client, self.admin, self.pid, **rule)

    async def buy(
        self, customer_id: str, amount: str, code: str | None = "alice", **extra: Any
    ) -> dict[str, Any]:
        self.events += 1
        if code == "alice":
            code = self.alice["default_code"]["code"]
        return await purchase(
            self.client,
            self.admin,
            self.program,
            f"ev_{self.events}",
            customer_id,
            amount,
            **({"code": code} if code else {}) | extra,
        )

    async def refund(self, conversion: dict[str, Any], **body: Any) -> Any:
        return await post_refund(self.client, self.admin, conversion["id"], **body)

    async def ledger(self, **params: Any) -> list[dict[str, Any]]:
        return await rewards(self.client, self.admin, **({"program_id": self.pid} | params))

    async def rewards_of(self, conversion: dict[str, Any]) -> list[dict[str, Any]]:
        return (await get_conversion(self.client, self.admin, conversion["id"]))["rewards"]


async def make_shop(client: AsyncClient, app: Any, **program: Any) -> Shop:
    admin, prog, alice = await setup_program(client, app, **program)
    return Shop(client, admin, prog, alice)


def only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def by_recipient(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {row["recipient"]: row for row in rows}
    assert len(found) == len(rows), rows
    return found

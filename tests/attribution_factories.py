"""A program with two referrers, and the touches attribution weighs: clicks and redemptions."""

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient

from tests.factories import (
    auth,
    make_referrer,
    record_click,
    redeem,
)
from tests.money_factories import (
    add_rule,
    setup_program,
)


class World:
    """A program with two referrers, alice and bob, and a fixed referrer reward of 5.00."""

    def __init__(
        self, admin: str, program: dict[str, Any], alice: dict[str, Any], bob: dict[str, Any]
    ):
        self.admin = admin
        self.program = program
        self.alice = alice
        self.bob = bob

    @property
    def alice_code(self) -> str:
        return str(self.alice["default_code"]["code"])

    @property
    def bob_code(self) -> str:
        return str(self.bob["default_code"]["code"])


async def make_world(client: AsyncClient, app: Any, **program: Any) -> World:
    admin, prog, alice = await setup_program(client, app, **program)
    bob = await make_referrer(client, admin, prog["id"], "bob", email="bob@example.com")
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="5.00",
        trigger="every_purchase",
    )
    return World(admin, prog, alice, bob)


async def click(client: AsyncClient, key: str, code: str, user_agent: str | None = None) -> str:
    response = await record_click(
        client, key, code, **({"user_agent": user_agent} if user_agent else {})
    )
    assert response.status_code == 201, response.text
    return str(response.json()["click_id"])


async def redemption(
    client: AsyncClient, key: str, code: str, customer_id: str, **extra: Any
) -> str:
    response = await redeem(client, key, code, customer_id, **extra)
    assert response.status_code == 201, response.text
    return str(response.json()["referral_id"])


async def explain(client: AsyncClient, key: str, conversion_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/conversions/{conversion_id}/attribution", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def outcomes(attribution: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(kind, source, outcome, reason) of every candidate, sorted."""
    return sorted(
        (c["kind"], c["source"], c["outcome"], c["reason"]) for c in attribution["candidates"]
    )


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)

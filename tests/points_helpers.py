"""Factories for the points catalogue: a program whose referrer alice earns points, items."""

from typing import Any

from httpx import AsyncClient, Response

from tests.factories import auth
from tests.fulfilment_helpers import connect_stripe
from tests.money_factories import add_rule, purchase, setup_program

STRIPE_COUPON = {
    "name": "$5 off your next order",
    "points": 500,
    "amount": "5.00",
    "fulfilment": "coupon",
    "fulfilment_provider": "stripe",
}


async def points_program(
    client: AsyncClient, app: Any, points: int = 500, **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An admin key, a program with Stripe connected whose every purchase pays the referrer
    `points`, and alice (alice@example.com)."""
    admin, prog, alice = await setup_program(client, app, **program)
    await connect_stripe(client, admin, prog["id"])
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="points",
        points=points,
        trigger="every_purchase",
    )
    return admin, prog, alice


async def earn(
    client: AsyncClient, admin: str, prog: dict[str, Any], alice: dict[str, Any], event: str
) -> None:
    """A purchase by a friend with alice's code: alice earns the rule's points (no hold)."""
    code = alice["default_code"]["code"]
    await purchase(client, admin, prog, event, f"friend-{event}", "40.00", code=code)


async def post_item(client: AsyncClient, key: str, program_id: str, **body: Any) -> Response:
    return await client.post(
        f"/v1/programs/{program_id}/points-items", json=body, headers=auth(key)
    )


async def add_item(client: AsyncClient, key: str, program_id: str, **body: Any) -> dict[str, Any]:
    response = await post_item(client, key, program_id, **(body or STRIPE_COUPON))
    assert response.status_code == 201, response.text
    item: dict[str, Any] = response.json()
    return item


async def spend(
    client: AsyncClient, key: str, referrer_id: str, item_id: str, **headers: str
) -> Response:
    return await client.post(
        f"/v1/referrers/{referrer_id}/points/redemptions",
        json={"item_id": item_id},
        headers={**auth(key), **headers},
    )

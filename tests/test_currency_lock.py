"""A program's currency is locked once an amount in it is stored (rules or conversions)."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.conversions.models import Conversion
from app.programs.models import Program
from tests.factories import assert_problem, auth, make_key, make_program
from tests.money_factories import add_rule, post_conversion, purchase, setup_program


async def patch_program(client: AsyncClient, key: str, program_id: str, **body: Any) -> Any:
    return await client.patch(f"/v1/programs/{program_id}", json=body, headers=auth(key))


async def test_the_currency_may_change_while_the_program_has_no_rules_and_no_conversions(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    response = await patch_program(client, admin, program["id"], currency="jpy")
    assert response.status_code == 200, response.text
    assert response.json()["currency"] == "JPY"


async def test_a_rule_locks_the_currency(client: AsyncClient, app: Any) -> None:
    admin, program, _ = await setup_program(client, app)
    await add_rule(client, admin, program["id"], recipient="referrer", kind="fixed", amount="10.00")
    response = await patch_program(client, admin, program["id"], currency="JPY")
    body = assert_problem(response, 409, "currency_locked")
    assert "USD" in body["detail"] and "reward rules" in body["detail"]
    # nothing changed, and the same currency (in any case) is still accepted with other fields
    current = await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))
    assert current.json()["currency"] == "USD"
    same = await patch_program(client, admin, program["id"], currency="usd", name="Renamed")
    assert same.status_code == 200 and same.json()["name"] == "Renamed"


async def test_an_inactive_rule_still_locks_it(client: AsyncClient, app: Any) -> None:
    admin, program, _ = await setup_program(client, app)
    rule = await add_rule(
        client, admin, program["id"], recipient="referee", kind="points", points=5
    )
    off = await client.patch(
        f"/v1/reward-rules/{rule['id']}", json={"active": False}, headers=auth(admin)
    )
    assert off.status_code == 200
    assert_problem(
        await patch_program(client, admin, program["id"], currency="EUR"), 409, "currency_locked"
    )


async def test_a_conversion_locks_the_currency_even_unattributed(
    client: AsyncClient, app: Any
) -> None:
    admin, program, _ = await setup_program(client, app)
    await purchase(client, admin, program, "ord-1", "organic-buyer", "80.00")
    response = await patch_program(client, admin, program["id"], currency="JPY")
    body = assert_problem(response, 409, "currency_locked")
    assert "conversions" in body["detail"]
    # the ledger keeps counting in USD: a JPY purchase is refused as before
    refused = await post_conversion(
        client,
        admin,
        program_id=program["id"],
        event_id="ord-2",
        customer_id="organic-buyer",
        amount="1200",
        currency="JPY",
    )
    assert_problem(refused, 422, "currency_mismatch")


@pytest.mark.postgres
async def test_purchases_racing_a_currency_change_never_mix_units(
    client: AsyncClient, app: Any
) -> None:
    """Either the change wins (later USD purchases are refused) or a purchase does (409)."""
    admin = await make_key(app)
    for round_ in range(5):
        program = await make_program(client, admin, name=f"Race {round_}")

        async def buy(n: int, program_id: str = program["id"]) -> int:
            response = await post_conversion(
                client,
                admin,
                program_id=program_id,
                event_id=f"race-{n}",
                customer_id=f"c-{n}",
                amount="10.00",
                currency="USD",
            )
            return response.status_code

        results = await asyncio.gather(
            *(buy(n) for n in range(8)),
            patch_program(client, admin, program["id"], currency="JPY"),
            *(buy(n) for n in range(8, 16)),
        )
        patched = results[8]
        assert patched.status_code in (200, 409), patched.text
        async with app.state.sessionmaker() as session:
            currency = await session.scalar(
                select(Program.currency).where(Program.id == program["id"])
            )
            units = set(
                await session.scalars(
                    select(Conversion.currency).where(Conversion.program_id == program["id"])
                )
            )
        assert units <= {currency}, (currency, units)
        if patched.status_code == 200:
            assert currency == "JPY" and not units
        else:
            assert currency == "USD" and units == {"USD"}

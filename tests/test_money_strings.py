"""Money is written exactly `-?[0-9]+(\\.[0-9]+)?`, then the currency's precision rule: every
money field (purchase and refund amounts, fixed rule amounts, minimum orders, tier amounts, in
creation and in changes) refuses anything else with a 422 that shows the expected form."""

from typing import Any

import pytest
from httpx import AsyncClient

from app.main import create_app
from tests.factories import assert_problem, auth
from tests.money_factories import (
    add_rule,
    post_conversion,
    post_refund,
    purchase,
    rewards,
    setup_program,
)
from tests.settings import settings_for_tests

# What Decimal() (or a JSON number) would take, and money refuses.
LOOSE = [
    80,
    80.5,
    0.1,
    "1e3",
    "1E3",
    "1_000",
    "\uff18\uff10",  # full-width digits
    "\u0665",  # Arabic-Indic five
    "+5",
    " 5",
    "5 ",
    "5.",
    ".5",
    "5\n",
    "0x10",
    "Infinity",
    "NaN",
    "5,00",
    "",
    True,
]
EXPECTED = 'must be a decimal string like "49.99"'


def refused(response: Any, field: str) -> None:
    detail = assert_problem(response, 422, "validation_error")["detail"]
    assert detail.startswith(f"{field}: {EXPECTED}"), detail


@pytest.mark.parametrize("amount", LOOSE, ids=repr)
async def test_a_purchase_amount_in_another_form_is_refused(
    client: AsyncClient, app: Any, amount: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    response = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="o1",
        customer_id="bob",
        amount=amount,
        currency="USD",
    )
    refused(response, "amount")
    listed = await client.get("/v1/conversions", headers=auth(admin))
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    ("currency", "amount", "stored"),
    [
        ("USD", "80.0", "80.00"),
        ("USD", "80", "80.00"),
        ("USD", "0080.10", "80.10"),
        ("JPY", "80", "80"),
    ],
)
async def test_trailing_zeros_within_the_minor_unit_are_taken(
    client: AsyncClient, app: Any, currency: str, amount: str, stored: str
) -> None:
    admin, prog, _ = await setup_program(client, app, currency=currency)
    bought = await purchase(client, admin, prog, "o1", "bob", amount)
    assert bought["amount"] == stored


@pytest.mark.parametrize(
    ("currency", "amount"), [("USD", "80.000"), ("USD", "80.001"), ("JPY", "80.0")]
)
async def test_more_decimals_than_the_currency_has_are_refused(
    client: AsyncClient, app: Any, currency: str, amount: str
) -> None:
    admin, prog, _ = await setup_program(client, app, currency=currency)
    response = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="o1",
        customer_id="bob",
        amount=amount,
        currency=currency,
    )
    assert_problem(response, 422, "invalid_amount")


@pytest.mark.parametrize("amount", ["-5", "0", "0.00"])
async def test_money_is_more_than_zero(client: AsyncClient, app: Any, amount: str) -> None:
    admin, prog, _ = await setup_program(client, app)
    response = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="o1",
        customer_id="bob",
        amount=amount,
        currency="USD",
    )
    assert "greater than 0" in assert_problem(response, 422, "validation_error")["detail"]


@pytest.mark.parametrize("amount", [80, "1e1", "1_0", "\uff15"], ids=repr)
async def test_a_refund_amount_in_another_form_is_refused(
    client: AsyncClient, app: Any, amount: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    bought = await purchase(client, admin, prog, "o1", "bob", "20.00")
    refused(await post_refund(client, admin, bought["id"], amount=amount), "amount")
    again = await client.get(f"/v1/conversions/{bought['id']}", headers=auth(admin))
    assert again.json()["refunded_amount"] == "0.00"
    assert (await post_refund(client, admin, bought["id"], amount="5.0")).status_code == 201


@pytest.mark.parametrize("amount", [5, "5e0", "5_0", "+5", "\uff15"], ids=repr)
async def test_rule_money_in_another_form_is_refused(
    client: AsyncClient, app: Any, amount: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    path = f"/v1/programs/{prog['id']}/reward-rules"
    fixed = {"recipient": "referrer", "kind": "fixed", "amount": "5.00"}
    cases = [
        ({**fixed, "amount": amount}, "amount"),
        ({**fixed, "min_order_amount": amount}, "min_order_amount"),
        ({**fixed, "tiers": [{"from_referral": 3, "amount": amount}]}, "tiers.0.amount"),
    ]
    for body, field in cases:
        refused(await client.post(path, json=body, headers=auth(admin)), field)
    assert (await client.get(path, headers=auth(admin))).json() == []

    rule = await add_rule(client, admin, prog["id"], **fixed)
    for changes, field in [
        ({"amount": amount}, "amount"),
        ({"min_order_amount": amount}, "min_order_amount"),
        ({"tiers": [{"from_referral": 3, "amount": amount}]}, "tiers.0.amount"),
    ]:
        response = await client.patch(
            f"/v1/reward-rules/{rule['id']}", json=changes, headers=auth(admin)
        )
        refused(response, field)
    unchanged = await client.get(f"/v1/reward-rules/{rule['id']}", headers=auth(admin))
    assert (unchanged.json()["version"], unchanged.json()["amount"]) == (1, "5.00")


async def test_a_rule_changed_after_the_fix_keeps_its_stored_amounts(
    client: AsyncClient, app: Any
) -> None:
    # A change validates the rule again with its stored (Decimal) amounts: those still pass.
    admin, prog, alice = await setup_program(client, app)
    rule = await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="5.0",
        min_order_amount="10",
        tiers=[{"from_referral": 2, "amount": "7.50"}],
    )
    changed = await client.patch(
        f"/v1/reward-rules/{rule['id']}", json={"hold_days": 3}, headers=auth(admin)
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["amount"], body["min_order_amount"], body["tiers"][0]["amount"]) == (
        "5.00",
        "10.00",
        "7.50",
    )
    await purchase(client, admin, prog, "o1", "bob", "20.00", code=alice["default_code"]["code"])
    assert [r["amount"] for r in await rewards(client, admin)] == ["5.00"]


def test_the_schema_gives_the_form_of_every_money_field() -> None:
    document = create_app(settings_for_tests()).openapi()
    money = {
        ("BatchCreate", "minimum_amount"),
        ("ConversionCreate", "amount"),
        ("ItemCreate", "amount"),
        ("ItemUpdate", "amount"),
        ("RefundCreate", "amount"),
        ("RuleCreate", "amount"),
        ("RuleCreate", "min_order_amount"),
        ("RuleUpdate", "amount"),
        ("RuleUpdate", "min_order_amount"),
        ("Tier", "amount"),
    }
    seen = set()
    for name, model in document["components"]["schemas"].items():
        for field, schema in model.get("properties", {}).items():
            options = schema.get("anyOf", [schema])
            if any(option.get("pattern") == r"^[0-9]+(\.[0-9]+)?$" for option in options):
                seen.add((name, field))
                [string] = [o for o in options if o.get("type") == "string"]
                assert "49.99" in string["description"]
    assert seen == money

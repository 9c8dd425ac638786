"""The points catalogue: items under a program (secret key), checked like rules against the
program's providers; bad input is refused and changes nothing."""

from typing import Any

from httpx import AsyncClient

from tests.factories import assert_problem, auth
from tests.fulfilment_helpers import connect_shopify
from tests.money_factories import setup_program
from tests.points_helpers import STRIPE_COUPON, add_item, points_program, post_item


async def items_of(client: AsyncClient, key: str, program_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/programs/{program_id}/points-items", headers=auth(key))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_items_are_created_listed_changed_and_deleted(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await points_program(client, app)
    coupon = await add_item(client, admin, prog["id"])
    assert {k: coupon[k] for k in STRIPE_COUPON} == STRIPE_COUPON
    assert (coupon["currency"], coupon["active"], coupon["coupon_percent"]) == ("USD", True, None)
    credit = await add_item(
        client,
        admin,
        prog["id"],
        name="$20 store credit",
        points=1500,
        amount="20",
        fulfilment="store_credit",
        fulfilment_provider="stripe",
    )
    assert credit["amount"] == "20.00"
    assert [i["id"] for i in await items_of(client, admin, prog["id"])] == [
        coupon["id"],
        credit["id"],
    ]  # cheapest first

    response = await client.patch(
        f"/v1/points-items/{coupon['id']}",
        json={"points": 450, "coupon_percent": "10"},
        headers=auth(admin),
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["points"], changed["coupon_percent"], changed["amount"]) == (450, "10", "5.00")
    # A new method starts its provider afresh: ledger takes none.
    response = await client.patch(
        f"/v1/points-items/{coupon['id']}", json={"fulfilment": "ledger"}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text
    assert (response.json()["fulfilment_provider"], response.json()["coupon_percent"]) == (
        None,
        None,
    )
    read = await client.get(f"/v1/points-items/{coupon['id']}", headers=auth(admin))
    assert read.json()["fulfilment"] == "ledger"

    deleted = await client.delete(f"/v1/points-items/{credit['id']}", headers=auth(admin))
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/points-items/{credit['id']}", headers=auth(admin))
    assert_problem(gone, 404, "points_item_not_found")


async def test_an_item_needing_an_unconfigured_provider_is_refused(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    response = await post_item(client, admin, prog["id"], **STRIPE_COUPON)
    body = assert_problem(response, 422, "fulfilment_provider_not_configured")
    assert f"/v1/programs/{prog['id']}/fulfilment-providers" in body["detail"]
    await connect_shopify(client, admin, prog["id"])
    gift = STRIPE_COUPON | {"fulfilment": "gift_card", "fulfilment_provider": "stripe"}
    assert_problem(await post_item(client, admin, prog["id"], **gift), 422, "invalid_fulfilment")
    assert await items_of(client, admin, prog["id"]) == []


async def test_values_the_provider_cannot_express_are_refused(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await points_program(client, app)
    cases = [
        (STRIPE_COUPON | {"amount": "4.995"}, "fulfilment_value_not_expressible"),
        (STRIPE_COUPON | {"coupon_percent": "100.5"}, "fulfilment_value_not_expressible"),
        (STRIPE_COUPON | {"coupon_percent": "12.345"}, "fulfilment_value_not_expressible"),
        (
            STRIPE_COUPON
            | {"fulfilment": "ledger", "fulfilment_provider": None, "amount": "4.995"},
            "invalid_points_item",
        ),
        (
            STRIPE_COUPON | {"fulfilment": "store_credit", "coupon_percent": "5"},
            "invalid_fulfilment",
        ),
        (STRIPE_COUPON | {"fulfilment": "cash", "fulfilment_provider": None}, "invalid_fulfilment"),
        (
            STRIPE_COUPON | {"fulfilment": "coupon", "fulfilment_provider": None},
            "invalid_fulfilment",
        ),
        (STRIPE_COUPON | {"points": 0}, "validation_error"),
        (STRIPE_COUPON | {"amount": "0"}, "validation_error"),
    ]
    for body, code in cases:
        response = await post_item(client, admin, prog["id"], **body)
        assert_problem(response, 422, code)
    yen_admin, yen, _ = await points_program(client, app, currency="JPY")
    half_yen = STRIPE_COUPON | {"amount": "500.5"}
    response = await post_item(client, yen_admin, yen["id"], **half_yen)
    assert (
        "minor unit" in assert_problem(response, 422, "fulfilment_value_not_expressible")["detail"]
    )
    assert await items_of(client, admin, prog["id"]) == []
    assert await items_of(client, yen_admin, yen["id"]) == []


async def test_a_bad_change_changes_nothing(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await points_program(client, app)
    item = await add_item(client, admin, prog["id"])
    for change, code in [
        ({"fulfilment_provider": "shopify"}, "fulfilment_provider_not_configured"),
        ({"amount": "1.001"}, "fulfilment_value_not_expressible"),
        ({"points": None}, "invalid_points_item"),
    ]:
        response = await client.patch(
            f"/v1/points-items/{item['id']}", json=change, headers=auth(admin)
        )
        assert_problem(response, 422, code)
    (unchanged,) = await items_of(client, admin, prog["id"])
    assert unchanged == item


async def test_an_item_locks_the_programs_currency(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    ledger = {"name": "Mug", "points": 100, "amount": "8.00", "fulfilment": "ledger"}
    assert (await post_item(client, admin, prog["id"], **ledger)).status_code == 201
    response = await client.patch(
        f"/v1/programs/{prog['id']}", json={"currency": "EUR"}, headers=auth(admin)
    )
    body = assert_problem(response, 409, "currency_locked")
    assert "points catalogue items" in body["detail"]

"""Reading batches: the list, and answers and exports whose statement count does not grow
with the number of lines; no GET writes."""

from typing import Any

from httpx import AsyncClient

from tests.factories import auth
from tests.money_factories import Shop, make_shop
from tests.payout_factories import (
    add_charity,
    batch_call,
    batch_path,
    earn,
    new_batch,
    pay_to,
    referrer_of,
    settings,
)
from tests.test_statement_counts import counting

CASH = {
    "recipient": "referrer",
    "kind": "fixed",
    "amount": "3.00",
    "fulfilment": "cash",
    "trigger": "every_purchase",
}


async def shop_with_batch(client: AsyncClient, app: Any, referrers: int) -> tuple[Shop, Any]:
    shop = await make_shop(client, app, name=f"Shop of {referrers}")
    charity = await add_charity(client, shop.admin, shop.pid)
    await shop.rule(**CASH)
    for index in range(referrers):
        referrer = await referrer_of(shop, f"r{index}")
        await pay_to(client, shop.admin, referrer["id"], "paypal", f"r{index}@example.com")
        await settings(client, shop.admin, referrer["id"], charity_id=charity["id"])
        await earn(shop, referrer, f"{shop.pid}-c{index}")
    await earn(shop, shop.alice, f"{shop.pid}-alice")  # no details: a left-out line
    return shop, await new_batch(shop)


def reads_of(shop: Shop, batch: dict[str, Any]) -> list[str]:
    one = batch_path(shop, "payout", f"/{batch['id']}")
    return [
        one,
        one + "?format=csv",
        one + "/paypal.csv",
        batch_path(shop),
        f"/v1/programs/{shop.pid}/charities",
        f"/v1/referrers/{shop.alice['id']}/payout-settings",
    ]


async def test_batch_reads_cost_the_same_for_many_lines_and_write_nothing(
    client: AsyncClient, app: Any
) -> None:
    small, small_batch = await shop_with_batch(client, app, 2)
    large, large_batch = await shop_with_batch(client, app, 15)
    assert len(large_batch["lines"]) == 15 and len(large_batch["left_out"]) == 1
    for few, many in zip(reads_of(small, small_batch), reads_of(large, large_batch), strict=True):
        counts = []
        for shop, path in ((small, few), (large, many)):
            with counting(app) as statements:
                response = await client.get(path, headers=auth(shop.admin))
            assert response.status_code == 200, (path, response.text)
            assert statements.writes() == [], (path, statements.writes())
            counts.append(statements.reads())
        assert counts[0] == counts[1], (few, counts)


async def test_the_list_shows_the_programs_batches_by_status(shop: Shop) -> None:
    await shop.rule(**CASH)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    await shop.buy("c1", "10.00")
    first = await new_batch(shop)
    assert (await batch_call(shop, first, "cancel")).status_code == 200
    second = await new_batch(shop)
    listed = await shop.client.get(batch_path(shop), headers=auth(shop.admin))
    assert [(b["id"], b["status"], b["total"]) for b in listed.json()["data"]] == [
        (first["id"], "cancelled", "3.00"),
        (second["id"], "open", "3.00"),
    ]
    open_only = await shop.client.get(
        batch_path(shop), params={"status": "open"}, headers=auth(shop.admin)
    )
    assert [b["id"] for b in open_only.json()["data"]] == [second["id"]]
    donations = await shop.client.get(batch_path(shop, "donation"), headers=auth(shop.admin))
    assert donations.json()["data"] == []

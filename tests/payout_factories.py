"""Factories for payouts: cash and donation rules, payout details, charities, batches."""

import csv
import io
from typing import Any

from httpx import AsyncClient, Response

from tests.factories import auth, make_referrer
from tests.money_factories import Shop


async def settings(client: AsyncClient, key: str, referrer_id: str, **body: Any) -> Response:
    return await client.patch(
        f"/v1/referrers/{referrer_id}/payout-settings", json=body, headers=auth(key)
    )


async def pay_to(client: AsyncClient, key: str, referrer_id: str, method: str, to: str) -> Any:
    response = await settings(client, key, referrer_id, payout_method=method, payout_recipient=to)
    assert response.status_code == 200, response.text
    return response.json()


async def add_charity(client: AsyncClient, key: str, program_id: str, **body: Any) -> Any:
    body = {"name": "Trees for All"} | body
    response = await client.post(
        f"/v1/programs/{program_id}/charities", json=body, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def referrer_of(shop: Shop, external_id: str, **extra: Any) -> dict[str, Any]:
    return await make_referrer(shop.client, shop.admin, shop.pid, external_id, **extra)


async def earn(shop: Shop, referrer: dict[str, Any], customer: str, amount: str = "100.00") -> Any:
    """A purchase with the referrer's code: the conversion, with its rewards."""
    return await shop.buy(customer, amount, code=referrer["default_code"]["code"])


def batch_path(shop: Shop, kind: str = "payout", suffix: str = "") -> str:
    return f"/v1/programs/{shop.pid}/{kind}-batches{suffix}"


async def create_batch(shop: Shop, kind: str = "payout", **body: Any) -> Response:
    body = {"currency": shop.program["currency"]} | body
    return await shop.client.post(batch_path(shop, kind), json=body, headers=auth(shop.admin))


async def new_batch(shop: Shop, kind: str = "payout", **body: Any) -> dict[str, Any]:
    response = await create_batch(shop, kind, **body)
    assert response.status_code == 201, response.text
    return response.json()


async def batch_call(
    shop: Shop, batch: dict[str, Any], action: str, body: Any = None, kind: str | None = None
) -> Response:
    kind = kind or batch["kind"]
    path = batch_path(shop, kind, f"/{batch['id']}/{action}")
    return await shop.client.post(path, json=body, headers=auth(shop.admin))


async def read_batch(shop: Shop, batch: dict[str, Any], **params: Any) -> Response:
    path = batch_path(shop, batch["kind"], f"/{batch['id']}")
    return await shop.client.get(path, params=params or None, headers=auth(shop.admin))


def csv_rows(response: Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def lines_by_external_id(batch: dict[str, Any], key: str = "lines") -> dict[str, Any]:
    return {line["external_id"]: line for line in batch[key]}

"""Metrics and exports as CSV: equal to the JSON, streamed page by page, formulas defused."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from app.core.csv import csv_cell
from app.http import exports
from tests.factories import (
    assert_problem,
    auth,
)
from tests.metrics_helpers import as_cells, get, parse_csv, shop


@pytest.mark.parametrize("endpoint", ["summary", "timeseries", "referrers", "channels", "cohorts"])
async def test_csv_equals_json(client: AsyncClient, app: Any, endpoint: str) -> None:
    data = await shop(client, app)
    path = f"/v1/programs/{data['pid']}/metrics/{endpoint}"
    end = datetime.now(UTC) + timedelta(minutes=1)
    params = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
    if endpoint in ("timeseries", "cohorts"):
        params["tz"] = "Europe/Paris"
    body = (await get(client, data["admin"], path, **params)).json()
    rows = parse_csv(await get(client, data["admin"], path, format="csv", **params))
    if endpoint == "summary":
        expected = [as_cells(body)]
    elif endpoint == "timeseries":
        expected = [as_cells(bucket) for bucket in body["buckets"]]
    elif endpoint == "cohorts":
        expected = [
            as_cells({"kind": c["kind"], "month": c["month"], "customers": c["customers"]} | p)
            for c in body["cohorts"]
            for p in c["periods"]
        ]
    else:
        expected = [as_cells(row) for row in body["data"]]
    assert rows
    assert [
        {key: row[key] for key in found} for row, found in zip(expected, rows, strict=True)
    ] == rows


async def test_conversions_and_rewards_csv_stream_every_page(
    client: AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = await shop(client, app)
    monkeypatch.setattr(exports, "EXPORT_PAGE_SIZE", 2)
    admin = data["admin"]
    listed = (await get(client, admin, "/v1/conversions", limit=200)).json()["data"]
    rows = parse_csv(await get(client, admin, "/v1/conversions", format="csv"))
    assert [row["id"] for row in rows] == [c["id"] for c in listed]
    assert [(r["amount"], r["refunded_amount"], r["code"], r["status"]) for r in rows] == [
        (c["amount"], c["refunded_amount"], c["code"] or "", c["status"]) for c in listed
    ]
    only_c1 = parse_csv(await get(client, admin, "/v1/conversions", format="csv", customer_id="c1"))
    assert [row["event_id"] for row in only_c1] == ["o1", "o2"]

    rewards = (await get(client, admin, "/v1/rewards", limit=200)).json()["data"]
    reward_rows = parse_csv(await get(client, admin, "/v1/rewards", format="csv"))
    assert reward_rows == [
        as_cells({key: value for key, value in reward.items()}) for reward in rewards
    ]
    reversed_rows = parse_csv(
        await get(client, admin, "/v1/rewards", format="csv", status="reversed")
    )
    assert [row["status"] for row in reversed_rows] == ["reversed"]
    bad = await client.get(
        "/v1/conversions", params={"format": "csv", "cursor": "nope"}, headers=auth(admin)
    )
    assert_problem(bad, 422, "invalid_cursor")


def test_csv_defuses_formulas() -> None:
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("-5.00") == "-5.00"
    assert csv_cell("+1 555") == "'+1 555"
    assert csv_cell(None) == ""

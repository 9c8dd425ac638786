"""Metrics requests: bad ranges and zones are 422, limits and spans per endpoint, program scoping
and keys."""

from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import AsyncClient

from tests.factories import (
    assert_problem,
    auth,
    make_key,
    make_program,
)
from tests.metrics_helpers import get, parse_csv, shop


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2026-03-01T00:00:00"}, "invalid_range"),
        ({"from": "yesterday"}, "validation_error"),
        ({"tz": "Mars/Olympus_Mons"}, "invalid_timezone"),
        ({"tz": "../../etc/passwd"}, "invalid_timezone"),
        ({"interval": "hour"}, "validation_error"),
        ({"format": "xml"}, "validation_error"),
    ],
)
async def test_bad_ranges_are_422(
    client: AsyncClient, app: Any, params: dict[str, str], code: str
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    response = await client.get(
        f"/v1/programs/{program['id']}/metrics/timeseries", params=params, headers=auth(admin)
    )
    assert_problem(response, 422, code)


async def test_limits_and_spans_per_endpoint(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    base = f"/v1/programs/{program['id']}/metrics"
    for endpoint in ("referrers", "channels"):
        too_many = await client.get(
            f"{base}/{endpoint}", params={"limit": 501}, headers=auth(admin)
        )
        assert_problem(too_many, 422, "invalid_limit")
        ok = await client.get(f"{base}/{endpoint}", params={"limit": 500}, headers=auth(admin))
        assert ok.status_code == 200
    long = {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert_problem(
        await client.get(f"{base}/summary", params=long, headers=auth(admin)), 422, "invalid_range"
    )
    # cohorts look further back: up to 1100 days
    cohorts = await client.get(f"{base}/cohorts", params=long, headers=auth(admin))
    assert cohorts.status_code == 200
    assert len(cohorts.json()["cohorts"]) == 2 * 24
    order = await client.get(f"{base}/referrers", params={"order_by": "name"}, headers=auth(admin))
    assert_problem(order, 422, "validation_error")


async def test_program_scoping_and_keys(client: AsyncClient, app: Any) -> None:
    data = await shop(client, app)
    other_id = data["other"]["id"]
    limited = await make_key(app, "secret", [UUID(other_id)])
    publishable = data["pub"]
    for endpoint in ("summary", "timeseries", "referrers", "channels", "cohorts"):
        path = f"/v1/programs/{data['pid']}/metrics/{endpoint}"
        hidden = await client.get(path, headers=auth(limited))
        missing = await client.get(
            f"/v1/programs/{uuid4()}/metrics/{endpoint}", headers=auth(limited)
        )
        assert_problem(hidden, 404, "program_not_found")
        assert hidden.json() == missing.json()
        assert_problem(await client.get(path, headers=auth(publishable)), 403, "forbidden")
        assert_problem(await client.get(path), 401, "unauthorized")
        assert_problem(
            await client.get(path, params={"format": "csv"}, headers=auth(limited)),
            404,
            "program_not_found",
        )
        own = await client.get(f"/v1/programs/{other_id}/metrics/{endpoint}", headers=auth(limited))
        assert own.status_code == 200, own.text
    hidden = await client.get(f"/v1/referrers/{data['alice']['id']}/metrics", headers=auth(limited))
    missing = await client.get(f"/v1/referrers/{uuid4()}/metrics", headers=auth(limited))
    assert_problem(hidden, 404, "referrer_not_found")
    assert hidden.json() == missing.json()
    # a limited key's exports hold only its programs' rows
    assert parse_csv(await get(client, limited, "/v1/conversions", format="csv")) == []

import json
import logging
from typing import Any

import pytest
from httpx import AsyncClient

from tests.factories import auth, make_key, make_program, make_referrer


async def test_request_id_is_echoed_or_made(client: AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


async def test_prometheus_metrics_count_requests_by_route(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))
    body = (await client.get("/metrics")).text
    assert (
        'referral_http_requests_total{method="GET",route="/v1/programs/{program_id}",status="200"}'
        in body
    )
    assert "referral_db_pool_size" in body


async def test_access_log_has_no_personal_data(
    client: AsyncClient, app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"])
    code = referrer["default_code"]["code"]
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = await client.post(
            "/v1/redemptions?email=leak@example.com",
            json={"code": code, "customer_id": "c1", "email": "leak@example.com"},
            headers=auth(admin) | {"X-Forwarded-For": "203.0.113.9"},
        )
    assert response.status_code == 201
    records = [r for r in caplog.records if r.name == "app.access"]
    assert records, "no access log line"
    line = records[-1]
    assert getattr(line, "route", None) == "/v1/redemptions"
    assert getattr(line, "status", None) == 201
    assert getattr(line, "key_id", None) is not None
    text = json.dumps(line.__dict__, default=str)
    for secret in ("leak@example.com", "203.0.113.9", "127.0.0.1", admin):
        assert secret not in text

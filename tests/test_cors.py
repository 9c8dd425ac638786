from typing import Any
from uuid import UUID

from httpx import AsyncClient

from tests.factories import auth, make_key, make_program, make_referrer

SHOP = "https://shop.example.com"


async def _widget(client: AsyncClient, app: Any) -> tuple[str, str, str]:
    admin = await make_key(app)
    program = await make_program(client, admin, allowed_origins=[SHOP])
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    publishable = await make_key(app, "publishable", [UUID(program["id"])])
    return admin, publishable, code


async def test_preflight_allows_only_storefront_origins(client: AsyncClient, app: Any) -> None:
    await _widget(client, app)
    preflight = {"Access-Control-Request-Method": "POST"}
    ok = await client.options("/v1/clicks", headers=preflight | {"Origin": SHOP})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == SHOP
    assert "authorization" in ok.headers["access-control-allow-headers"]
    other = await client.options(
        "/v1/clicks", headers=preflight | {"Origin": "https://evil.example"}
    )
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


async def test_widget_calls_get_cors_headers(client: AsyncClient, app: Any) -> None:
    _, publishable, code = await _widget(client, app)
    response = await client.post(
        "/v1/clicks", json={"code": code}, headers=auth(publishable) | {"Origin": SHOP}
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == SHOP
    lookup = await client.get(f"/v1/codes/{code}", headers=auth(publishable) | {"Origin": SHOP})
    assert lookup.headers["access-control-allow-origin"] == SHOP


async def test_foreign_origin_is_refused_and_stores_nothing(client: AsyncClient, app: Any) -> None:
    _, publishable, code = await _widget(client, app)
    response = await client.post(
        "/v1/redemptions",
        json={"code": code, "customer_id": "c1"},
        headers=auth(publishable) | {"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    again = await client.post(
        "/v1/redemptions",
        json={"code": code, "customer_id": "c1"},
        headers=auth(publishable) | {"Origin": SHOP},
    )
    assert again.status_code == 201


async def test_secret_endpoints_send_no_cors_allowance(client: AsyncClient, app: Any) -> None:
    admin, _, _ = await _widget(client, app)
    response = await client.get("/v1/programs", headers=auth(admin) | {"Origin": SHOP})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/v1/programs", headers={"Origin": SHOP, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers

"""Small async factories that go through the service layer or the HTTP API."""

from typing import Any
from uuid import UUID

from httpx import AsyncClient, Response
from sqlalchemy import select

from app.keys.service import create_key
from app.referrers.models import Code


async def make_key(app: Any, kind: str = "admin", program_ids: list[UUID] | None = None) -> str:
    async with app.state.sessionmaker() as session:
        created = await create_key(session, kind, program_ids)
        await session.commit()
    return created.secret


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_program(client: AsyncClient, admin_key: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Spring referrals",
        "landing_url": "https://shop.example.com/welcome?lang=en",
        "currency": "USD",
        "referee_offer": "10% off your first order",
    } | overrides
    response = await client.post("/v1/programs", json=body, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    return response.json()


async def make_referrer(
    client: AsyncClient, key: str, program_id: str, external_id: str = "cust_ref_1", **extra: Any
) -> dict[str, Any]:
    body = {"external_id": external_id} | extra
    response = await client.post(
        f"/v1/programs/{program_id}/referrers", json=body, headers=auth(key)
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


# A real browser's user agent: the default httpx one is (rightly) flagged as a bot.
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is a problem+json document with this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    return body


async def make_code(client: AsyncClient, key: str, referrer_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/referrers/{referrer_id}/codes", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()


async def patch_code(client: AsyncClient, key: str, code: str, **body: Any) -> dict[str, Any]:
    response = await client.patch(f"/v1/codes/{code}", json=body, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def redeem(
    client: AsyncClient, key: str, code: str, customer_id: str, **extra: Any
) -> Response:
    body = {"code": code, "customer_id": customer_id} | extra
    return await client.post("/v1/redemptions", json=body, headers=auth(key))


async def record_click(
    client: AsyncClient, key: str, code: str, user_agent: str = BROWSER_UA, **extra: Any
) -> Response:
    return await client.post(
        "/v1/clicks",
        json={"code": code} | extra,
        headers=auth(key) | {"User-Agent": user_agent},
    )


async def code_row(app: Any, code: str) -> Code:
    async with app.state.sessionmaker() as session:
        found = await session.scalar(select(Code).where(Code.normalized == code.upper()))
    assert found is not None
    return found


async def db_all(app: Any, query: Any) -> list[Any]:
    """The rows of `query`, read in a fresh session (what the service committed)."""
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(query))

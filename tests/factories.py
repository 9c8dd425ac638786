"""Small async factories that go through the service layer or the HTTP API."""

from typing import Any
from uuid import UUID

from httpx import AsyncClient

from app.keys.service import create_key


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

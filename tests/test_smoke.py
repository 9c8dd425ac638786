from httpx import AsyncClient

from tests.factories import auth, make_key, make_program, make_referrer


async def test_walkthrough(client: AsyncClient, app: object) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"])
    code = referrer["default_code"]["code"]
    response = await client.get(f"/r/{code}")
    assert response.status_code == 302
    redeem = await client.post(
        "/v1/redemptions", json={"code": code, "customer_id": "new"}, headers=auth(admin)
    )
    assert redeem.status_code == 201, redeem.text

from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import select

from app.conversions.models import Conversion
from app.tracking.models import Click, Referral
from tests.factories import auth, make_key, make_program, make_referrer


async def _customer_history(client: AsyncClient, app: Any) -> tuple[str, dict, str]:
    admin = await make_key(app)
    program = await make_program(client, admin)
    code = (await make_referrer(client, admin, program["id"], "ref-1"))["default_code"]["code"]
    click = await client.post(
        "/v1/clicks", json={"code": code, "visitor_id": "v-1"}, headers=auth(admin)
    )
    for customer in ("gone", "stays"):
        response = await client.post(
            "/v1/redemptions",
            json={
                "code": code,
                "customer_id": customer,
                "email": f"{customer}@example.com",
                **({"click_id": click.json()["click_id"]} if customer == "gone" else {}),
            },
            headers=auth(admin),
        )
        assert response.status_code == 201
        conversion = await client.post(
            "/v1/conversions",
            json={
                "program_id": program["id"],
                "event_id": f"ord-{customer}",
                "customer_id": customer,
                "email": f"{customer}@example.com",
                "amount": "30.00",
                "currency": "USD",
                "metadata": {"address": "1 Main St"},
            },
            headers=auth(admin),
        )
        assert conversion.status_code == 201
        assert conversion.json()["status"] == "attributed"
    return admin, program, code


async def test_erasure_anonymises_and_keeps_counts(client: AsyncClient, app: Any) -> None:
    admin, _program, _ = await _customer_history(client, app)
    response = await client.delete("/v1/customers/gone", headers=auth(admin))
    assert response.status_code == 200
    body = response.json()
    assert (body["clicks"], body["referrals"], body["conversions"]) == (1, 1, 1)
    async with app.state.sessionmaker() as session:
        conversions = list(await session.scalars(select(Conversion)))
        referrals = list(await session.scalars(select(Referral)))
        clicks = list(await session.scalars(select(Click)))
    assert len(conversions) == 2 and len(referrals) == 2
    assert all(c.status == "attributed" for c in conversions)
    erased = [c for c in conversions if c.customer_id == body["replaced_by"]]
    assert len(erased) == 1 and erased[0].email is None and erased[0].metadata_ == {}
    kept = [c for c in conversions if c.customer_id == "stays"]
    assert kept[0].email == "stays@example.com"
    assert {r.email for r in referrals} == {None, "stays@example.com"}
    assert clicks[0].ip_hash is None and clicks[0].visitor_id is None
    everything = repr([vars(row) for row in conversions + referrals + clicks])
    assert "gone@example.com" not in everything and "'gone'" not in everything


async def test_erasure_stays_inside_the_keys_programs(client: AsyncClient, app: Any) -> None:
    admin, _program, _ = await _customer_history(client, app)
    other_program = await make_program(client, admin, name="Other")
    limited = await make_key(app, "secret", [UUID(other_program["id"])])
    response = await client.delete("/v1/customers/gone", headers=auth(limited))
    assert response.status_code == 200
    assert response.json()["conversions"] == 0
    publishable = await make_key(app, "publishable")
    refused = await client.delete("/v1/customers/gone", headers=auth(publishable))
    assert refused.status_code == 403

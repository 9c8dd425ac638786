"""Shared by the tracking tests (links, clicks, redemptions): the program and referrer they
shape, the publishable key and code fixtures, and readers of the stored clicks and referrals."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.tracking.models import Click, Referral
from tests.factories import auth, code_row, db_all, make_key

LANDING = "https://shop.example.com/welcome?lang=en"

PROGRAM = {"landing_url": LANDING}
REFERRER = {"email": "Ref.One@Example.com"}


async def clicks(app: Any) -> list[Click]:
    return await db_all(app, select(Click).order_by(Click.created_at, Click.id))


async def referrals(app: Any) -> list[Referral]:
    return await db_all(app, select(Referral))


async def pause(client: AsyncClient, admin: str, program_id: str) -> None:
    response = await client.patch(
        f"/v1/programs/{program_id}", json={"status": "paused"}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text


async def assert_nothing_changed(app: Any, code: str, count: int = 0) -> None:
    assert (await code_row(app, code)).redemption_count == count
    assert len(await referrals(app)) == count
    assert all(click.customer_id is None for click in await clicks(app))


@pytest.fixture(name="publishable")
async def publishable_fixture(client: AsyncClient, app: Any) -> str:
    return await make_key(app, "publishable")


@pytest.fixture(name="code")
def code_fixture(referrer: dict[str, Any]) -> str:
    return referrer["default_code"]["code"]

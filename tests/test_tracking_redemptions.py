"""Redemptions: a redeemed code makes a referral tied to its click; a refusal changes nothing."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.referrers.models import Code
from tests.factories import (
    assert_problem,
    auth,
    code_row,
    db_all,
    make_code,
    make_program,
    make_referrer,
    patch_code,
    record_click,
    redeem,
)

# PROGRAM and REFERRER shape the conftest program and referrer fixtures of this module.
from tests.tracking_helpers import (  # noqa: F401
    PROGRAM,
    REFERRER,
    assert_nothing_changed,
    clicks,
    code_fixture,
    pause,
    publishable_fixture,
    referrals,
)

# --- redemptions -----------------------------------------------------------------------------


async def test_redeem_makes_a_referral(
    client: AsyncClient,
    app: Any,
    publishable: str,
    program: dict[str, Any],
    referrer: dict[str, Any],
    code: str,
) -> None:
    response = await redeem(client, publishable, code.lower(), "new_1", email="New@Example.com")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["program_id"] == program["id"]
    assert body["referrer_id"] == referrer["id"]
    assert body["code"] == code
    assert body["customer_id"] == "new_1"
    assert body["click_id"] is None

    [referral] = await referrals(app)
    assert referral.id == UUID(body["referral_id"])
    assert referral.customer_id == "new_1"
    assert referral.email == "new@example.com"
    assert referral.source == "redemption"
    assert referral.referrer_id == UUID(referrer["id"])
    assert (await code_row(app, code)).redemption_count == 1


async def test_redeem_with_click_ties_the_click_to_the_customer(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    click = (await record_click(client, publishable, code)).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert response.status_code == 201, response.text
    assert response.json()["click_id"] == click["click_id"]
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"
    [referral] = await referrals(app)
    assert referral.click_id == UUID(click["click_id"])


async def test_redeem_with_click_of_another_code_of_the_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    other = await make_referrer(client, admin, program["id"], "ref_2")
    click = (await record_click(client, publishable, other["default_code"]["code"])).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert response.status_code == 201, response.text
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"


async def test_redeem_unknown_code(client: AsyncClient, app: Any, publishable: str) -> None:
    response = await redeem(client, publishable, "NOPE23456", "new_1")
    assert_problem(response, 404, "code_not_found")
    assert await referrals(app) == []


async def test_redeem_disabled_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    await patch_code(client, admin, code, disabled=True)
    click = (await record_click(client, publishable, code)).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert_problem(response, 409, "code_disabled")
    await assert_nothing_changed(app, code)


async def test_redeem_expired_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await patch_code(client, admin, code, expires_at=past)
    response = await redeem(client, publishable, code, "new_1")
    assert_problem(response, 409, "code_expired")
    await assert_nothing_changed(app, code)


async def test_redeem_exhausted_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, referrer: dict[str, Any]
) -> None:
    limited = (await make_code(client, admin, referrer["id"], max_redemptions=2))["code"]
    assert (await redeem(client, publishable, limited, "new_1")).status_code == 201
    assert (await redeem(client, publishable, limited, "new_2")).status_code == 201
    click = (await record_click(client, publishable, limited)).json()
    response = await redeem(client, publishable, limited, "new_3", click_id=click["click_id"])
    assert_problem(response, 409, "code_exhausted")
    assert (await code_row(app, limited)).redemption_count == 2
    assert sorted(r.customer_id for r in await referrals(app)) == ["new_1", "new_2"]
    assert all(c.customer_id is None for c in await clicks(app))


async def test_redeem_in_paused_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    await pause(client, admin, program["id"])
    response = await redeem(client, publishable, code, "new_1")
    assert_problem(response, 409, "program_not_active")
    await assert_nothing_changed(app, code)


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param({"customer_id": "ref_1"}, id="external-id"),
        pytest.param({"customer_id": "someone", "email": "ref.one@example.com"}, id="email"),
        pytest.param({"customer_id": "someone", "email": "REF.ONE@EXAMPLE.COM"}, id="email-case"),
    ],
)
async def test_redeem_own_code_is_self_referral(
    client: AsyncClient, app: Any, publishable: str, code: str, customer: dict[str, Any]
) -> None:
    click = (await record_click(client, publishable, code)).json()
    body = {"code": code, "click_id": click["click_id"]} | customer
    response = await client.post("/v1/redemptions", json=body, headers=auth(publishable))
    assert_problem(response, 422, "self_referral")
    await assert_nothing_changed(app, code)


async def test_redeem_twice_is_already_referred(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    assert (await redeem(client, publishable, code, "new_1")).status_code == 201
    again = await redeem(client, publishable, code, "new_1")
    assert_problem(again, 409, "already_referred")
    # Nor through another referrer's code in the same program.
    other = await make_referrer(client, admin, program["id"], "ref_2")
    other_code = other["default_code"]["code"]
    through_other = await redeem(client, publishable, other_code, "new_1")
    assert_problem(through_other, 409, "already_referred")
    assert (await code_row(app, code)).redemption_count == 1
    assert (await code_row(app, other_code)).redemption_count == 0
    assert len(await referrals(app)) == 1


async def test_same_customer_may_be_referred_in_another_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    other_program = await make_program(client, admin, name="Other")
    other = await make_referrer(client, admin, other_program["id"], "ref_x")
    assert (await redeem(client, publishable, code, "new_1")).status_code == 201
    second = await redeem(client, publishable, other["default_code"]["code"], "new_1")
    assert second.status_code == 201, second.text
    assert len(await referrals(app)) == 2


async def test_redeem_with_click_of_another_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    other_program = await make_program(client, admin, name="Other")
    other = await make_referrer(client, admin, other_program["id"], "ref_x")
    foreign = (await record_click(client, publishable, other["default_code"]["code"])).json()
    response = await redeem(client, publishable, code, "new_1", click_id=foreign["click_id"])
    assert_problem(response, 422, "click_not_found")
    unknown = await redeem(client, publishable, code, "new_1", click_id=str(uuid4()))
    assert_problem(unknown, 422, "click_not_found")
    await assert_nothing_changed(app, code)


async def test_redeem_keeps_a_click_already_tied_to_another_customer(
    client: AsyncClient, app: Any, admin: str, publishable: str, referrer: dict[str, Any], code: str
) -> None:
    click = (await record_click(client, publishable, code)).json()
    first = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert first.status_code == 201
    second = await redeem(client, publishable, code, "new_2", click_id=click["click_id"])
    assert second.status_code == 201, second.text
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"code": "X"}, id="no-customer"),
        pytest.param({"customer_id": "c"}, id="no-code"),
        pytest.param({"code": "X", "customer_id": ""}, id="empty-customer"),
        pytest.param({"code": "X", "customer_id": "c", "email": "nope"}, id="bad-email"),
        pytest.param({"code": "X", "customer_id": "c", "click_id": "nope"}, id="bad-click-id"),
        pytest.param({"code": "X", "customer_id": "c", "referrer_id": str(uuid4())}, id="referrer"),
    ],
)
async def test_redeem_refuses_bad_input(
    client: AsyncClient, app: Any, publishable: str, code: str, body: dict[str, Any]
) -> None:
    body = {k: (code if v == "X" else v) for k, v in body.items()}
    response = await client.post("/v1/redemptions", json=body, headers=auth(publishable))
    assert_problem(response, 422, "validation_error")
    await assert_nothing_changed(app, code)


async def test_code_row_counts_only_successes(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:

    for i in range(3):
        assert (await redeem(client, publishable, code, f"new_{i}")).status_code == 201
    for i in range(3):
        assert (await redeem(client, publishable, code, f"new_{i}")).status_code == 409
    rows = await db_all(app, select(Code.redemption_count).where(Code.normalized == code))
    assert rows == [3]

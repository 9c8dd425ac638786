"""Concurrent requests against a real Postgres: row locks and unique constraints hold."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from app.referrers.models import Code, Referrer
from app.tracking.models import Referral
from tests.factories import (
    assert_problem,
    auth,
    code_row,
    db_all,
    make_code,
    make_referrer,
    redeem,
)

pytestmark = pytest.mark.postgres

N = 20


def by_status(responses: list[Response]) -> dict[int, list[Response]]:
    grouped: dict[int, list[Response]] = {}
    for response in responses:
        grouped.setdefault(response.status_code, []).append(response)
    return grouped


async def test_last_use_of_a_code_is_taken_once(
    client: AsyncClient, app: Any, admin: str, referrer: dict[str, Any]
) -> None:
    code = (await make_code(client, admin, referrer["id"], max_redemptions=1))["code"]
    responses = await asyncio.gather(*(redeem(client, admin, code, f"new_{i}") for i in range(N)))
    grouped = by_status(list(responses))
    assert sorted(grouped) == [201, 409], {s: [r.text for r in rs] for s, rs in grouped.items()}
    assert len(grouped[201]) == 1
    for response in grouped[409]:
        assert_problem(response, 409, "code_exhausted")
    assert (await code_row(app, code)).redemption_count == 1
    [referral] = await db_all(app, select(Referral))
    assert referral.customer_id == grouped[201][0].json()["customer_id"]


async def test_a_few_uses_of_a_code_are_taken_exactly(
    client: AsyncClient, app: Any, admin: str, referrer: dict[str, Any]
) -> None:
    code = (await make_code(client, admin, referrer["id"], max_redemptions=3))["code"]
    responses = await asyncio.gather(*(redeem(client, admin, code, f"new_{i}") for i in range(N)))
    grouped = by_status(list(responses))
    assert len(grouped[201]) == 3
    assert len(grouped[409]) == N - 3
    assert (await code_row(app, code)).redemption_count == 3
    assert len(await db_all(app, select(Referral))) == 3


async def test_same_customer_redeeming_concurrently_is_referred_once(
    client: AsyncClient, app: Any, admin: str, referrer: dict[str, Any]
) -> None:
    code = referrer["default_code"]["code"]
    responses = await asyncio.gather(*(redeem(client, admin, code, "new_1") for _ in range(N)))
    grouped = by_status(list(responses))
    assert sorted(grouped) == [201, 409], {s: [r.text for r in rs] for s, rs in grouped.items()}
    assert len(grouped[201]) == 1
    for response in grouped[409]:
        assert_problem(response, 409, "already_referred")
    assert (await code_row(app, code)).redemption_count == 1
    assert len(await db_all(app, select(Referral))) == 1


async def test_same_customer_through_different_codes_is_referred_once(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any]
) -> None:
    codes = [
        (await make_referrer(client, admin, program["id"], f"ref_{i}"))["default_code"]["code"]
        for i in range(5)
    ]
    responses = await asyncio.gather(
        *(redeem(client, admin, codes[i % len(codes)], "new_1") for i in range(N))
    )
    grouped = by_status(list(responses))
    assert len(grouped[201]) == 1
    for response in grouped[409]:
        assert_problem(response, 409, "already_referred")
    counts = await db_all(app, select(Code.redemption_count))
    assert sum(counts) == 1
    assert len(await db_all(app, select(Referral))) == 1


async def test_concurrent_upserts_make_one_referrer(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any]
) -> None:
    url = f"/v1/programs/{program['id']}/referrers"
    responses = await asyncio.gather(
        *(
            client.post(
                url,
                json={"external_id": "cust_1", "email": f"v{i}@example.com"},
                headers=auth(admin),
            )
            for i in range(N)
        )
    )
    grouped = by_status(list(responses))
    assert sorted(grouped) == [200, 201], {s: [r.text for r in rs] for s, rs in grouped.items()}
    assert len(grouped[201]) == 1
    assert len(grouped[200]) == N - 1
    ids = {r.json()["id"] for r in responses}
    codes = {r.json()["default_code"]["code"] for r in responses}
    assert len(ids) == 1
    assert len(codes) == 1

    referrers = await db_all(app, select(Referrer))
    assert len(referrers) == 1
    assert referrers[0].email in {f"v{i}@example.com" for i in range(N)}
    default_codes = await db_all(
        app, select(func.count()).select_from(Code).where(Code.is_default.is_(True))
    )
    assert default_codes == [1]
    assert len(await db_all(app, select(Code))) == 1

"""Races on the money path, on a real Postgres: one outcome each, nothing lost, nothing twice."""

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from app.conversions.models import Conversion, Refund
from app.rewards.models import Reward
from app.tracking.models import Referral
from tests.factories import db_all, make_referrer, redeem
from tests.money_factories import (
    add_rule,
    get_conversion,
    post_conversion,
    post_refund,
    purchase,
    rewards,
    transition,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def alice(client: AsyncClient, admin: str, program: dict[str, Any]) -> dict[str, Any]:
    return await make_referrer(client, admin, program["id"], "alice")


def statuses(responses: list[Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


async def count(app: Any, model: Any, *where: Any) -> int:
    async with app.state.sessionmaker() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)
        return int(await session.scalar(query) or 0)


async def test_concurrent_duplicate_purchases_make_one_conversion(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(client, admin, program["id"], recipient="referrer", kind="fixed", amount="10.00")
    await add_rule(client, admin, program["id"], recipient="referee", kind="percent", percent="10")
    body = {
        "program_id": program["id"],
        "event_id": "ord_dup",
        "customer_id": "bob",
        "amount": "59.90",
        "currency": "USD",
        "code": alice["default_code"]["code"],
    }
    responses = await asyncio.gather(*(post_conversion(client, admin, **body) for _ in range(25)))
    assert statuses(responses) == {201: 1, 200: 24}, [
        r.text for r in responses if r.status_code >= 300
    ]
    first = next(r for r in responses if r.status_code == 201).json()
    assert all(r.json() == first for r in responses)
    assert sorted(r["amount"] for r in first["rewards"]) == ["10.00", "5.99"]
    assert await count(app, Conversion) == 1
    assert await count(app, Reward) == 2
    assert await count(app, Referral) == 1


async def test_concurrent_purchases_with_one_event_id_and_other_bodies(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(client, admin, program["id"], recipient="referrer", kind="fixed", amount="10.00")
    bodies = [
        {
            "program_id": program["id"],
            "event_id": "ord_x",
            "customer_id": f"bob_{i}",
            "amount": "20.00",
            "currency": "USD",
            "code": alice["default_code"]["code"],
        }
        for i in range(10)
    ]
    responses = await asyncio.gather(*(post_conversion(client, admin, **b) for b in bodies))
    assert statuses(responses) == {201: 1, 409: 9}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"event_id_conflict"}
    assert await count(app, Conversion) == 1
    assert await count(app, Reward) == 1


@pytest.mark.parametrize("redeemed_first", [True, False])
async def test_racing_purchases_of_one_referee_pay_first_purchase_once(
    client: AsyncClient,
    app: Any,
    admin: str,
    program: dict[str, Any],
    alice: dict[str, Any],
    redeemed_first: bool,
) -> None:
    code = alice["default_code"]["code"]
    await add_rule(client, admin, program["id"], recipient="referrer", kind="fixed", amount="10.00")
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referee",
        kind="fixed",
        amount="2.00",
        trigger="every_purchase",
    )
    if redeemed_first:
        assert (await redeem(client, admin, code, "bob")).status_code == 201
    responses = await asyncio.gather(
        *(
            post_conversion(
                client,
                admin,
                program_id=program["id"],
                event_id=f"ord_{i}",
                customer_id="bob",
                amount="30.00",
                currency="USD",
                code=code,
            )
            for i in range(8)
        )
    )
    assert statuses(responses) == {201: 8}, [r.text for r in responses]
    paid = [r["recipient"] for response in responses for r in response.json()["rewards"]]
    assert Counter(paid) == {"referrer": 1, "referee": 8}
    assert await count(app, Referral) == 1
    ledger = await rewards(client, admin, program_id=program["id"])
    assert Counter(r["recipient"] for r in ledger) == {"referrer": 1, "referee": 8}


@pytest.mark.parametrize("redeemed_first", [True, False])
async def test_racing_purchases_through_two_referrers_pay_first_purchase_once(
    client: AsyncClient,
    app: Any,
    admin: str,
    program: dict[str, Any],
    alice: dict[str, Any],
    redeemed_first: bool,
) -> None:
    # Two referrers' codes: the referrer lock does not order these, the referee's referral must.
    carol = await make_referrer(client, admin, program["id"], "carol")
    codes = [alice["default_code"]["code"], carol["default_code"]["code"]]
    await add_rule(client, admin, program["id"], recipient="referee", kind="fixed", amount="2.00")
    if redeemed_first:
        assert (await redeem(client, admin, codes[0], "bob")).status_code == 201
    responses = await asyncio.gather(
        *(
            post_conversion(
                client,
                admin,
                program_id=program["id"],
                event_id=f"ord_{i}",
                customer_id="bob",
                amount="30.00",
                currency="USD",
                code=codes[i % 2],
            )
            for i in range(8)
        )
    )
    assert statuses(responses) == {201: 8}, [r.text for r in responses]
    assert sum(len(r.json()["rewards"]) for r in responses) == 1
    assert await count(app, Reward) == 1
    assert await count(app, Referral) == 1


async def test_cap_per_referrer_holds_under_concurrency(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        max_rewards_per_referrer=5,
    )
    responses = await asyncio.gather(
        *(
            post_conversion(
                client,
                admin,
                program_id=program["id"],
                event_id=f"ord_{i}",
                customer_id=f"referee_{i}",
                amount="30.00",
                currency="USD",
                code=alice["default_code"]["code"],
            )
            for i in range(20)
        )
    )
    assert statuses(responses) == {201: 20}, [r.text for r in responses]
    assert sum(len(r.json()["rewards"]) for r in responses) == 5
    assert await count(app, Reward) == 5
    assert await count(app, Referral) == 20


async def test_tiers_count_referrals_one_at_a_time(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        tiers=[{"from_referral": 3, "amount": "25.00"}],
    )
    responses = await asyncio.gather(
        *(
            post_conversion(
                client,
                admin,
                program_id=program["id"],
                event_id=f"ord_{i}",
                customer_id=f"referee_{i}",
                amount="30.00",
                currency="USD",
                code=alice["default_code"]["code"],
            )
            for i in range(10)
        )
    )
    assert statuses(responses) == {201: 10}
    # the 1st and 2nd successful referrals pay 10.00, the 3rd to 10th 25.00: whatever the order
    paid = Counter(r["amount"] for response in responses for r in response.json()["rewards"])
    assert paid == {"10.00": 2, "25.00": 8}


async def _pending_reward(
    client: AsyncClient,
    admin: str,
    program: dict[str, Any],
    code: str,
    event_id: str,
    amount: str = "80.00",
) -> tuple[dict[str, Any], dict[str, Any]]:
    bought = await purchase(client, admin, program, event_id, f"cust_{event_id}", amount, code=code)
    [reward] = bought["rewards"]
    assert reward["status"] == "pending"
    return bought, reward


ROUNDS = 8


async def test_full_refund_racing_an_approval_leaves_the_reward_reversed(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        hold_days=30,
        trigger="every_purchase",
    )
    for round_ in range(ROUNDS):
        bought, reward = await _pending_reward(
            client, admin, program, alice["default_code"]["code"], f"o{round_}"
        )
        refunded, approved = await asyncio.gather(
            post_refund(client, admin, bought["id"]),
            transition(client, admin, reward["id"], "approve"),
        )
        assert refunded.status_code == 201, refunded.text
        assert approved.status_code in (200, 409), approved.text
        if approved.status_code == 409:
            assert approved.json()["code"] == "invalid_transition"
        [after] = (await get_conversion(client, admin, bought["id"]))["rewards"]
        # whichever came first, the refund has the last word: never approved after a full refund
        assert after["status"] == "reversed", (round_, approved.status_code)
        assert after["reversal_reason"] == "refund"


async def test_partial_refund_racing_an_approval_loses_no_update(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="percent",
        percent="10",
        hold_days=30,
        trigger="every_purchase",
    )
    for round_ in range(ROUNDS):
        bought, reward = await _pending_reward(
            client, admin, program, alice["default_code"]["code"], f"o{round_}"
        )
        assert reward["amount"] == "8.00"
        refunded, approved = await asyncio.gather(
            post_refund(client, admin, bought["id"], amount="20.00"),
            transition(client, admin, reward["id"], "approve"),
        )
        assert (refunded.status_code, approved.status_code) == (201, 200)
        [after] = (await get_conversion(client, admin, bought["id"]))["rewards"]
        # both changes stay: approved, and 8.00 x 60/80 = 6.00
        assert (after["status"], after["amount"]) == ("approved", "6.00"), round_


async def test_refund_racing_a_payout_keeps_the_ledger_whole(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        trigger="every_purchase",
    )
    for round_ in range(ROUNDS):
        bought = await purchase(
            client,
            admin,
            program,
            f"o{round_}",
            f"cust_{round_}",
            "40.00",
            code=alice["default_code"]["code"],
        )
        [reward] = bought["rewards"]
        refunded, paid = await asyncio.gather(
            post_refund(client, admin, bought["id"]),
            transition(client, admin, reward["id"], "mark-paid"),
        )
        assert refunded.status_code == 201
        entries = await rewards(client, admin, conversion_id=bought["id"])
        if paid.status_code == 200:
            # paid first: the refund claws the payout back
            assert sorted((r["entry_type"], r["status"], r["amount"]) for r in entries) == [
                ("clawback", "approved", "-10.00"),
                ("reward", "paid", "10.00"),
            ]
        else:
            assert paid.json()["code"] == "invalid_transition"
            assert [(r["status"], r["entry_type"]) for r in entries] == [("reversed", "reward")]
        # either way the conversion owes nothing
        owed = sum(Decimal(r["amount"]) for r in entries if r["status"] != "reversed")
        assert owed == Decimal(0), round_


async def test_concurrent_partial_refunds_never_exceed_the_amount(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(client, admin, program["id"], recipient="referrer", kind="percent", percent="10")
    bought = await purchase(
        client, admin, program, "o1", "bob", "100.00", code=alice["default_code"]["code"]
    )
    responses = await asyncio.gather(
        *(post_refund(client, admin, bought["id"], amount="30.00") for _ in range(10))
    )
    assert statuses(responses) == {201: 3, 422: 7}
    assert {r.json()["code"] for r in responses if r.status_code == 422} == {
        "refund_exceeds_amount"
    }
    totals = sorted(r.json()["refunded_total"] for r in responses if r.status_code == 201)
    assert totals == ["30.00", "60.00", "90.00"]
    after = await get_conversion(client, admin, bought["id"])
    assert after["refunded_amount"] == "90.00"
    # 10.00 x 10/100 = 1.00
    assert [r["amount"] for r in after["rewards"]] == ["1.00"]
    assert await count(app, Refund) == 3


async def test_concurrent_retries_of_one_refund_id_refund_once(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(client, admin, program["id"], recipient="referrer", kind="percent", percent="10")
    bought = await purchase(
        client, admin, program, "o1", "bob", "100.00", code=alice["default_code"]["code"]
    )
    responses = await asyncio.gather(
        *(
            post_refund(client, admin, bought["id"], amount="25.00", refund_id="rf_1")
            for _ in range(15)
        )
    )
    assert statuses(responses) == {201: 1, 200: 14}
    first = next(r for r in responses if r.status_code == 201).json()
    assert all(r.json() == first for r in responses)
    after = await get_conversion(client, admin, bought["id"])
    assert after["refunded_amount"] == "25.00"
    assert [r["amount"] for r in after["rewards"]] == ["7.50"]
    assert await count(app, Refund, Refund.conversion_id == UUID(bought["id"])) == 1


async def test_concurrent_approvals_and_sweeps_approve_once(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any], alice: dict[str, Any]
) -> None:
    await add_rule(
        client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        hold_days=30,
    )
    _, reward = await _pending_reward(client, admin, program, alice["default_code"]["code"], "o1")
    responses = await asyncio.gather(
        *(transition(client, admin, reward["id"], "approve") for _ in range(10))
    )
    assert statuses(responses) == {200: 1, 409: 9}
    [row] = await db_all(app, select(Reward))
    assert row.status == "approved"

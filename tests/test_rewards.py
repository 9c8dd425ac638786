"""Reward rules pay: kinds, triggers, minimum orders, tiers, caps, holds and approval."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update

from app.background import approve_due_rewards
from app.rewards.models import Reward
from tests.factories import assert_problem, db_all, make_referrer
from tests.money_factories import (
    Shop,
    balance,
    by_recipient,
    make_shop,
    only,
    transition,
)

# --- rule kinds ------------------------------------------------------------------------------


async def test_fixed_reward(shop: Shop) -> None:
    rule = await shop.rule(recipient="referrer", kind="fixed", amount="7.5")
    assert (rule["amount"], rule["currency"], rule["version"], rule["trigger"]) == (
        "7.50",
        "USD",
        1,
        "first_purchase",
    )
    bought = await shop.buy("bob", "20.00")
    reward = only(bought["rewards"])
    assert reward["rule_id"] == rule["id"]
    assert reward["rule_version"] == 1
    assert reward["conversion_id"] == bought["id"]
    assert reward["program_id"] == shop.pid
    assert reward["referrer_id"] == shop.alice["id"]
    assert (reward["recipient"], reward["recipient_id"]) == ("referrer", "alice")
    assert (reward["entry_type"], reward["adjusts_reward_id"]) == ("reward", None)
    assert (reward["kind"], reward["unit"]) == ("fixed", "USD")
    assert (reward["amount"], reward["original_amount"]) == ("7.50", "7.50")
    # no hold: approved at once, the hold ending when the purchase happened
    assert reward["status"] == "approved"
    assert reward["hold_until"] == bought["occurred_at"]
    assert reward["approved_at"] is not None
    assert (reward["paid_at"], reward["reversed_at"], reward["payout_reference"]) == (None,) * 3
    assert only(await shop.ledger()) == reward


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [
        ("0.25", "10", "0.02"),  # 0.025 → 0.02: half to even
        ("0.35", "10", "0.04"),  # 0.035 → 0.04: half to even
        ("0.15", "10", "0.02"),  # 0.015 → 0.02
        ("0.45", "10", "0.04"),  # 0.045 → 0.04
        ("99.99", "12.5", "12.50"),  # 12.49875
        ("10.00", "33.3333", "3.33"),  # 3.33333
        ("1000.00", "0.0005", "0.00"),  # 0.005 → 0.00: nothing to pay
        ("1000.00", "0.0015", "0.02"),  # 0.015 → 0.02
        ("123456789012.34", "100", "123456789012.34"),
    ],
)
async def test_percent_reward_rounds_half_even(
    client: AsyncClient, app: Any, amount: str, percent: str, expected: str
) -> None:
    shop = await make_shop(client, app)
    await shop.rule(recipient="referee", kind="percent", percent=percent)
    bought = await shop.buy("bob", amount)
    if expected == "0.00":
        assert bought["rewards"] == []  # a reward that rounds to nothing is not an entry
        return
    reward = only(bought["rewards"])
    assert (reward["kind"], reward["unit"], reward["recipient_id"]) == ("percent", "USD", "bob")
    assert reward["amount"] == expected
    assert reward["original_amount"] == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("1005", "100"), ("1015", "102"), ("1234", "123"), ("999", "100")],
)
async def test_percent_reward_in_yen_has_no_decimals(
    client: AsyncClient, app: Any, amount: str, expected: str
) -> None:
    shop = await make_shop(client, app, currency="JPY")
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    await shop.rule(recipient="referee", kind="fixed", amount="500")
    bought = await shop.buy("bob", amount)
    assert bought["amount"] == amount
    found = by_recipient(bought["rewards"])
    assert (found["referrer"]["amount"], found["referrer"]["unit"]) == (expected, "JPY")
    assert (found["referee"]["amount"], found["referee"]["unit"]) == ("500", "JPY")
    assert (await balance(shop.client, shop.admin, shop.alice["id"]))["JPY"]["approved"] == expected


async def test_points_reward(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="points", points=250)
    await shop.rule(recipient="referee", kind="points", points=40)
    bought = await shop.buy("bob", "9.99")
    found = by_recipient(bought["rewards"])
    assert (found["referrer"]["unit"], found["referrer"]["amount"]) == ("points", "250")
    assert (found["referee"]["unit"], found["referee"]["amount"]) == ("points", "40")
    assert found["referee"]["recipient_id"] == "bob"
    # the balance is the referrer's own: the referee's points are not in it
    assert await balance(shop.client, shop.admin, shop.alice["id"]) == {
        "points": {
            "unit": "points",
            "pending": "0",
            "approved": "250",
            "paid": "0",
            "owed": "250",
            "payable": "250",
        },
    }


async def test_double_sided_rules_pay_one_conversion(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="10.00")
    await shop.rule(recipient="referee", kind="percent", percent="15")
    bought = await shop.buy("bob", "40.00")
    found = by_recipient(bought["rewards"])
    assert found["referrer"]["amount"] == "10.00"
    assert found["referee"]["amount"] == "6.00"
    assert found["referrer"]["referrer_id"] == found["referee"]["referrer_id"] == shop.alice["id"]


async def test_no_rules_no_rewards(shop: Shop) -> None:
    bought = await shop.buy("bob", "40.00")
    assert bought["status"] == "attributed"
    assert bought["rewards"] == []


# --- trigger, minimum order, tiers, cap ------------------------------------------------------


async def test_first_purchase_versus_every_purchase(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00")  # first_purchase by default
    await shop.rule(recipient="referrer", kind="percent", percent="10", trigger="every_purchase")
    first = await shop.buy("bob", "50.00")
    assert sorted((r["kind"], r["amount"]) for r in first["rewards"]) == [
        ("fixed", "5.00"),
        ("percent", "5.00"),
    ]
    second = await shop.buy("bob", "30.00")
    assert [(r["kind"], r["amount"]) for r in second["rewards"]] == [("percent", "3.00")]
    # the second purchase is attributed through the referral the first one made
    assert second["referral_id"] == first["referral_id"]
    third = await shop.buy("bob", "30.00", code=None)
    assert [(r["kind"], r["amount"]) for r in third["rewards"]] == [("percent", "3.00")]
    other = await shop.buy("carol", "20.00")
    assert sorted((r["kind"], r["amount"]) for r in other["rewards"]) == [
        ("fixed", "5.00"),
        ("percent", "2.00"),
    ]


async def test_organic_purchase_before_the_referral_does_not_use_up_first_purchase(
    shop: Shop,
) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00")
    organic = await shop.buy("bob", "50.00", code=None)
    assert organic["rewards"] == []
    referred = await shop.buy("bob", "50.00")
    assert [r["amount"] for r in referred["rewards"]] == ["5.00"]


async def test_min_order_amount(shop: Shop) -> None:
    await shop.rule(
        recipient="referrer",
        kind="fixed",
        amount="5.00",
        min_order_amount="50.00",
        trigger="every_purchase",
    )
    assert (await shop.buy("bob", "49.99"))["rewards"] == []
    assert [r["amount"] for r in (await shop.buy("bob", "50.00"))["rewards"]] == ["5.00"]
    assert [r["amount"] for r in (await shop.buy("carol", "50.01"))["rewards"]] == ["5.00"]


async def test_tiers_pay_more_from_the_nth_successful_referral(shop: Shop) -> None:
    await shop.rule(
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        trigger="every_purchase",
        tiers=[{"from_referral": 5, "amount": "40.00"}, {"from_referral": 3, "amount": "25.00"}],
    )
    paid = [only((await shop.buy(f"r{i}", "20.00"))["rewards"])["amount"] for i in range(1, 6)]
    assert paid == ["10.00", "10.00", "25.00", "25.00", "40.00"]
    # a repeat purchase of the first referee is paid at the tier alice has reached by now
    assert only((await shop.buy("r1", "20.00"))["rewards"])["amount"] == "40.00"


async def test_tiers_count_successful_referrals_only(shop: Shop) -> None:
    await shop.rule(
        recipient="referrer",
        kind="percent",
        percent="5",
        trigger="every_purchase",
        tiers=[{"from_referral": 2, "percent": "10"}],
    )
    # an unattributed purchase, a self-referral and a repeat purchase are not new referrals
    await shop.buy("nobody", "100.00", code=None)
    assert (await shop.buy("alice", "100.00"))["rewards"] == []
    assert only((await shop.buy("r1", "100.00"))["rewards"])["amount"] == "5.00"
    assert only((await shop.buy("r1", "100.00"))["rewards"])["amount"] == "5.00"
    assert only((await shop.buy("r2", "100.00"))["rewards"])["amount"] == "10.00"


async def test_tiers_are_per_referrer(shop: Shop) -> None:
    bob = await make_referrer(shop.client, shop.admin, shop.pid, "bob")
    await shop.rule(
        recipient="referrer",
        kind="points",
        points=10,
        tiers=[{"from_referral": 2, "points": 30}],
    )
    assert only((await shop.buy("r1", "1.00"))["rewards"])["amount"] == "10"
    assert only((await shop.buy("r2", "1.00"))["rewards"])["amount"] == "30"
    bobs = await shop.buy("r3", "1.00", code=bob["default_code"]["code"])
    assert only(bobs["rewards"])["amount"] == "10"


async def test_max_rewards_per_referrer(shop: Shop) -> None:
    bob = await make_referrer(shop.client, shop.admin, shop.pid, "bob")
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00", max_rewards_per_referrer=2)
    counts = [len((await shop.buy(f"r{i}", "20.00"))["rewards"]) for i in range(1, 4)]
    assert counts == [1, 1, 0]
    # the cap is per referrer
    assert len((await shop.buy("b1", "20.00", code=bob["default_code"]["code"]))["rewards"]) == 1
    # a reversed reward frees its place under the cap
    first = (await shop.ledger(referrer_id=shop.alice["id"]))[0]
    reversed_ = await transition(
        shop.client, shop.admin, first["id"], "reverse", {"reason": "fraud"}
    )
    assert reversed_.status_code == 200, reversed_.text
    assert len((await shop.buy("r4", "20.00"))["rewards"]) == 1
    assert len((await shop.buy("r5", "20.00"))["rewards"]) == 0
    alive = [
        r for r in await shop.ledger(referrer_id=shop.alice["id"]) if r["status"] != "reversed"
    ]
    assert len(alive) == 2


# --- hold days and approval ------------------------------------------------------------------


async def test_hold_days_keep_a_reward_pending_until_approved(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00", hold_days=14)
    bought = await shop.buy("bob", "20.00")
    reward = only(bought["rewards"])
    assert reward["status"] == "pending"
    assert reward["approved_at"] is None
    occurred = datetime.fromisoformat(bought["occurred_at"])
    assert datetime.fromisoformat(reward["hold_until"]) == occurred + timedelta(days=14)
    assert (await balance(shop.client, shop.admin, shop.alice["id"]))["USD"] == {
        "unit": "USD",
        "pending": "5.00",
        "approved": "0.00",
        "paid": "0.00",
        "owed": "5.00",
        "payable": "0.00",
    }
    # not payable before approval
    early = await transition(shop.client, shop.admin, reward["id"], "mark-paid")
    assert_problem(early, 409, "invalid_transition")

    approved = await transition(shop.client, shop.admin, reward["id"], "approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["approved_at"] is not None
    assert approved.json()["amount"] == "5.00"
    assert only(await shop.ledger())["status"] == "approved"


async def test_late_event_past_the_hold_is_approved_at_once(shop: Shop) -> None:
    await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", hold_days=14, trigger="every_purchase"
    )
    now = datetime.now(UTC)
    old = await shop.buy("bob", "20.00", occurred_at=(now - timedelta(days=15)).isoformat())
    assert only(old["rewards"])["status"] == "approved"
    recent = await shop.buy("carol", "20.00", occurred_at=(now - timedelta(days=13)).isoformat())
    pending = only(recent["rewards"])
    assert pending["status"] == "pending"
    # the hold counts from when the purchase happened: it ends a day from now
    assert datetime.fromisoformat(pending["hold_until"]) == now + timedelta(days=1)


async def _end_hold(app: Any, reward_id: str) -> datetime:
    ended = datetime.now(UTC) - timedelta(hours=1)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Reward).where(Reward.id == UUID(reward_id)).values(hold_until=ended)
        )
        await session.commit()
    return ended


async def test_due_rewards_read_as_approved_without_a_write(app: Any, shop: Shop) -> None:
    await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", hold_days=30, trigger="every_purchase"
    )
    first = await shop.buy("bob", "20.00")
    second = await shop.buy("carol", "20.00")
    third = await shop.buy("dave", "20.00")
    await _end_hold(app, first["rewards"][0]["id"])
    assert (await balance(shop.client, shop.admin, shop.alice["id"]))["USD"]["approved"] == "5.00"
    second_ended = await _end_hold(app, second["rewards"][0]["id"])
    seen = only(await shop.ledger(conversion_id=second["id"]))
    assert seen["status"] == "approved"
    await _end_hold(app, third["rewards"][0]["id"])
    shown = only(await shop.rewards_of(third))
    assert shown["status"] == "approved"
    # approved when the hold ended, not when someone happened to look
    assert datetime.fromisoformat(seen["approved_at"]) == second_ended
    assert await shop.ledger(status="pending") == []
    assert len(await shop.ledger(status="approved")) == 3
    # and a read changed nothing: the sweep moves the stored status
    [row] = await db_all(app, select(Reward).where(Reward.id == UUID(first["rewards"][0]["id"])))
    assert (row.status, row.approved_at) == ("pending", None)


async def test_background_sweep_approves_due_rewards(app: Any, shop: Shop) -> None:
    await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", hold_days=30, trigger="every_purchase"
    )
    due = await shop.buy("bob", "20.00")
    await shop.buy("carol", "20.00")
    await _end_hold(app, due["rewards"][0]["id"])
    assert await approve_due_rewards(app.state.sessionmaker) == 1
    assert await approve_due_rewards(app.state.sessionmaker) == 0
    statuses = {row.conversion_id: row.status for row in await db_all(app, select(Reward))}
    assert statuses[UUID(due["id"])] == "approved"
    assert sorted(statuses.values()) == ["approved", "pending"]

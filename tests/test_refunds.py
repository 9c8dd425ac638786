"""Refunds: proportional reductions, reversals and clawbacks, to the cent; idempotent."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.factories import assert_problem
from tests.money_factories import (
    Shop,
    balance,
    get_conversion,
    make_shop,
    only,
    transition,
)

# --- refunds ---------------------------------------------------------------------------------


async def test_partial_refund_reduces_percent_rewards_in_proportion(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    await shop.rule(recipient="referee", kind="fixed", amount="5.00")
    await shop.rule(recipient="referrer", kind="points", points=100)
    bought = await shop.buy("bob", "80.00")
    refund = await shop.refund(bought, amount="20.00", reason="one item returned")
    assert refund.status_code == 201, refund.text
    body = refund.json()
    assert (body["amount"], body["currency"], body["refunded_total"], body["reason"]) == (
        "20.00",
        "USD",
        "20.00",
        "one item returned",
    )
    assert body["conversion_id"] == bought["id"]
    after = await get_conversion(shop.client, shop.admin, bought["id"])
    assert after["refunded_amount"] == "20.00"
    # 8.00 x 60/80 = 6.00; fixed and points stay until a full refund
    assert sorted(
        (r["kind"], r["amount"], r["original_amount"], r["status"]) for r in after["rewards"]
    ) == [
        ("fixed", "5.00", "5.00", "approved"),
        ("percent", "6.00", "8.00", "approved"),
        ("points", "100", "100", "approved"),
    ]


async def test_proportional_reduction_rounds_half_even(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="12.5")
    bought = await shop.buy("bob", "99.99")
    assert only(bought["rewards"])["amount"] == "12.50"
    assert (await shop.refund(bought, amount="33.33")).status_code == 201
    # 12.50 x 66.66/99.99 = 8.3333… → 8.33
    assert only(await shop.rewards_of(bought))["amount"] == "8.33"
    assert (await shop.refund(bought, amount="66.65")).status_code == 201
    # 12.50 x 0.01/99.99 = 0.00125… → 0.00: reversed
    reward = only(await shop.rewards_of(bought))
    assert (reward["status"], reward["reversal_reason"]) == ("reversed", "refund")


@pytest.mark.parametrize(
    ("amount", "refund", "expected"),
    [
        # 10 % of 0.30 = 0.03; 0.05 of 0.30 left: 0.03 x 1/6 = 0.005 exactly → 0.00 (half-even)
        ("0.30", "0.25", None),
        # 10 % of 0.90 = 0.09; 0.50 of 0.90 left: 0.09 x 5/9 = 0.05
        ("0.90", "0.40", "0.05"),
        # 10 % of 2.10 = 0.21; 0.50 of 2.10 left: 0.21 x 5/21 = 0.05
        ("2.10", "1.60", "0.05"),
        # 10 % of 0.70 = 0.07; 0.25 of 0.70 left: 0.07 x 5/14 = 0.025 → 0.02
        ("0.70", "0.45", "0.02"),
        # 10 % of 1.50 = 0.15; 0.50 of 1.50 left: 0.15 x 1/3 = 0.05
        ("1.50", "1.00", "0.05"),
    ],
)
async def test_proportional_reduction_is_exact_before_rounding(
    client: AsyncClient, app: Any, amount: str, refund: str, expected: str | None
) -> None:
    shop = await make_shop(client, app)
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    bought = await shop.buy("bob", amount)
    assert (await shop.refund(bought, amount=refund)).status_code == 201
    reward = only(await shop.rewards_of(bought))
    if expected is None:
        assert (reward["status"], reward["reversal_reason"]) == ("reversed", "refund")
    else:
        assert (reward["status"], reward["amount"]) == ("approved", expected)


async def test_full_refund_reverses_every_unpaid_reward(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    await shop.rule(recipient="referee", kind="fixed", amount="5.00")
    await shop.rule(recipient="referrer", kind="points", points=100, hold_days=30)
    bought = await shop.buy("bob", "80.00")
    assert (await shop.refund(bought, amount="20.00")).status_code == 201
    rest = await shop.refund(bought)  # no amount: whatever is left
    assert rest.status_code == 201, rest.text
    assert (rest.json()["amount"], rest.json()["refunded_total"]) == ("60.00", "80.00")
    after = await get_conversion(shop.client, shop.admin, bought["id"])
    assert after["refunded_amount"] == "80.00"
    assert sorted((r["kind"], r["status"], r["reversal_reason"]) for r in after["rewards"]) == [
        ("fixed", "reversed", "refund"),
        ("percent", "reversed", "refund"),
        ("points", "reversed", "refund"),
    ]
    assert all(r["entry_type"] == "reward" for r in after["rewards"])
    assert (await balance(shop.client, shop.admin, shop.alice["id"])) == {
        "USD": {
            "unit": "USD",
            "pending": "0.00",
            "approved": "0.00",
            "paid": "0.00",
            "owed": "0.00",
            "payable": "0.00",
        },
        "points": {
            "unit": "points",
            "pending": "0",
            "approved": "0",
            "paid": "0",
            "owed": "0",
            "payable": "0",
        },
    }


async def test_refund_after_payout_is_a_clawback(shop: Shop) -> None:
    rule = await shop.rule(recipient="referrer", kind="fixed", amount="5.00")
    bought = await shop.buy("bob", "40.00")
    reward = only(bought["rewards"])
    paid = await transition(
        shop.client, shop.admin, reward["id"], "mark-paid", {"payout_reference": "po_1"}
    )
    assert paid.status_code == 200
    assert (await shop.refund(bought, amount="10.00")).status_code == 201
    # a fixed reward is not reduced by a partial refund: no entry yet
    assert len(await shop.ledger()) == 1
    assert (await shop.refund(bought)).status_code == 201
    entries = await shop.ledger(conversion_id=bought["id"])
    original = next(r for r in entries if r["entry_type"] == "reward")
    clawback = next(r for r in entries if r["entry_type"] == "clawback")
    assert len(entries) == 2
    assert (original["status"], original["amount"]) == ("paid", "5.00")
    assert clawback["adjusts_reward_id"] == reward["id"]
    assert (clawback["amount"], clawback["status"], clawback["kind"], clawback["unit"]) == (
        "-5.00",
        "approved",
        "fixed",
        "USD",
    )
    assert (clawback["rule_id"], clawback["rule_version"]) == (rule["id"], 1)
    assert (clawback["recipient"], clawback["recipient_id"]) == ("referrer", "alice")
    assert (await balance(shop.client, shop.admin, shop.alice["id"]))["USD"] == {
        "unit": "USD",
        "pending": "0.00",
        "approved": "-5.00",
        "paid": "5.00",
        "owed": "-5.00",
        "payable": "-5.00",
    }


async def test_partial_refunds_after_payout_claw_back_step_by_step(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    bought = await shop.buy("bob", "80.00")
    reward = only(bought["rewards"])
    assert (await transition(shop.client, shop.admin, reward["id"], "mark-paid")).status_code == 200
    steps = [("20.00", "-2.00"), ("20.00", "-2.00"), ("30.00", "-3.00"), ("10.00", "-1.00")]
    for refunded, clawed in steps:
        assert (await shop.refund(bought, amount=refunded)).status_code == 201
        newest = max(
            (r for r in await shop.ledger() if r["entry_type"] == "clawback"),
            key=lambda r: r["created_at"],
        )
        assert newest["amount"] == clawed
    entries = await shop.ledger()
    assert sorted(r["amount"] for r in entries if r["entry_type"] == "clawback") == sorted(
        c for _, c in steps
    )
    assert only([r for r in entries if r["entry_type"] == "reward"])["status"] == "paid"
    lines = (await balance(shop.client, shop.admin, shop.alice["id"]))["USD"]
    assert (lines["paid"], lines["approved"], lines["payable"]) == ("8.00", "-8.00", "-8.00")


async def test_refund_inside_the_hold_reverses_instead_of_clawing_back(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00", hold_days=30)
    bought = await shop.buy("bob", "40.00")
    assert (await shop.refund(bought)).status_code == 201
    entries = await shop.ledger()
    assert [(r["entry_type"], r["status"]) for r in entries] == [("reward", "reversed")]


async def test_refund_leaves_a_manually_reversed_reward_alone(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    bought = await shop.buy("bob", "40.00")
    reward = only(bought["rewards"])
    await transition(shop.client, shop.admin, reward["id"], "reverse", {"reason": "fraud"})
    assert (await shop.refund(bought, amount="10.00")).status_code == 201
    after = only(await shop.ledger())
    assert (after["status"], after["reversal_reason"], after["amount"]) == (
        "reversed",
        "fraud",
        "4.00",
    )


async def test_cumulative_refunds_cannot_exceed_the_amount(shop: Shop) -> None:
    bought = await shop.buy("bob", "80.00", code=None)
    assert (await shop.refund(bought, amount="50.00")).status_code == 201
    assert_problem(await shop.refund(bought, amount="30.01"), 422, "refund_exceeds_amount")
    last = await shop.refund(bought, amount="30.00")
    assert last.status_code == 201
    assert last.json()["refunded_total"] == "80.00"
    assert_problem(await shop.refund(bought, amount="0.01"), 409, "already_refunded")
    assert_problem(await shop.refund(bought), 409, "already_refunded")
    assert (await get_conversion(shop.client, shop.admin, bought["id"]))[
        "refunded_amount"
    ] == "80.00"


async def test_refund_id_is_idempotent(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    bought = await shop.buy("bob", "80.00")
    first = await shop.refund(bought, amount="20.00", refund_id="rf_1", reason="damaged")
    assert first.status_code == 201, first.text
    again = await shop.refund(bought, amount="20.00", refund_id="rf_1", reason="damaged")
    assert again.status_code == 200
    assert again.json() == first.json()
    after = await get_conversion(shop.client, shop.admin, bought["id"])
    assert after["refunded_amount"] == "20.00"
    assert only(after["rewards"])["amount"] == "6.00"

    for changed in ({"amount": "20.01"}, {"amount": "20.00", "reason": "other"}, {}):
        conflict = await shop.refund(bought, refund_id="rf_1", **changed)
        assert_problem(conflict, 409, "refund_id_conflict")

    full = await shop.refund(bought, refund_id="rf_2")
    assert full.status_code == 201
    assert full.json()["amount"] == "60.00"
    # a retry of either refund after the conversion is fully refunded is still the first answer
    assert (await shop.refund(bought, refund_id="rf_2")).json() == full.json()
    replay = await shop.refund(bought, amount="20.00", refund_id="rf_1", reason="damaged")
    assert (replay.status_code, replay.json()) == (200, first.json())
    assert (await get_conversion(shop.client, shop.admin, bought["id"]))[
        "refunded_amount"
    ] == "80.00"


async def test_refund_id_is_per_conversion(shop: Shop) -> None:
    one = await shop.buy("bob", "10.00", code=None)
    two = await shop.buy("carol", "10.00", code=None)
    assert (await shop.refund(one, amount="1.00", refund_id="rf")).status_code == 201
    assert (await shop.refund(two, amount="2.00", refund_id="rf")).status_code == 201
    assert (await get_conversion(shop.client, shop.admin, two["id"]))["refunded_amount"] == "2.00"


async def test_refund_in_yen(client: AsyncClient, app: Any) -> None:
    shop = await make_shop(client, app, currency="JPY")
    await shop.rule(recipient="referrer", kind="percent", percent="10")
    bought = await shop.buy("bob", "1015")
    assert only(bought["rewards"])["amount"] == "102"
    assert_problem(await shop.refund(bought, amount="0.5"), 422, "invalid_amount")
    refund = await shop.refund(bought, amount="515")
    assert refund.json()["amount"] == "515"
    # the 102 paid shrinks to 102 x 500/1015 = 50.25 → 50
    assert only(await shop.rewards_of(bought))["amount"] == "50"

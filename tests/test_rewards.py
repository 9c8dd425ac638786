"""Reward rules, the ledger's transitions, refunds and clawbacks, balances: correct to the cent."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update

from app.background import approve_due_rewards
from app.rewards.models import Reward, RewardRuleVersion
from tests.factories import assert_problem, auth, db_all, make_key, make_program, make_referrer
from tests.money_factories import (
    add_rule,
    balance,
    get_conversion,
    patch_rule,
    post_refund,
    purchase,
    rewards,
    setup_program,
    transition,
)


class Shop:
    """A program with referrer alice; `buy` posts a purchase with alice's code."""

    def __init__(
        self, client: AsyncClient, admin: str, program: dict[str, Any], alice: dict[str, Any]
    ):
        self.client = client
        self.admin = admin
        self.program = program
        self.alice = alice
        self.events = 0

    @property
    def pid(self) -> str:
        return str(self.program["id"])

    async def rule(self, **rule: Any) -> dict[str, Any]:
        return await add_rule(self.client, self.admin, self.pid, **rule)

    async def buy(
        self, customer_id: str, amount: str, code: str | None = "alice", **extra: Any
    ) -> dict[str, Any]:
        self.events += 1
        if code == "alice":
            code = self.alice["default_code"]["code"]
        return await purchase(
            self.client,
            self.admin,
            self.program,
            f"ev_{self.events}",
            customer_id,
            amount,
            **({"code": code} if code else {}) | extra,
        )

    async def refund(self, conversion: dict[str, Any], **body: Any) -> Any:
        return await post_refund(self.client, self.admin, conversion["id"], **body)

    async def ledger(self, **params: Any) -> list[dict[str, Any]]:
        return await rewards(self.client, self.admin, **({"program_id": self.pid} | params))

    async def rewards_of(self, conversion: dict[str, Any]) -> list[dict[str, Any]]:
        return (await get_conversion(self.client, self.admin, conversion["id"]))["rewards"]


@pytest.fixture
async def shop(client: AsyncClient, app: Any) -> Shop:
    admin, program, alice = await setup_program(client, app)
    return Shop(client, admin, program, alice)


async def make_shop(client: AsyncClient, app: Any, **program: Any) -> Shop:
    admin, prog, alice = await setup_program(client, app, **program)
    return Shop(client, admin, prog, alice)


def only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def by_recipient(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {row["recipient"]: row for row in rows}
    assert len(found) == len(rows), rows
    return found


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


# --- rule changes ----------------------------------------------------------------------------


async def test_rule_update_makes_a_version_that_pays_later_conversions(
    app: Any, shop: Shop
) -> None:
    rule = await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", trigger="every_purchase"
    )
    before = await shop.buy("r1", "20.00")
    changed = await patch_rule(shop.client, shop.admin, rule["id"], amount="8.00")
    assert (changed["version"], changed["amount"], changed["active"]) == (2, "8.00", True)
    after = await shop.buy("r2", "20.00")
    assert (only(after["rewards"])["amount"], only(after["rewards"])["rule_version"]) == ("8.00", 2)
    # the earlier reward keeps what its version paid
    kept = only(await shop.rewards_of(before))
    assert (kept["amount"], kept["rule_version"]) == ("5.00", 1)

    same = await patch_rule(shop.client, shop.admin, rule["id"], amount="8.00")
    assert same["version"] == 2  # nothing changed, no new version

    to_percent = await patch_rule(shop.client, shop.admin, rule["id"], kind="percent", percent="25")
    assert (to_percent["version"], to_percent["kind"], to_percent["amount"]) == (3, "percent", None)
    assert to_percent["percent"] == "25"
    third = await shop.buy("r3", "20.00")
    assert (only(third["rewards"])["amount"], only(third["rewards"])["rule_version"]) == ("5.00", 3)

    versions = await db_all(
        app,
        select(RewardRuleVersion)
        .where(RewardRuleVersion.rule_id == UUID(rule["id"]))
        .order_by(RewardRuleVersion.version),
    )
    assert [(v.version, v.snapshot["kind"], v.snapshot["amount"]) for v in versions] == [
        (1, "fixed", "5.00"),
        (2, "fixed", "8.00"),
        (3, "percent", None),
    ]
    fetched = await shop.client.get(f"/v1/reward-rules/{rule['id']}", headers=auth(shop.admin))
    assert fetched.json() == to_percent


async def test_deactivated_rule_stops_paying(shop: Shop) -> None:
    rule = await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", trigger="every_purchase"
    )
    paid = await shop.buy("r1", "20.00")
    off = await patch_rule(shop.client, shop.admin, rule["id"], active=False)
    assert (off["active"], off["version"]) == (False, 2)
    assert (await shop.buy("r2", "20.00"))["rewards"] == []
    # the reward already given stays
    assert only(await shop.rewards_of(paid))["status"] == "approved"
    on = await patch_rule(shop.client, shop.admin, rule["id"], active=True)
    assert (on["active"], on["version"]) == (True, 3)
    assert only((await shop.buy("r3", "20.00"))["rewards"])["rule_version"] == 3
    listed = await shop.client.get(
        f"/v1/programs/{shop.pid}/reward-rules", headers=auth(shop.admin)
    )
    assert [(r["id"], r["version"]) for r in listed.json()] == [(rule["id"], 3)]


async def test_invalid_rules_are_refused(shop: Shop) -> None:
    url = f"/v1/programs/{shop.pid}/reward-rules"
    cases = [
        (
            {"recipient": "referrer", "kind": "percent", "percent": "10", "amount": "5.00"},
            "validation_error",
        ),
        (
            {
                "recipient": "referee",
                "kind": "fixed",
                "amount": "5.00",
                "tiers": [{"from_referral": 2, "amount": "9.00"}],
            },
            "validation_error",
        ),
        (
            {"recipient": "referrer", "kind": "fixed", "amount": "5.00", "currency": "EUR"},
            "invalid_rule",
        ),
        ({"recipient": "referrer", "kind": "fixed", "amount": "5.001"}, "invalid_rule"),
        (
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "5.00",
                "min_order_amount": "0.005",
            },
            "invalid_rule",
        ),
        ({"recipient": "referrer", "kind": "fixed"}, "validation_error"),
        ({"recipient": "referrer", "kind": "points", "points": 0}, "validation_error"),
        (
            {"recipient": "referrer", "kind": "points", "points": 10, "percent": "1"},
            "validation_error",
        ),
        ({"recipient": "referrer", "kind": "percent", "percent": "0"}, "validation_error"),
        ({"recipient": "referrer", "kind": "percent", "percent": "100.5"}, "validation_error"),
        ({"recipient": "referrer", "kind": "fixed", "amount": "-5.00"}, "validation_error"),
        ({"recipient": "friend", "kind": "fixed", "amount": "5.00"}, "validation_error"),
        (
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "5.00",
                "tiers": [{"from_referral": 1, "amount": "9.00"}],
            },
            "validation_error",
        ),
        (
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "5.00",
                "tiers": [{"from_referral": 3, "percent": "9"}],
            },
            "validation_error",
        ),
        (
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "5.00",
                "tiers": [
                    {"from_referral": 3, "amount": "9.00"},
                    {"from_referral": 3, "amount": "12.00"},
                ],
            },
            "validation_error",
        ),
        (
            {"recipient": "referrer", "kind": "fixed", "amount": "5.00", "hold_days": -1},
            "validation_error",
        ),
    ]
    for body, code in cases:
        response = await shop.client.post(url, json=body, headers=auth(shop.admin))
        assert_problem(response, 422, code)
    listed = await shop.client.get(url, headers=auth(shop.admin))
    assert listed.json() == []


async def test_yen_rule_takes_whole_yen_only(client: AsyncClient, app: Any) -> None:
    shop = await make_shop(client, app, currency="JPY")
    response = await client.post(
        f"/v1/programs/{shop.pid}/reward-rules",
        json={"recipient": "referrer", "kind": "fixed", "amount": "10.5"},
        headers=auth(shop.admin),
    )
    assert_problem(response, 422, "invalid_rule")


async def test_invalid_rule_updates_change_nothing(shop: Shop) -> None:
    rule = await shop.rule(recipient="referrer", kind="percent", percent="10")
    referee_rule = await shop.rule(recipient="referee", kind="fixed", amount="3.00")
    url = f"/v1/reward-rules/{rule['id']}"
    for body, code in (
        ({"amount": "5.00"}, "invalid_rule"),
        ({"currency": "EUR"}, "invalid_rule"),
        ({"kind": "fixed"}, "invalid_rule"),
        ({"active": None}, "invalid_request"),
        ({"percent": "0"}, "validation_error"),
        ({"unknown": 1}, "validation_error"),
    ):
        response = await shop.client.patch(url, json=body, headers=auth(shop.admin))
        assert_problem(response, 422, code)
    tiers = await shop.client.patch(
        f"/v1/reward-rules/{referee_rule['id']}",
        json={"tiers": [{"from_referral": 2, "amount": "9.00"}]},
        headers=auth(shop.admin),
    )
    assert_problem(tiers, 422, "invalid_rule")
    fetched = await shop.client.get(url, headers=auth(shop.admin))
    assert fetched.json() == rule
    missing = await shop.client.patch(
        "/v1/reward-rules/00000000-0000-4000-8000-000000000000",
        json={"active": False},
        headers=auth(shop.admin),
    )
    assert_problem(missing, 404, "reward_rule_not_found")
    bought = await shop.buy("bob", "50.00")
    assert sorted(r["amount"] for r in bought["rewards"]) == ["3.00", "5.00"]


# --- transitions -----------------------------------------------------------------------------


async def test_pending_approved_paid(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00", hold_days=7)
    reward = only((await shop.buy("bob", "20.00"))["rewards"])
    rid = reward["id"]
    approved = await transition(shop.client, shop.admin, rid, "approve")
    assert approved.json()["status"] == "approved"
    assert_problem(
        await transition(shop.client, shop.admin, rid, "approve"), 409, "invalid_transition"
    )
    paid = await transition(shop.client, shop.admin, rid, "mark-paid", {"payout_reference": "po_9"})
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert (body["status"], body["payout_reference"], body["amount"]) == ("paid", "po_9", "5.00")
    assert body["paid_at"] is not None
    for action, payload in (
        ("approve", None),
        ("mark-paid", None),
        ("reverse", {"reason": "changed our mind"}),
    ):
        assert_problem(
            await transition(shop.client, shop.admin, rid, action, payload),
            409,
            "invalid_transition",
        )
    assert only(await shop.ledger())["status"] == "paid"
    assert (await balance(shop.client, shop.admin, shop.alice["id"]))["USD"] == {
        "unit": "USD",
        "pending": "0.00",
        "approved": "0.00",
        "paid": "5.00",
        "owed": "0.00",
        "payable": "0.00",
    }


async def test_mark_paid_without_a_body(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00")
    reward = only((await shop.buy("bob", "20.00"))["rewards"])
    paid = await transition(shop.client, shop.admin, reward["id"], "mark-paid")
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["payout_reference"]) == ("paid", None)


async def test_reverse_with_a_reason(shop: Shop) -> None:
    await shop.rule(
        recipient="referrer", kind="fixed", amount="5.00", hold_days=7, trigger="every_purchase"
    )
    pending = only((await shop.buy("bob", "20.00"))["rewards"])
    approved = only((await shop.buy("carol", "20.00"))["rewards"])
    assert (await transition(shop.client, shop.admin, approved["id"], "approve")).status_code == 200
    missing_reason = await transition(shop.client, shop.admin, pending["id"], "reverse", {})
    assert_problem(missing_reason, 422, "validation_error")
    for reward in (pending, approved):
        response = await transition(
            shop.client, shop.admin, reward["id"], "reverse", {"reason": "fraud"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["reversal_reason"]) == ("reversed", "fraud")
        assert body["reversed_at"] is not None
        for action, payload in (
            ("approve", None),
            ("mark-paid", {"payout_reference": "po"}),
            ("reverse", {"reason": "again"}),
        ):
            assert_problem(
                await transition(shop.client, shop.admin, reward["id"], action, payload),
                409,
                "invalid_transition",
            )
    assert await balance(shop.client, shop.admin, shop.alice["id"]) == {
        "USD": {
            "unit": "USD",
            "pending": "0.00",
            "approved": "0.00",
            "paid": "0.00",
            "owed": "0.00",
            "payable": "0.00",
        },
    }


async def test_unknown_reward_is_404(shop: Shop) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for action in ("approve", "mark-paid"):
        assert_problem(
            await transition(shop.client, shop.admin, missing, action), 404, "reward_not_found"
        )
    assert_problem(
        await transition(shop.client, shop.admin, missing, "reverse", {"reason": "x"}),
        404,
        "reward_not_found",
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


# --- reading the ledger ----------------------------------------------------------------------


async def test_list_rewards_filters(app: Any, shop: Shop) -> None:
    bob = await make_referrer(shop.client, shop.admin, shop.pid, "bob")
    other = await make_program(shop.client, shop.admin, name="Other")
    stranger = await make_referrer(shop.client, shop.admin, other["id"], "stranger")
    await add_rule(
        shop.client, shop.admin, other["id"], recipient="referrer", kind="fixed", amount="1.00"
    )
    await shop.rule(recipient="referrer", kind="fixed", amount="5.00", hold_days=30)
    await shop.rule(recipient="referee", kind="fixed", amount="2.00")
    a = await shop.buy("r1", "20.00")
    between = datetime.now(UTC)
    b = await shop.buy("r2", "20.00", code=bob["default_code"]["code"])
    c = await purchase(
        shop.client, shop.admin, other, "o1", "r3", "20.00", code=stranger["default_code"]["code"]
    )

    def keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((r["recipient_id"], r["status"]) for r in rows)

    everything = await rewards(shop.client, shop.admin)
    assert keys(everything) == [
        ("alice", "pending"),
        ("bob", "pending"),
        ("r1", "approved"),
        ("r2", "approved"),
        ("stranger", "approved"),
    ]
    assert keys(await shop.ledger()) == [
        ("alice", "pending"),
        ("bob", "pending"),
        ("r1", "approved"),
        ("r2", "approved"),
    ]
    assert keys(await rewards(shop.client, shop.admin, program_id=other["id"])) == [
        ("stranger", "approved"),
    ]
    # the referee's reward is filed under the referrer who brought them
    assert keys(await rewards(shop.client, shop.admin, referrer_id=bob["id"])) == [
        ("bob", "pending"),
        ("r2", "approved"),
    ]
    assert keys(await rewards(shop.client, shop.admin, conversion_id=a["id"])) == [
        ("alice", "pending"),
        ("r1", "approved"),
    ]
    assert keys(await rewards(shop.client, shop.admin, status="pending")) == [
        ("alice", "pending"),
        ("bob", "pending"),
    ]
    assert keys(await rewards(shop.client, shop.admin, **{"from": between.isoformat()})) == [
        ("bob", "pending"),
        ("r2", "approved"),
        ("stranger", "approved"),
    ]
    assert keys(await rewards(shop.client, shop.admin, to=between.isoformat())) == [
        ("alice", "pending"),
        ("r1", "approved"),
    ]
    assert keys(
        await rewards(
            shop.client,
            shop.admin,
            status="approved",
            program_id=shop.pid,
            **{"from": between.isoformat()},
        )
    ) == [("r2", "approved")]
    assert c["rewards"][0]["program_id"] == other["id"] and b["referrer_id"] == bob["id"]

    bad = await shop.client.get("/v1/rewards", params={"status": "lost"}, headers=auth(shop.admin))
    assert_problem(bad, 422, "validation_error")

    # pages follow created_at, id
    page = await shop.client.get("/v1/rewards", params={"limit": 2}, headers=auth(shop.admin))
    first_page = page.json()
    assert len(first_page["data"]) == 2 and first_page["next_cursor"]
    rest = await rewards(shop.client, shop.admin)
    assert [r["id"] for r in rest[:2]] == [r["id"] for r in first_page["data"]]


async def test_balance_by_unit_and_status(shop: Shop) -> None:
    await shop.rule(recipient="referrer", kind="fixed", amount="10.00", trigger="every_purchase")
    await shop.rule(
        recipient="referrer", kind="points", points=100, hold_days=30, trigger="every_purchase"
    )
    await shop.rule(recipient="referee", kind="fixed", amount="3.00", trigger="every_purchase")
    one = await shop.buy("r1", "20.00")
    await shop.buy("r2", "20.00")
    cash = next(r for r in one["rewards"] if r["recipient"] == "referrer" and r["unit"] == "USD")
    assert (await transition(shop.client, shop.admin, cash["id"], "mark-paid")).status_code == 200
    assert await balance(shop.client, shop.admin, shop.alice["id"]) == {
        "USD": {
            "unit": "USD",
            "pending": "0.00",
            "approved": "10.00",
            "paid": "10.00",
            "owed": "10.00",
            "payable": "10.00",
        },
        "points": {
            "unit": "points",
            "pending": "200",
            "approved": "0",
            "paid": "0",
            "owed": "200",
            "payable": "0",
        },
    }


async def test_balance_of_a_referrer_without_rewards(shop: Shop) -> None:
    assert await balance(shop.client, shop.admin, shop.alice["id"]) == {}
    missing = await shop.client.get(
        "/v1/referrers/00000000-0000-4000-8000-000000000000/balance", headers=auth(shop.admin)
    )
    assert_problem(missing, 404, "referrer_not_found")


async def test_patching_other_fields_keeps_the_money(client: AsyncClient, app: Any) -> None:
    shop = await make_shop(client, app, currency="JPY")
    rule = await shop.rule(
        recipient="referrer",
        kind="fixed",
        amount="500",
        min_order_amount="3000",
        tiers=[{"from_referral": 2, "amount": "800"}],
    )
    renamed = await patch_rule(shop.client, shop.admin, rule["id"], name="Welcome", hold_days=3)
    assert (renamed["version"], renamed["name"], renamed["hold_days"]) == (2, "Welcome", 3)
    assert (renamed["amount"], renamed["min_order_amount"]) == ("500", "3000")
    assert renamed["tiers"] == [
        {"from_referral": 2, "amount": "800", "percent": None, "points": None}
    ]
    assert (await shop.buy("r1", "2999"))["rewards"] == []
    # r1 bought (below the minimum, still a successful referral): r2 is alice's second
    reward = only((await shop.buy("r2", "3000"))["rewards"])
    assert (reward["amount"], reward["status"], reward["rule_version"]) == ("800", "pending", 2)


async def test_reading_rewards_never_approves_another_programs_rewards(
    client: AsyncClient, app: Any
) -> None:
    """A read shows due rewards as approved, inside what the key may see, and writes nothing."""
    admin, prog, referrer = await setup_program(client, app)
    await add_rule(
        client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00", hold_days=3
    )
    code = referrer["default_code"]["code"]
    conversion = await purchase(client, admin, prog, "due-1", "bob", "20.00", code=code)
    [reward] = conversion["rewards"]
    assert reward["status"] == "pending"
    async with app.state.sessionmaker() as session:
        row = await session.get(Reward, UUID(reward["id"]))
        assert row is not None
        row.hold_until = datetime.now(UTC) - timedelta(minutes=1)
        await session.commit()
    other = await make_program(client, admin, name="Other")
    outsider = await make_key(app, "secret", [UUID(other["id"])])
    for params in ({"program_id": prog["id"]}, {"referrer_id": referrer["id"]}):
        listed = await client.get("/v1/rewards", params=params, headers=auth(outsider))
        assert listed.status_code == 200 and listed.json()["data"] == []
    async with app.state.sessionmaker() as session:
        row = await session.get(Reward, UUID(reward["id"]))
        assert row is not None and row.status == "pending"
    mine = await client.get("/v1/rewards", params={"program_id": prog["id"]}, headers=auth(admin))
    assert [r["status"] for r in mine.json()["data"]] == ["approved"]
    async with app.state.sessionmaker() as session:
        row = await session.get(Reward, UUID(reward["id"]))
        assert row is not None and row.status == "pending"

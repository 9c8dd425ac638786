"""The ledger through the API: transitions, lists and filters, balances, scoping."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from httpx import AsyncClient

from app.rewards.models import Reward
from tests.factories import assert_problem, auth, make_key, make_program, make_referrer
from tests.money_factories import (
    Shop,
    add_rule,
    balance,
    make_shop,
    only,
    patch_rule,
    purchase,
    rewards,
    setup_program,
    transition,
)

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

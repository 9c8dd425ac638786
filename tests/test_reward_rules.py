"""Rule changes make versions; invalid rules and updates are refused and change nothing."""

from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import select

from app.rewards.models import RewardRuleVersion
from tests.factories import assert_problem, auth, db_all
from tests.money_factories import (
    Shop,
    make_shop,
    only,
    patch_rule,
)

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

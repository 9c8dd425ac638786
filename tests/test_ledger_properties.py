"""Property: over random purchases, refunds, payouts and rule changes, the ledger is what the rules
say by hand, and sending every request twice changes nothing.

The reference model below is written from the spec (attribution order, rule semantics, refunds
and clawbacks), with exact fractions for every proportion; it calls no app code.
"""

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from httpx import AsyncClient, Response
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.factories import auth, make_key, make_program, make_referrer
from tests.ledger_model import (
    CENT,
    CUSTOMERS,
    REFERRERS,
    UNKNOWN_CODE,
    WINDOW_DAYS,
    ConversionModel,
    Ledger,
    RewardModel,
    RuleModel,
    money,
    operations,
    round_half_even,
    rules,
    show,
)
from tests.money_factories import list_all

# --- the property ----------------------------------------------------------------------------


async def twice(send: Any) -> tuple[Response, Response]:
    """Send the same request twice; the second must be a faithful retry of the first."""
    first = await send()
    second = await send()
    return first, second


def assert_retry(first: Response, second: Response, created: int = 201) -> None:
    if first.status_code == created:
        assert second.status_code == 200, second.text
    else:
        assert second.status_code == first.status_code, second.text
    assert second.json() == first.json()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule_specs=st.lists(rules(), min_size=1, max_size=3), ops=operations)
async def test_ledger_matches_the_rules_by_hand(
    client: AsyncClient, app: Any, rule_specs: list[dict[str, Any]], ops: list[dict[str, Any]]
) -> None:
    # Every example has a program of its own: nothing of the previous one is in its ledger.
    admin = await make_key(app)
    program = await make_program(client, admin, attribution_window_days=WINDOW_DAYS)
    referrers = {
        name: await make_referrer(client, admin, program["id"], name, email=email)
        for name, email in REFERRERS.items()
    }
    codes = {name: r["default_code"]["code"] for name, r in referrers.items()}
    codes[UNKNOWN_CODE] = UNKNOWN_CODE
    model = Ledger(now=datetime.now(UTC))
    base = model.now - timedelta(minutes=1)

    for index, spec in enumerate(rule_specs):
        rule = RuleModel(
            index=index,
            version=1,
            **{
                k: spec[k]
                for k in ("recipient", "kind", "trigger", "min_order", "tiers", "cap", "hold_days")
            },
            value=spec["value"],
        )
        body: dict[str, Any] = {
            "recipient": rule.recipient,
            "kind": rule.kind,
            "trigger": rule.trigger,
            "hold_days": rule.hold_days,
            {"fixed": "amount", "percent": "percent", "points": "points"}[rule.kind]: int(
                rule.value
            )
            if rule.kind == "points"
            else str(rule.value),
        }
        if rule.min_order is not None:
            body["min_order_amount"] = str(rule.min_order)
        if rule.cap is not None:
            body["max_rewards_per_referrer"] = rule.cap
        if rule.tiers:
            name = {"fixed": "amount", "percent": "percent", "points": "points"}[rule.kind]
            body["tiers"] = [
                {"from_referral": start, name: int(v) if rule.kind == "points" else str(v)}
                for start, v in rule.tiers
            ]
        response = await client.post(
            f"/v1/programs/{program['id']}/reward-rules", json=body, headers=auth(admin)
        )
        assert response.status_code == 201, response.text
        rule.id = response.json()["id"]
        model.rules.append(rule)

    requests: list[Any] = []  # every request that succeeded, to replay once more at the end
    for step, op in enumerate(ops):
        if op["op"] == "purchase":
            occurred_at = base - timedelta(days=op["days_ago"])
            body = {
                "program_id": program["id"],
                "event_id": f"ev_{step}",
                "customer_id": op["customer"],
                "amount": str(money(op["cents"])),
                "currency": "USD",
                "occurred_at": occurred_at.isoformat(),
            }
            if op["code"] is not None:
                body["code"] = codes[op["code"]]
            if CUSTOMERS[op["customer"]] is not None:
                body["email"] = CUSTOMERS[op["customer"]]

            async def send_purchase(body: dict[str, Any] = body) -> Response:
                return await client.post("/v1/conversions", json=body, headers=auth(admin))

            first, second = await twice(send_purchase)
            assert first.status_code == 201, first.text
            assert_retry(first, second)
            conversion = ConversionModel(
                event=body["event_id"],
                customer=op["customer"],
                amount=money(op["cents"]),
                occurred_at=occurred_at,
                referrer=None,
                reason="",
                id=first.json()["id"],
            )
            model.purchase(conversion, op["code"])
            event(f"purchase: {conversion.reason}")
            if conversion.referrer and any(r.event == conversion.event for r in model.rewards):
                event(f"purchase paid, attributed by {conversion.reason}")
            got = first.json()
            expected_referrer = (
                referrers[conversion.referrer]["id"] if conversion.referrer else None
            )
            assert (got["referrer_id"], got["attribution_reason"]) == (
                expected_referrer,
                conversion.reason,
            ), op
            if conversion.referrer is None:
                # self-referrals, touches outside the window or never eligible, organic: no reward
                assert got["status"] == "unattributed" and got["rewards"] == []
            expected = [r for r in model.rewards if r.event == conversion.event]
            assert sorted(
                _row(model, {conversion.id: conversion.event}, r, {}) for r in got["rewards"]
            ) == sorted(_expected_row(r) for r in expected), (
                op,
                [rule.__dict__ for rule in model.rules],
            )
            for mine in expected:
                mine.id = next(
                    r["id"] for r in got["rewards"] if _rule_index(model, r["rule_id"]) == mine.rule
                )
            requests.append(("purchase", send_purchase))

        elif op["op"] == "refund" and model.conversions:
            conversion = model.conversions[-1 - op["target"] % len(model.conversions)]
            amount = (
                None
                if op["share"] is None
                else max(CENT, (conversion.amount * op["share"] / 100).quantize(CENT))
            )
            body = {"refund_id": f"rf_{step}"} | ({"amount": str(amount)} if amount else {})

            async def send_refund(
                body: dict[str, Any] = body, cid: str = conversion.id
            ) -> Response:
                return await client.post(
                    f"/v1/conversions/{cid}/refunds", json=body, headers=auth(admin)
                )

            first, second = await twice(send_refund)
            status, code = model.refund(conversion, amount)
            assert first.status_code == status, (first.text, op)
            if code is not None:
                assert first.json()["code"] == code
            assert_retry(first, second)
            if status == 201:
                requests.append(("refund", send_refund))

        elif op["op"] == "pay":
            payable = [r for r in model.rewards if r.entry_type == "reward"]
            if not payable:
                continue
            reward = payable[-1 - op["target"] % len(payable)]
            status, code = model.pay(reward)
            url = f"/v1/rewards/{reward.id}/mark-paid"
            first = await client.post(
                url, json={"payout_reference": f"po_{step}"}, headers=auth(admin)
            )
            assert first.status_code == status, first.text
            second = await client.post(
                url, json={"payout_reference": f"po_{step}"}, headers=auth(admin)
            )
            # paying twice is refused: the payout is not recorded twice
            assert (second.status_code, second.json()["code"]) == (409, "invalid_transition")

        elif op["op"] == "change_rule":
            rule = model.rules[op["target"] % len(model.rules)]
            if op["toggle"]:
                changes: dict[str, Any] = {"active": not rule.active}
            elif rule.kind == "fixed":
                changes = {"amount": str(money(op["cents"]))}
            elif rule.kind == "percent":
                changes = {"percent": op["percent"]}
            else:
                changes = {"points": op["points"]}
            url = f"/v1/reward-rules/{rule.id}"

            async def send_rule_change(
                url: str = url, changes: dict[str, Any] = changes
            ) -> Response:
                return await client.patch(url, json=changes, headers=auth(admin))

            first, second = await twice(send_rule_change)
            model.change_rule(rule, changes)
            assert first.status_code == 200, first.text
            assert first.json()["version"] == rule.version
            # the same change again is no change: no new version
            assert second.status_code == 200 and second.json() == first.json()

    before = await _ledger(client, admin, program, model)
    # replay every successful request once more: the answers are retries, the ledger is the same
    for _, send in requests:
        again = await send()
        assert again.status_code == 200, again.text
    after = await _ledger(client, admin, program, model)
    assert after == before

    assert sorted(after) == sorted(_expected_row(r) for r in model.rewards)
    for name, referrer in referrers.items():
        response = await client.get(f"/v1/referrers/{referrer['id']}/balance", headers=auth(admin))
        lines = {line["unit"]: line for line in response.json()["balances"]}
        assert lines == model.balance(name), name
    conversions = await list_all(client, admin, "/v1/conversions", program_id=program["id"])
    assert {c["event_id"]: c["refunded_amount"] for c in conversions} == {
        c.event: show(c.refunded, "USD") for c in model.conversions
    }


def _rule_index(model: Ledger, rule_id: str) -> int:
    return next(rule.index for rule in model.rules if rule.id == rule_id)


Row = tuple[Any, ...]


def _expected_row(r: RewardModel) -> Row:
    return (
        r.event,
        r.rule,
        r.version,
        r.recipient,
        r.recipient_id,
        r.kind,
        r.unit,
        show(r.amount, r.unit),
        show(r.original, r.unit),
        r.status,
        r.entry_type,
        r.adjusts,
    )


def _row(
    model: Ledger, events: dict[str, str], row: dict[str, Any], by_id: dict[str, dict[str, Any]]
) -> Row:
    def key(entry: dict[str, Any]) -> tuple[str, int]:
        return events[entry["conversion_id"]], _rule_index(model, entry["rule_id"])

    adjusts = row["adjusts_reward_id"]
    return (
        *key(row),
        row["rule_version"],
        row["recipient"],
        row["recipient_id"],
        row["kind"],
        row["unit"],
        row["amount"],
        row["original_amount"],
        row["status"],
        row["entry_type"],
        key(by_id[adjusts]) if adjusts else None,
    )


async def _ledger(
    client: AsyncClient, admin: str, program: dict[str, Any], model: Ledger
) -> list[Row]:
    rows = await list_all(client, admin, "/v1/rewards", program_id=program["id"])
    events = {c.id: c.event for c in model.conversions}
    by_id = {row["id"]: row for row in rows}
    return [_row(model, events, row, by_id) for row in rows]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(5, 1000), "0.00"),
        (Fraction(15, 1000), "0.02"),
        (Fraction(25, 1000), "0.02"),
        (Fraction(35, 1000), "0.04"),
        (Fraction(1, 300), "0.00"),
        (Fraction(2, 3), "0.67"),
        (Fraction(-5, 1000), "0.00"),
    ],
)
def test_reference_rounding(value: Fraction, expected: str) -> None:
    """The model's own rounding, checked against values worked out by hand."""
    assert str(round_half_even(value)) == expected

"""Property: over random purchases, refunds, payouts and rule changes, the ledger is what the rules
say by hand, and sending every request twice changes nothing.

The reference model below is written from the spec (attribution order, rule semantics, refunds
and clawbacks), with exact fractions for every proportion; it calls no app code.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

import pytest
from httpx import AsyncClient, Response
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.factories import auth, make_key, make_program, make_referrer
from tests.money_factories import list_all

WINDOW_DAYS = 30
CENT = Decimal("0.01")
REFERRERS = {"alice": "alice@example.com", "bob": "bob@example.com"}
# customer → the email every purchase of theirs carries; "alias" is alice under another id
CUSTOMERS = {
    "c1": None,
    "c2": "c2@example.com",
    "c3": None,
    "alice": None,
    "alias": "Alice@Example.com",
}
UNKNOWN_CODE = "NOSUCHCODE"
PERCENTS = ["0.5", "2.5", "7", "10", "12.5", "33.3333", "100"]


def round_half_even(value: Fraction) -> Decimal:
    """An exact fraction rounded half-even to cents."""
    cents = value * 100
    whole, rest = divmod(cents.numerator, cents.denominator)
    twice = 2 * rest
    if twice > cents.denominator or (twice == cents.denominator and whole % 2 == 1):
        whole += 1
    return (Decimal(whole) / 100).quantize(CENT)


def show(value: Decimal, unit: str) -> str:
    if unit == "points":
        return str(int(value))
    return str(value.quantize(CENT, rounding=ROUND_HALF_EVEN))


# --- the reference model ---------------------------------------------------------------------


@dataclass
class RuleModel:
    index: int
    recipient: str
    kind: str
    value: Decimal  # amount, percent or points
    trigger: str
    min_order: Decimal | None
    tiers: list[tuple[int, Decimal]]
    cap: int | None
    hold_days: int
    version: int = 1
    active: bool = True
    id: str = ""


@dataclass
class RewardModel:
    event: str
    rule: int
    version: int
    referrer: str
    recipient: str
    recipient_id: str
    kind: str
    unit: str
    amount: Decimal
    original: Decimal
    status: str
    entry_type: str = "reward"
    adjusts: tuple[str, int] | None = None
    id: str = ""


@dataclass
class ConversionModel:
    event: str
    customer: str
    amount: Decimal
    occurred_at: datetime
    referrer: str | None
    reason: str
    refunded: Decimal = Decimal(0)
    id: str = ""
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ledger:
    """What the spec says should happen, kept by hand."""

    now: datetime
    rules: list[RuleModel] = field(default_factory=list)
    conversions: list[ConversionModel] = field(default_factory=list)
    rewards: list[RewardModel] = field(default_factory=list)
    referrals: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    attributed_customers: set[str] = field(default_factory=set)
    successful: dict[str, set[str]] = field(default_factory=dict)

    @staticmethod
    def is_self(referrer: str, customer: str) -> bool:
        email = CUSTOMERS[customer]
        return referrer == customer or (
            email is not None and email.lower() == REFERRERS[referrer].lower()
        )

    def attribute(self, customer: str, code: str | None, at: datetime) -> tuple[str | None, str]:
        """(winning referrer, reason): explicit code, then the customer's referral in the window."""
        lost: set[str] = set()  # why each candidate lost
        if code in REFERRERS:
            if not self.is_self(code, customer):
                return code, "explicit_code"
            lost.add("self_referral")
        elif code is not None:
            lost.add("unknown_code")
        if customer in self.referrals:
            referrer, touched = self.referrals[customer]
            if touched < at - timedelta(days=WINDOW_DAYS):
                event("the referral is outside the window")
                lost.add("outside_window")
            elif touched > at:
                lost.add("after_conversion")
            elif self.is_self(referrer, customer):
                lost.add("self_referral")
            else:
                return referrer, "last_touch"
        # Unattributed: the most telling loss; organic only when there was no candidate.
        for reason in ("self_referral", "outside_window"):
            if reason in lost:
                return None, reason
        return None, "no_eligible_touch" if lost else "organic"

    def purchase(self, conversion: ConversionModel, code: str | None) -> None:
        winner, reason = self.attribute(conversion.customer, code, conversion.occurred_at)
        conversion.referrer, conversion.reason = winner, reason
        self.conversions.append(conversion)
        if winner is None:
            return
        customer = conversion.customer
        self.referrals.setdefault(customer, (winner, conversion.occurred_at))
        through_referral = self.referrals[customer][0] == winner
        first = customer not in self.attributed_customers
        self.attributed_customers.add(customer)
        if through_referral:
            self.successful.setdefault(winner, set()).add(customer)
        for rule in self.rules:
            if not rule.active:
                continue
            if rule.trigger == "first_purchase" and not first:
                continue
            if rule.min_order is not None and conversion.amount < rule.min_order:
                continue
            if rule.cap is not None:
                given_ = sum(
                    1
                    for r in self.rewards
                    if r.rule == rule.index
                    and r.referrer == winner
                    and r.entry_type == "reward"
                    and r.status != "reversed"
                )
                if given_ >= rule.cap:
                    continue
            value = rule.value
            if rule.tiers and rule.recipient == "referrer":
                count = len(self.successful.get(winner, set()))
                reached = [v for start, v in rule.tiers if count >= start]
                if reached:
                    value = reached[-1]  # tiers are kept sorted by their start
            if rule.kind == "points":
                amount, unit = value, "points"
            elif rule.kind == "fixed":
                amount, unit = value, "USD"
            else:
                exact = Fraction(conversion.amount) * Fraction(value) / 100
                if (exact * 100).denominator == 2:
                    event("a percent reward on a half cent")
                amount, unit = round_half_even(exact), "USD"
            if amount <= 0:
                continue
            due = conversion.occurred_at + timedelta(days=rule.hold_days) <= self.now
            self.rewards.append(
                RewardModel(
                    event=conversion.event,
                    rule=rule.index,
                    version=rule.version,
                    referrer=winner,
                    recipient=rule.recipient,
                    recipient_id=winner if rule.recipient == "referrer" else customer,
                    kind=rule.kind,
                    unit=unit,
                    amount=amount,
                    original=amount,
                    status="approved" if due else "pending",
                )
            )

    def refund(self, conversion: ConversionModel, amount: Decimal | None) -> tuple[int, str | None]:
        """(status, problem code) of the refund, applied to the model when it succeeds."""
        remaining = conversion.amount - conversion.refunded
        if remaining <= 0:
            return 409, "already_refunded"
        amount = remaining if amount is None else amount
        if amount > remaining:
            return 422, "refund_exceeds_amount"
        conversion.refunded += amount
        left = Fraction(conversion.amount - conversion.refunded) / Fraction(conversion.amount)
        for reward in [r for r in self.rewards if r.event == conversion.event]:
            if reward.entry_type != "reward" or reward.status == "reversed":
                continue
            if left == 0:
                target = Decimal(0)
            elif reward.kind == "percent":
                target = round_half_even(Fraction(reward.original) * left)
            else:
                target = reward.original
            if target != reward.amount:
                event(f"refund changes a {reward.status} {reward.kind} reward")
            if reward.status in ("pending", "approved"):
                if target <= 0:
                    reward.status = "reversed"
                else:
                    reward.amount = target
                continue
            clawed = sum(
                (r.amount for r in self.rewards if r.adjusts == (reward.event, reward.rule)),
                Decimal(0),
            )
            delta = target - (reward.amount + clawed)
            if delta < 0:
                self.rewards.append(
                    RewardModel(
                        event=reward.event,
                        rule=reward.rule,
                        version=reward.version,
                        referrer=reward.referrer,
                        recipient=reward.recipient,
                        recipient_id=reward.recipient_id,
                        kind=reward.kind,
                        unit=reward.unit,
                        amount=delta,
                        original=delta,
                        status="approved",
                        entry_type="clawback",
                        adjusts=(reward.event, reward.rule),
                    )
                )
        return 201, None

    def pay(self, reward: RewardModel) -> tuple[int, str | None]:
        if reward.status != "approved":
            return 409, "invalid_transition"
        reward.status = "paid"
        return 200, None

    def change_rule(self, rule: RuleModel, changes: dict[str, Any]) -> None:
        changed = False
        if "active" in changes and changes["active"] != rule.active:
            rule.active, changed = changes["active"], True
        for name in ("amount", "percent", "points"):
            if name in changes and Decimal(str(changes[name])) != rule.value:
                rule.value, changed = Decimal(str(changes[name])), True
        if changed:
            rule.version += 1

    def balance(self, referrer: str) -> dict[str, dict[str, str]]:
        lines: dict[str, dict[str, Decimal]] = {}
        for r in self.rewards:
            if r.referrer != referrer or r.recipient != "referrer":
                continue
            line = lines.setdefault(
                r.unit, {s: Decimal(0) for s in ("pending", "approved", "paid")}
            )
            if r.status in line:
                line[r.status] += r.amount
        return {
            unit: {
                "unit": unit,
                "pending": show(line["pending"], unit),
                "approved": show(line["approved"], unit),
                "paid": show(line["paid"], unit),
                "owed": show(line["pending"] + line["approved"], unit),
                "payable": show(line["approved"], unit),
            }
            for unit, line in lines.items()
        }


# --- what hypothesis draws -------------------------------------------------------------------


def money(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["fixed", "percent", "points"]))
    recipient = draw(st.sampled_from(["referrer", "referee"]))

    def value() -> Decimal:
        if kind == "fixed":
            return money(draw(st.integers(1, 5000)))
        if kind == "percent":
            return Decimal(draw(st.sampled_from(PERCENTS)))
        return Decimal(draw(st.integers(1, 1000)))

    tiers: list[tuple[int, Decimal]] = []
    if recipient == "referrer" and draw(st.booleans()):
        starts = draw(st.lists(st.integers(2, 4), min_size=1, max_size=2, unique=True))
        tiers = sorted((start, value()) for start in starts)
    min_order = draw(st.one_of(st.none(), st.none(), st.integers(100, 10000)))
    return {
        "recipient": recipient,
        "kind": kind,
        "value": value(),
        "trigger": draw(st.sampled_from(["first_purchase", "every_purchase", "every_purchase"])),
        "min_order": money(min_order) if min_order is not None else None,
        "tiers": tiers,
        "cap": draw(st.one_of(st.none(), st.none(), st.integers(1, 3))),
        "hold_days": draw(st.sampled_from([0, 0, 7, 30])),
    }


purchases = st.fixed_dictionaries(
    {
        "op": st.just("purchase"),
        # hypothesis leans to the first choices (and shrinks towards them): a returning
        # referred customer is what it should try most
        "customer": st.sampled_from(["c1", "c2", "alice", "c1", "alias", "c3"]),
        "code": st.sampled_from(["alice", None, "bob", None, UNKNOWN_CODE, "alice"]),
        # a touch 45 days before is outside the 30-day window; one 10 days after is too late
        "days_ago": st.sampled_from([0, 10, 0, 45]),
        "cents": st.one_of(
            st.integers(1, 2000).map(lambda n: n * 10 + 5),  # half cents under 10 %
            st.integers(1, 20).map(lambda n: n * 100),  # half cents under 0.5 %
            st.integers(1, 200_000),
        ),
    }
)
refunds = st.fixed_dictionaries(
    {
        "op": st.just("refund"),
        "target": st.integers(0, 1000),  # counted back from the latest conversion
        # percent of the conversion's amount; None is a full refund of what is left
        "share": st.one_of(st.none(), st.integers(1, 120)),
    }
)
# counted back from the latest reward: a payout, then a refund, of the same purchase is likely
payouts = st.fixed_dictionaries({"op": st.just("pay"), "target": st.integers(0, 1000)})
rule_changes = st.fixed_dictionaries(
    {
        "op": st.just("change_rule"),
        "target": st.integers(0, 10),
        "toggle": st.booleans(),
        "cents": st.integers(1, 5000),
        "percent": st.sampled_from(PERCENTS),
        "points": st.integers(1, 1000),
    }
)
followups = st.one_of(refunds, payouts, rule_changes)
# Each step is a purchase and what may follow it (refunds, payouts, rule changes), so that every
# example has enough purchases for referrals, windows, tiers and caps to come into play.
operations = st.lists(
    st.tuples(purchases, st.lists(followups, max_size=2)), min_size=6, max_size=14
).map(lambda steps: [op for purchase, after in steps for op in (purchase, *after)])


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

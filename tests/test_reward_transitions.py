"""The ledger's transition table, pair by pair, through the API.

Every (entry type, status) a ledger entry can be in is built through the API; each action the
API offers (approve, mark-paid, reverse) is then tried on it. The answer must be what
app.rewards.states.TRANSITIONS says: the new status, or 409 invalid_transition and no change.
`fulfil` is the fulfilment dispatcher's: a due fulfilment is attached to each entry and the
dispatcher run against a local issuer.
"""

from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient

from app.core.db import utcnow
from app.fulfilment.dispatcher import Dispatcher
from app.fulfilment.models import Fulfilment
from app.fulfilment.states import FulfilmentStatus
from app.rewards.states import (
    TRANSITIONS,
    Action,
    EntryType,
    FulfilmentMethod,
    FulfilmentProvider,
    RewardStatus,
)
from tests.factories import assert_problem
from tests.fakes.issuer import FakeIssuer
from tests.fulfilment_helpers import (  # noqa: F401
    connect_issuer,
    dispatcher_fixture,
    fulfilment_of,
    issuer_fixture,
    shopify_fixture,
    stripe_fixture,
)
from tests.money_factories import (
    add_rule,
    post_refund,
    purchase,
    rewards,
    setup_program,
    transition,
)

API_ACTIONS = {
    "approve": (Action.APPROVE, None),
    "mark-paid": (Action.PAY, {"payout_reference": "po_1"}),
    "reverse": (Action.REVERSE, {"reason": "ops said so"}),
}


async def _entry_in(
    client: AsyncClient, app: Any, entry_type: EntryType, status: RewardStatus
) -> tuple[str, dict[str, Any]]:
    """(admin key, an entry of `entry_type` in `status`), made through the API."""
    admin, prog, alice = await setup_program(client, app)
    await add_rule(
        client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00", hold_days=7
    )
    bought = await purchase(
        client, admin, prog, "order_1", "bob", "20.00", code=alice["default_code"]["code"]
    )
    reward = bought["rewards"][0]
    assert reward["status"] == RewardStatus.PENDING
    steps: dict[RewardStatus, list[str]] = {
        RewardStatus.PENDING: [],
        RewardStatus.APPROVED: ["approve"],
        RewardStatus.PAID: ["approve", "mark-paid"],
        RewardStatus.REVERSED: ["reverse"],
    }
    if entry_type == EntryType.CLAWBACK:
        for action in steps[RewardStatus.PAID]:
            await _do(client, admin, reward["id"], action)
        refunded = await post_refund(client, admin, bought["id"], refund_id="r1", amount="20.00")
        assert refunded.status_code == 201, refunded.text
        clawbacks = [r for r in await rewards(client, admin) if r["entry_type"] == "clawback"]
        assert len(clawbacks) == 1 and clawbacks[0]["status"] == RewardStatus.APPROVED
        reward = clawbacks[0]
        if status == RewardStatus.PAID:
            await _do(client, admin, reward["id"], "mark-paid")
    else:
        for action in steps[status]:
            await _do(client, admin, reward["id"], action)
    return admin, reward


async def _do(client: AsyncClient, admin: str, reward_id: str, action: str) -> None:
    response = await transition(client, admin, reward_id, action, API_ACTIONS[action][1])
    assert response.status_code == 200, response.text


STATES = [
    (EntryType.REWARD, RewardStatus.PENDING),
    (EntryType.REWARD, RewardStatus.APPROVED),
    (EntryType.REWARD, RewardStatus.PAID),
    (EntryType.REWARD, RewardStatus.REVERSED),
    (EntryType.CLAWBACK, RewardStatus.APPROVED),
    (EntryType.CLAWBACK, RewardStatus.PAID),
]


@pytest.mark.parametrize("action", sorted(API_ACTIONS))
@pytest.mark.parametrize(("entry_type", "status"), STATES)
async def test_every_pair_follows_the_table(
    client: AsyncClient, app: Any, entry_type: EntryType, status: RewardStatus, action: str
) -> None:
    admin, entry = await _entry_in(client, app, entry_type, status)
    table_action, body = API_ACTIONS[action]
    expected = TRANSITIONS.get((entry_type, status, table_action))
    response = await transition(client, admin, entry["id"], action, body)
    after = next(r for r in await rewards(client, admin) if r["id"] == entry["id"])
    if expected is None:
        assert_problem(response, 409, "invalid_transition")
        assert after["status"] == status
    else:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == expected == after["status"]


@pytest.mark.parametrize(("entry_type", "status"), STATES)
async def test_fulfil_follows_the_table(
    client: AsyncClient,
    app: Any,
    issuer: FakeIssuer,
    dispatcher: Dispatcher,
    entry_type: EntryType,
    status: RewardStatus,
) -> None:
    admin, entry = await _entry_in(client, app, entry_type, status)
    await connect_issuer(client, admin, entry["program_id"], issuer)
    now = utcnow()
    async with app.state.sessionmaker() as session:
        session.add(
            Fulfilment(
                created_at=now,
                updated_at=now,
                program_id=UUID(entry["program_id"]),
                reward_id=UUID(entry["id"]),
                method=FulfilmentMethod.COUPON,
                provider=FulfilmentProvider.WEBHOOK,
                status=FulfilmentStatus.PENDING,
                code="REFTRANSITION01",
                currency="USD",
                details={},
                attempts=0,
                in_flight=False,
                due_since=now,
                next_attempt_at=now,
            )
        )
        await session.commit()
    expected = TRANSITIONS.get((entry_type, status, Action.FULFIL))
    await dispatcher.run_once()
    after = next(r for r in await rewards(client, admin) if r["id"] == entry["id"])
    row = await fulfilment_of(client, admin, entry["id"])
    if expected is None:
        assert after["status"] == status
        assert row["status"] == "cancelled" and row["error"] == f"the reward is {status}"
        assert issuer.requests == []
    else:
        assert after["status"] == expected
        assert row["status"] == "fulfilled"
        assert len(issuer.calls("issue")) == 1


def test_a_clawback_is_never_reversed() -> None:
    for status in RewardStatus:
        for action in (Action.REVERSE, Action.REFUND):
            assert (EntryType.CLAWBACK, status, action) not in TRANSITIONS


def test_terminal_states_have_no_way_out() -> None:
    for entry_type in EntryType:
        for action in Action:
            assert (entry_type, RewardStatus.REVERSED, action) not in TRANSITIONS
            assert (entry_type, RewardStatus.PAID, action) not in TRANSITIONS

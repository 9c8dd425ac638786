"""Who earned a purchase: explicit code, explicit click, then the customer's touches by model."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.tracking.models import Click, Referral
from tests.factories import (
    assert_problem,
    auth,
    db_all,
    make_code,
    make_key,
    make_program,
    make_referrer,
    patch_code,
    record_click,
    redeem,
)
from tests.money_factories import (
    add_rule,
    post_conversion,
    purchase,
    set_occurred_at,
    setup_program,
)

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


class World:
    """A program with two referrers, alice and bob, and a fixed referrer reward of 5.00."""

    def __init__(
        self, admin: str, program: dict[str, Any], alice: dict[str, Any], bob: dict[str, Any]
    ):
        self.admin = admin
        self.program = program
        self.alice = alice
        self.bob = bob

    @property
    def alice_code(self) -> str:
        return str(self.alice["default_code"]["code"])

    @property
    def bob_code(self) -> str:
        return str(self.bob["default_code"]["code"])


async def make_world(client: AsyncClient, app: Any, **program: Any) -> World:
    admin, prog, alice = await setup_program(client, app, **program)
    bob = await make_referrer(client, admin, prog["id"], "bob", email="bob@example.com")
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="5.00",
        trigger="every_purchase",
    )
    return World(admin, prog, alice, bob)


@pytest.fixture
async def world(client: AsyncClient, app: Any) -> World:
    return await make_world(client, app)


async def click(client: AsyncClient, key: str, code: str, user_agent: str | None = None) -> str:
    response = await record_click(
        client, key, code, **({"user_agent": user_agent} if user_agent else {})
    )
    assert response.status_code == 201, response.text
    return str(response.json()["click_id"])


async def redemption(
    client: AsyncClient, key: str, code: str, customer_id: str, **extra: Any
) -> str:
    response = await redeem(client, key, code, customer_id, **extra)
    assert response.status_code == 201, response.text
    return str(response.json()["referral_id"])


async def explain(client: AsyncClient, key: str, conversion_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/conversions/{conversion_id}/attribution", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def outcomes(attribution: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(kind, source, outcome, reason) of every candidate, sorted."""
    return sorted(
        (c["kind"], c["source"], c["outcome"], c["reason"]) for c in attribution["candidates"]
    )


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


# --- the order: explicit code, explicit click, customer history ------------------------------


async def test_explicit_code_beats_click_and_history(client: AsyncClient, world: World) -> None:
    bob_click = await click(client, world.admin, world.bob_code)
    await redemption(client, world.admin, world.bob_code, "carol")
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        code=world.alice_code.lower(),
        click_id=bob_click,
    )
    assert bought["status"] == "attributed"
    assert bought["attribution_reason"] == "explicit_code"
    assert bought["referrer_id"] == world.alice["id"]
    assert bought["code"] == world.alice_code
    # carol's referral belongs to bob (she redeemed his code): this purchase is not through it
    assert bought["referral_id"] is None
    assert [(r["recipient_id"], r["amount"]) for r in bought["rewards"]] == [("alice", "5.00")]

    attribution = await explain(client, world.admin, bought["id"])
    assert attribution["status"] == "attributed"
    assert attribution["reason"] == "explicit_code"
    assert attribution["model"] == "last_touch"
    assert attribution["window_days"] == 30
    assert attribution["winner"]["kind"] == "code"
    assert attribution["winner"]["referrer_id"] == world.alice["id"]
    assert attribution["winner"]["code"] == world.alice_code
    assert outcomes(attribution) == [
        ("click", "explicit", "lost", "lower_priority"),
        ("code", "explicit", "won", "explicit_code"),
        ("redemption", "customer_history", "lost", "lower_priority"),
    ]


async def test_explicit_click_beats_history(client: AsyncClient, app: Any, world: World) -> None:
    await redemption(client, world.admin, world.bob_code, "carol")
    alice_click = await click(client, world.admin, world.alice_code)
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", click_id=alice_click
    )
    assert bought["attribution_reason"] == "explicit_click"
    assert bought["referrer_id"] == world.alice["id"]
    assert bought["click_id"] == alice_click
    assert bought["code"] == world.alice_code
    attribution = await explain(client, world.admin, bought["id"])
    assert attribution["winner"]["id"] == alice_click
    assert outcomes(attribution) == [
        ("click", "explicit", "won", "explicit_click"),
        ("redemption", "customer_history", "lost", "lower_priority"),
    ]
    # the click now belongs to carol: a later purchase can find it in her history
    [stored] = await db_all(app, select(Click).where(Click.id == UUID(alice_click)))
    assert stored.customer_id == "carol"


async def test_history_redemption_inside_the_window(client: AsyncClient, world: World) -> None:
    referral_id = await redemption(client, world.admin, world.bob_code, "carol")
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    assert bought["attribution_reason"] == "last_touch"
    assert bought["referrer_id"] == world.bob["id"]
    assert bought["referral_id"] == referral_id
    attribution = await explain(client, world.admin, bought["id"])
    assert attribution["winner"]["kind"] == "redemption"
    assert attribution["winner"]["id"] == referral_id


async def _redemption_after_click(
    client: AsyncClient, app: Any, world: World, click_days_ago: float, redeemed_days_ago: float
) -> tuple[str, str]:
    """carol clicked bob's code, then redeemed alice's code naming that click; both in the past."""
    bob_click = await click(client, world.admin, world.bob_code)
    referral_id = await redemption(
        client, world.admin, world.alice_code, "carol", click_id=bob_click
    )
    await set_occurred_at(app, Click, bob_click, days_ago(click_days_ago))
    await set_occurred_at(app, Referral, referral_id, days_ago(redeemed_days_ago))
    return bob_click, referral_id


@pytest.mark.parametrize(
    ("model", "click_days", "redeemed_days", "winner_kind"),
    [
        ("last_touch", 3, 2, "redemption"),  # the redemption is the latest touch
        ("first_touch", 3, 2, "click"),  # the click is the earliest
        ("last_touch", 2, 3, "click"),
        ("first_touch", 2, 3, "redemption"),
    ],
)
async def test_history_picked_by_the_model(
    client: AsyncClient,
    app: Any,
    model: str,
    click_days: float,
    redeemed_days: float,
    winner_kind: str,
) -> None:
    world = await make_world(client, app, attribution_model=model)
    bob_click, referral_id = await _redemption_after_click(
        client, app, world, click_days, redeemed_days
    )
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    assert bought["attribution_reason"] == model
    winner_referrer = world.bob if winner_kind == "click" else world.alice
    assert bought["referrer_id"] == winner_referrer["id"]
    assert bought["rewards"][0]["recipient_id"] == winner_referrer["external_id"]
    attribution = await explain(client, world.admin, bought["id"])
    assert attribution["model"] == model
    assert attribution["winner"]["id"] == (bob_click if winner_kind == "click" else referral_id)
    loser_kind = "redemption" if winner_kind == "click" else "click"
    # a history touch that the model did not pick lost to the model, whatever the list order
    assert outcomes(attribution) == sorted(
        [
            (winner_kind, "customer_history", "won", model),
            (loser_kind, "customer_history", "lost", "model"),
        ]
    )


async def test_model_follows_a_program_change(client: AsyncClient, app: Any, world: World) -> None:
    await _redemption_after_click(client, app, world, click_days_ago=3, redeemed_days_ago=2)
    first = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    assert first["referrer_id"] == world.alice["id"]
    changed = await client.patch(
        f"/v1/programs/{world.program['id']}",
        json={"attribution_model": "first_touch"},
        headers=auth(world.admin),
    )
    assert changed.status_code == 200, changed.text
    second = await purchase(client, world.admin, world.program, "o2", "carol", "40.00")
    assert second["attribution_reason"] == "first_touch"
    assert second["referrer_id"] == world.bob["id"]


# --- touches that never win ------------------------------------------------------------------


async def test_touch_outside_the_window_loses(client: AsyncClient, app: Any) -> None:
    world = await make_world(client, app, attribution_window_days=7)
    await _redemption_after_click(client, app, world, click_days_ago=8, redeemed_days_ago=6)
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    # the click is a day too old for the 7-day window: the later redemption is all that is left
    assert bought["referrer_id"] == world.alice["id"]
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [
        ("click", "customer_history", "lost", "outside_window"),
        ("redemption", "customer_history", "won", "last_touch"),
    ]


async def test_only_touches_outside_the_window_is_outside_window_not_organic(
    client: AsyncClient, app: Any, world: World
) -> None:
    referral_id = await redemption(client, world.admin, world.bob_code, "carol")
    await set_occurred_at(app, Referral, referral_id, days_ago(31))
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    assert bought["status"] == "unattributed"
    assert bought["attribution_reason"] == "outside_window"
    assert bought["referrer_id"] is None
    assert bought["rewards"] == []
    attribution = await explain(client, world.admin, bought["id"])
    assert (attribution["reason"], attribution["winner"]) == ("outside_window", None)
    assert outcomes(attribution) == [("redemption", "customer_history", "lost", "outside_window")]


async def test_window_is_measured_from_occurred_at(
    client: AsyncClient, app: Any, world: World
) -> None:
    referral_id = await redemption(client, world.admin, world.bob_code, "carol")
    await set_occurred_at(app, Referral, referral_id, days_ago(40))
    # a late event: the purchase happened 20 days ago, 20 days after the redemption
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        occurred_at=days_ago(20).isoformat(),
    )
    assert bought["attribution_reason"] == "last_touch"
    assert bought["referrer_id"] == world.bob["id"]


async def test_touch_after_the_purchase_loses(client: AsyncClient, world: World) -> None:
    await redemption(client, world.admin, world.bob_code, "carol")
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        occurred_at=days_ago(1).isoformat(),
    )
    assert bought["status"] == "unattributed"
    # a candidate that lost for a reason no window would change: not organic either
    assert bought["attribution_reason"] == "no_eligible_touch"
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("redemption", "customer_history", "lost", "after_conversion")]


async def test_explicit_click_after_the_purchase_loses(client: AsyncClient, world: World) -> None:
    alice_click = await click(client, world.admin, world.alice_code)
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        click_id=alice_click,
        occurred_at=days_ago(1).isoformat(),
    )
    assert bought["status"] == "unattributed"
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("click", "explicit", "lost", "after_conversion")]


async def test_explicit_click_outside_the_window_loses(
    client: AsyncClient, app: Any, world: World
) -> None:
    alice_click = await click(client, world.admin, world.alice_code)
    await set_occurred_at(app, Click, alice_click, days_ago(31))
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", click_id=alice_click
    )
    assert bought["status"] == "unattributed"
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("click", "explicit", "lost", "outside_window")]


async def test_bot_click_never_wins(client: AsyncClient, world: World) -> None:
    bot_click = await click(client, world.admin, world.alice_code, user_agent=GOOGLEBOT)
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", click_id=bot_click
    )
    assert bought["status"] == "unattributed"
    assert bought["attribution_reason"] == "no_eligible_touch"
    assert bought["rewards"] == []
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("click", "explicit", "lost", "bot")]


async def test_bot_click_in_history_loses_to_a_later_redemption_under_first_touch(
    client: AsyncClient, app: Any
) -> None:
    world = await make_world(client, app, attribution_model="first_touch")
    bot_click = await click(client, world.admin, world.bob_code, user_agent=GOOGLEBOT)
    referral_id = await redemption(
        client, world.admin, world.alice_code, "carol", click_id=bot_click
    )
    await set_occurred_at(app, Click, bot_click, days_ago(3))
    await set_occurred_at(app, Referral, referral_id, days_ago(2))
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    assert bought["referrer_id"] == world.alice["id"]
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [
        ("click", "customer_history", "lost", "bot"),
        ("redemption", "customer_history", "won", "first_touch"),
    ]


async def test_code_of_another_program_never_wins(
    client: AsyncClient, app: Any, world: World
) -> None:
    other = await make_program(client, world.admin, name="Other")
    stranger = await make_referrer(client, world.admin, other["id"], "stranger")
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        code=stranger["default_code"]["code"],
    )
    assert bought["status"] == "unattributed"
    assert bought["attribution_reason"] == "no_eligible_touch"
    assert bought["referrer_id"] is None
    attribution = await explain(client, world.admin, bought["id"])
    [candidate] = attribution["candidates"]
    # answered exactly like a code that does not exist: nothing of the other program shows
    assert (candidate["kind"], candidate["outcome"], candidate["reason"]) == (
        "code",
        "lost",
        "unknown_code",
    )
    assert candidate["referrer_id"] is None


async def test_unknown_code_falls_back_to_history(client: AsyncClient, world: World) -> None:
    await redemption(client, world.admin, world.bob_code, "carol")
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code="NOSUCHCODE"
    )
    assert bought["attribution_reason"] == "last_touch"
    assert bought["referrer_id"] == world.bob["id"]
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [
        ("code", "explicit", "lost", "unknown_code"),
        ("redemption", "customer_history", "won", "last_touch"),
    ]


async def test_disabled_code_loses(client: AsyncClient, world: World) -> None:
    await patch_code(client, world.admin, world.alice_code, disabled=True)
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code=world.alice_code
    )
    assert bought["status"] == "unattributed"
    assert bought["rewards"] == []
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("code", "explicit", "lost", "code_disabled")]


async def test_expired_code_loses(client: AsyncClient, world: World) -> None:
    await patch_code(client, world.admin, world.alice_code, expires_at=days_ago(1).isoformat())
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code=world.alice_code
    )
    assert bought["status"] == "unattributed"
    attribution = await explain(client, world.admin, bought["id"])
    assert outcomes(attribution) == [("code", "explicit", "lost", "code_expired")]


async def test_code_is_judged_when_the_purchase_happened(client: AsyncClient, world: World) -> None:
    await patch_code(client, world.admin, world.alice_code, expires_at=days_ago(1).isoformat())
    # a late event from before the expiry still counts
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "carol",
        "40.00",
        code=world.alice_code,
        occurred_at=days_ago(2).isoformat(),
    )
    assert bought["attribution_reason"] == "explicit_code"
    assert bought["referrer_id"] == world.alice["id"]


async def test_disabled_code_loses_to_history(client: AsyncClient, world: World) -> None:
    await redemption(client, world.admin, world.bob_code, "carol")
    await patch_code(client, world.admin, world.alice_code, disabled=True)
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code=world.alice_code
    )
    assert bought["referrer_id"] == world.bob["id"]
    assert bought["attribution_reason"] == "last_touch"


# --- self-referral and organic ---------------------------------------------------------------


async def _assert_self_referral(client: AsyncClient, world: World, bought: dict[str, Any]) -> None:
    assert bought["status"] == "unattributed"
    assert bought["attribution_reason"] == "self_referral"
    assert bought["referrer_id"] is None
    assert bought["referral_id"] is None
    assert bought["rewards"] == []
    attribution = await explain(client, world.admin, bought["id"])
    assert attribution["reason"] == "self_referral"
    assert attribution["winner"] is None
    assert outcomes(attribution) == [("code", "explicit", "lost", "self_referral")]
    ledger = await client.get(
        "/v1/rewards", params={"program_id": world.program["id"]}, headers=auth(world.admin)
    )
    assert ledger.json()["data"] == []


async def test_self_referral_by_external_id(client: AsyncClient, app: Any, world: World) -> None:
    bought = await purchase(
        client, world.admin, world.program, "o1", "alice", "40.00", code=world.alice_code
    )
    await _assert_self_referral(client, world, bought)
    # and no referral was made for alice
    assert await db_all(app, select(Referral).where(Referral.customer_id == "alice")) == []


async def test_self_referral_by_email(client: AsyncClient, world: World) -> None:
    bought = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "alice-second-account",
        "40.00",
        code=world.alice_code,
        email="ALICE@Example.com",
    )
    await _assert_self_referral(client, world, bought)


async def test_self_referral_through_an_explicit_click(client: AsyncClient, world: World) -> None:
    own_click = await click(client, world.admin, world.alice_code)
    bought = await purchase(
        client, world.admin, world.program, "o1", "alice", "40.00", click_id=own_click
    )
    assert bought["attribution_reason"] == "self_referral"
    assert bought["rewards"] == []


async def test_another_referrers_code_is_not_self_referral(
    client: AsyncClient, world: World
) -> None:
    # alice buying with bob's code: alice is a customer like any other here
    bought = await purchase(
        client, world.admin, world.program, "o1", "alice", "40.00", code=world.bob_code
    )
    assert bought["attribution_reason"] == "explicit_code"
    assert bought["referrer_id"] == world.bob["id"]


async def test_organic_purchase(client: AsyncClient, world: World) -> None:
    bought = await purchase(client, world.admin, world.program, "o1", "zed", "40.00")
    assert bought["status"] == "unattributed"
    assert bought["attribution_reason"] == "organic"
    assert bought["rewards"] == []
    assert (bought["referrer_id"], bought["referral_id"], bought["code"], bought["click_id"]) == (
        None,
        None,
        None,
        None,
    )
    attribution = await explain(client, world.admin, bought["id"])
    assert attribution == {
        "conversion_id": bought["id"],
        "status": "unattributed",
        "reason": "organic",
        "model": "last_touch",
        "window_days": 30,
        "winner": None,
        "candidates": [],
    }


# --- referrals made by a purchase ------------------------------------------------------------


async def test_first_attributed_purchase_makes_the_referral(
    client: AsyncClient, app: Any, world: World
) -> None:
    first = await purchase(
        client, world.admin, world.program, "o1", "dave", "40.00", code=world.alice_code
    )
    [referral] = await db_all(app, select(Referral).where(Referral.customer_id == "dave"))
    assert referral.source == "conversion"
    assert referral.referrer_id == UUID(world.alice["id"])
    assert str(referral.id) == first["referral_id"]

    # a later purchase without a code is attributed through that referral
    later = await purchase(client, world.admin, world.program, "o2", "dave", "60.00")
    assert later["status"] == "attributed", later
    assert later["referrer_id"] == world.alice["id"]
    assert later["referral_id"] == first["referral_id"]
    assert later["attribution_reason"] == "last_touch"
    assert [r["amount"] for r in later["rewards"]] == ["5.00"]
    attribution = await explain(client, world.admin, later["id"])
    assert attribution["winner"]["id"] == first["referral_id"]
    assert attribution["winner"]["code"] == world.alice_code
    assert outcomes(attribution) == [("code", "customer_history", "won", "last_touch")]
    # still one referral
    assert len(await db_all(app, select(Referral).where(Referral.customer_id == "dave"))) == 1


async def test_referral_made_by_a_purchase_counts_inside_the_window_only(
    client: AsyncClient, app: Any, world: World
) -> None:
    first = await purchase(
        client,
        world.admin,
        world.program,
        "o1",
        "dave",
        "40.00",
        code=world.alice_code,
        occurred_at=days_ago(31).isoformat(),
    )
    assert first["status"] == "attributed"
    # the repeat purchase: its one candidate, the referral, is outside the window
    later = await purchase(client, world.admin, world.program, "o2", "dave", "60.00")
    assert later["status"] == "unattributed"
    assert later["attribution_reason"] == "outside_window"


async def test_unattributed_purchase_makes_no_referral(
    client: AsyncClient, app: Any, world: World
) -> None:
    await purchase(client, world.admin, world.program, "o1", "erin", "40.00")
    assert await db_all(app, select(Referral).where(Referral.customer_id == "erin")) == []


async def test_purchase_with_another_code_keeps_the_first_referral(
    client: AsyncClient, app: Any, world: World
) -> None:
    referral_id = await redemption(client, world.admin, world.bob_code, "carol")
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code=world.alice_code
    )
    assert bought["referrer_id"] == world.alice["id"]
    [referral] = await db_all(app, select(Referral).where(Referral.customer_id == "carol"))
    assert str(referral.id) == referral_id
    assert referral.referrer_id == UUID(world.bob["id"])


# --- reading the explanation -----------------------------------------------------------------


async def test_attribution_of_unknown_conversion_is_404(client: AsyncClient, world: World) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    response = await client.get(f"/v1/conversions/{missing}/attribution", headers=auth(world.admin))
    assert_problem(response, 404, "conversion_not_found")


async def test_attribution_of_another_programs_conversion_is_404(
    client: AsyncClient, app: Any, world: World
) -> None:
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code=world.alice_code
    )
    other = await make_program(client, world.admin, name="Other")
    limited = await make_key(app, "secret", [UUID(other["id"])])
    response = await client.get(
        f"/v1/conversions/{bought['id']}/attribution", headers=auth(limited)
    )
    assert_problem(response, 404, "conversion_not_found")


async def test_publishable_key_cannot_read_attribution(
    client: AsyncClient, app: Any, world: World
) -> None:
    bought = await purchase(client, world.admin, world.program, "o1", "carol", "40.00")
    publishable = await make_key(app, "publishable")
    response = await client.get(
        f"/v1/conversions/{bought['id']}/attribution", headers=auth(publishable)
    )
    assert_problem(response, 403, "forbidden")
    posted = await post_conversion(
        client,
        publishable,
        program_id=world.program["id"],
        event_id="o2",
        customer_id="x",
        amount="1.00",
        currency="USD",
    )
    assert_problem(posted, 403, "forbidden")


async def test_vanity_code_wins_case_insensitively(client: AsyncClient, world: World) -> None:
    vanity = await make_code(client, world.admin, world.alice["id"], code="Alice-Spring")
    bought = await purchase(
        client, world.admin, world.program, "o1", "carol", "40.00", code="alice-spring"
    )
    assert bought["referrer_id"] == world.alice["id"]
    assert bought["code"] == vanity["code"]

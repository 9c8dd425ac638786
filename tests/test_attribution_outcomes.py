"""Self-referral, organic purchases, referrals made by purchases, and reading the explanation."""

from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import select

from app.tracking.models import Referral
from tests.attribution_factories import World, click, days_ago, explain, outcomes, redemption
from tests.factories import (
    assert_problem,
    auth,
    db_all,
    make_code,
    make_key,
    make_program,
)
from tests.money_factories import (
    post_conversion,
    purchase,
)

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

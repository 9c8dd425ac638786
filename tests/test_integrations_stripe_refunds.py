"""Stripe webhooks in, refunds: the cumulative amount, late and early refund events."""

from decimal import Decimal
from typing import Any

from httpx import AsyncClient
from sqlalchemy import select

from app.conversions.models import Conversion, Refund
from tests.factories import auth
from tests.money_factories import get_conversion
from tests.stripe_helpers import (
    charge,
    checkout_session,
    connected_program,
    event,
    post_stripe,
    stored,
)

# --- refunds ----------------------------------------------------------------------------------


async def test_refunds_follow_the_cumulative_amount(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await connected_program(client, app)
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    conversion_id = (await post_stripe(client, prog["id"], body)).json()["conversion_id"]

    partial = event("charge.refunded", charge(1000, "re_first"), "evt_r1")
    response = await post_stripe(client, prog["id"], partial)
    assert response.json()["outcome"] == "refunded"
    assert response.json()["conversion_id"] == conversion_id
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "10.00"
    assert (await post_stripe(client, prog["id"], partial)).json()["outcome"] == "duplicate"

    full = event("charge.refunded", charge(4999, "re_second"), "evt_r2")
    assert (await post_stripe(client, prog["id"], full)).json()["outcome"] == "refunded"
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "49.99"
    assert [r["status"] for r in after["rewards"]] == ["reversed"]
    async with app.state.sessionmaker() as session:
        refunds = list(await session.scalars(select(Refund).order_by(Refund.created_at)))
    assert [(r.refund_id, r.amount) for r in refunds] == [
        ("re_first", Decimal("10.00")),
        ("re_second", Decimal("39.99")),
    ]


async def test_an_older_refund_event_arriving_late_changes_nothing(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await connected_program(client, app)
    body = event("checkout.session.completed", checkout_session())
    conversion_id = (await post_stripe(client, prog["id"], body)).json()["conversion_id"]
    newer = event("charge.refunded", charge(3000, refund_id=None), "evt_r2")
    older = event("charge.refunded", charge(1000, refund_id=None), "evt_r1")
    assert (await post_stripe(client, prog["id"], newer)).json()["outcome"] == "refunded"
    assert (await post_stripe(client, prog["id"], older)).json()["outcome"] == "ignored"
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "30.00"


async def test_a_refund_before_its_purchase_is_parked_then_applied(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    early = await post_stripe(
        client, prog["id"], event("charge.refunded", charge(1500), "evt_early")
    )
    assert early.status_code == 200
    assert early.json()["outcome"] == "parked" and early.json()["conversion_id"] is None
    assert await stored(app, Conversion) == 0

    purchase = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
        "evt_buy",
    )
    conversion_id = (await post_stripe(client, prog["id"], purchase)).json()["conversion_id"]
    after = await get_conversion(client, admin, conversion_id)
    assert after["refunded_amount"] == "15.00"
    events = (
        await client.get(
            f"/v1/programs/{prog['id']}/integrations/stripe/events", headers=auth(admin)
        )
    ).json()["data"]
    assert [(e["external_id"], e["outcome"], e["conversion_id"]) for e in events] == [
        ("evt_early", "refunded", conversion_id),
        ("evt_buy", "recorded", conversion_id),
    ]
    # the parked refund is applied once, even when Stripe delivers it again
    assert (
        await post_stripe(client, prog["id"], event("charge.refunded", charge(1500), "evt_early"))
    ).json()["outcome"] == "duplicate"
    assert (await get_conversion(client, admin, conversion_id))["refunded_amount"] == "15.00"

"""Post-purchase prompts: a program with auto_enrol_buyers makes every buyer a referrer, and the
purchase's answer hands them their share (texts, links, QR codes that decode to the link)."""

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from httpx import AsyncClient
from sqlalchemy import event, func, select

from app.core.config import Settings
from app.qr.service import PLACEMENTS, placement_link
from app.referrers.models import Code, Referrer
from app.referrers.schemas import QrCodes
from tests.factories import assert_problem, auth, db_all, make_key, make_program, make_referrer
from tests.money_factories import post_conversion, purchase
from tests.stripe_helpers import checkout_session, post_stripe
from tests.stripe_helpers import connected_program as stripe_program
from tests.stripe_helpers import event as stripe_event
from tests.test_integrations_shopify import CUSTOMER_ID, order, post_shopify
from tests.test_integrations_shopify import connected_program as shopify_program
from tests.test_qr import decode_png, decode_svg

OFFER = "15% off your first order"


async def enrolling(client: AsyncClient, app: Any, **program: Any) -> tuple[str, dict[str, Any]]:
    admin = await make_key(app)
    prog = await make_program(client, admin, auto_enrol_buyers=True, referee_offer=OFFER, **program)
    return admin, prog


async def buyers(app: Any, program_id: str) -> list[Referrer]:
    rows = await db_all(app, select(Referrer).where(Referrer.program_id == program_id))
    return sorted(rows, key=lambda r: r.created_at)


async def codes_of(app: Any, referrer_id: Any) -> list[Code]:
    return list(await db_all(app, select(Code).where(Code.referrer_id == referrer_id)))


SKIPPED = (
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1",
    "SAVEPOINT",
    "RELEASE",
    "UPDATE API_KEYS SET LAST_USED_AT",
)


@contextmanager
def statements(app: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if not text.upper().startswith(SKIPPED):
            seen.append(text)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- the setting ------------------------------------------------------------------------------


async def test_the_setting_is_off_by_default_and_set_on_create_and_patch(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin)
    assert prog["auto_enrol_buyers"] is False
    patched = await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": True}, headers=auth(admin)
    )
    assert patched.status_code == 200 and patched.json()["auto_enrol_buyers"] is True
    shown = await client.get(f"/v1/programs/{prog['id']}", headers=auth(admin))
    assert shown.json()["auto_enrol_buyers"] is True
    refused = await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": None}, headers=auth(admin)
    )
    assert_problem(refused, 422, "invalid_request")
    not_a_bool = await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": "maybe"}, headers=auth(admin)
    )
    assert_problem(not_a_bool, 422, "validation_error")
    shown = await client.get(f"/v1/programs/{prog['id']}", headers=auth(admin))
    assert shown.json()["auto_enrol_buyers"] is True  # bad input changed nothing
    on = await make_program(client, admin, auto_enrol_buyers=True)
    assert on["auto_enrol_buyers"] is True


async def test_off_a_purchase_enrols_nobody_and_costs_no_statement(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    off = await make_program(client, admin)
    on = await make_program(client, admin, auto_enrol_buyers=True)
    await purchase(client, admin, on, "warm-up", "carol", "10.00")  # carol is a referrer now

    with statements(app) as seen_off:
        bought = await purchase(client, admin, off, "o1", "carol", "10.00")
    assert bought.get("share") is None
    assert await buyers(app, off["id"]) == []
    # Every enrolment statement looks the buyer up by external id or inserts a referrer;
    # attribution's own read selects referrers by id, which is not enrolment.
    lookup = re.compile(r"referrers\.external_id (IN|=)|INSERT INTO referrers")
    enrolment = [s for s in seen_off if lookup.search(s)]
    assert not enrolment, seen_off

    with statements(app) as seen_on:
        again = await purchase(client, admin, on, "o2", "carol", "10.00")
    assert again["share"] is not None
    # A buyer who is a referrer already costs one statement: the look-up of their code.
    assert len(seen_on) == len(seen_off) + 1, (seen_off, seen_on)


# --- enrolment and the share ------------------------------------------------------------------


async def test_a_purchase_enrols_the_buyer_and_answers_their_share(
    client: AsyncClient, app: Any, settings: Settings
) -> None:
    admin, prog = await enrolling(client, app)
    body = {
        "program_id": prog["id"],
        "event_id": "order-1",
        "customer_id": "cust_42",
        "email": "dana@example.com",
        "amount": "30.00",
        "currency": prog["currency"],
    }
    response = await post_conversion(client, admin, **body)
    assert response.status_code == 201, response.text
    share = response.json()["share"]
    [referrer] = await buyers(app, prog["id"])
    assert (referrer.external_id, referrer.email) == ("cust_42", "dana@example.com")
    [code] = await codes_of(app, referrer.id)
    assert code.is_default and share["code"] == code.code
    link = f"{settings.public_base_url}/r/{code.code}"
    assert share["link"] == link and share["offer"] == OFFER
    assert share["whatsapp"]["link"] == f"{link}?utm_source=whatsapp&utm_medium=share"
    assert OFFER in share["email"]["body"] and link in share["email"]["body"]

    # the referrer is the API's like any other: listed, with the same code
    listed = await client.get(f"/v1/programs/{prog['id']}/referrers", headers=auth(admin))
    [shown] = listed.json()["data"]
    assert shown["external_id"] == "cust_42" and shown["default_code"]["code"] == code.code

    # a retry of the same body: 200, the same share, nothing new
    replay = await post_conversion(client, admin, **body)
    assert replay.status_code == 200 and replay.json()["share"] == share
    # a second purchase by the same buyer: their share again, no second referrer or code
    second = await purchase(client, admin, prog, "order-2", "cust_42", "12.00")
    assert second["share"] == share
    [again] = await buyers(app, prog["id"])
    assert again.id == referrer.id and len(await codes_of(app, referrer.id)) == 1
    # the share is the purchase's answer only: reads and lists do not carry it
    read = await client.get(f"/v1/conversions/{second['id']}", headers=auth(admin))
    assert read.json()["share"] is None


async def test_a_referrer_who_buys_keeps_their_code_and_gets_its_share(
    client: AsyncClient, app: Any
) -> None:
    admin, prog = await enrolling(client, app)
    alice = await make_referrer(client, admin, prog["id"], "alice", email="alice@example.com")
    bought = await purchase(client, admin, prog, "o1", "alice", "10.00")
    assert bought["share"]["code"] == alice["default_code"]["code"]
    assert [r.external_id for r in await buyers(app, prog["id"])] == ["alice"]
    # a referred buyer is attributed as before, and enrolled as well
    referred = await purchase(
        client, admin, prog, "o2", "bob", "20.00", code=alice["default_code"]["code"]
    )
    assert referred["status"] == "attributed" and referred["referrer_id"] == alice["id"]
    assert referred["share"]["code"] != alice["default_code"]["code"]
    assert [r.external_id for r in await buyers(app, prog["id"])] == ["alice", "bob"]


async def test_the_share_qr_codes_decode_to_the_link_of_each_placement(
    client: AsyncClient, app: Any, settings: Settings
) -> None:
    admin, prog = await enrolling(client, app)
    share = (await purchase(client, admin, prog, "o1", "erin", "10.00"))["share"]
    qr = share["qr"]
    assert set(qr) == {"plain", *PLACEMENTS} == set(QrCodes.model_fields)
    base = settings.public_base_url
    for name, urls in qr.items():
        placement = None if name == "plain" else name
        expected = placement_link(settings, share["code"], placement)
        assert (
            expected == share["link"] if placement is None else expected.startswith(share["link"])
        )
        for kind, decode in (("svg", decode_svg), ("png", decode_png)):
            url = urls[kind]
            assert url.startswith(f"{base}/v1/codes/{share['code']}/qr.{kind}")
            assert parse_qs(urlsplit(url).query).get("placement") == (
                [placement] if placement else None
            )
            image = await client.get(url.removeprefix(base))
            assert image.status_code == 200, image.text
            assert decode(image.content) == [expected], (name, kind)


# --- who is never enrolled --------------------------------------------------------------------


async def test_an_erased_buyer_is_never_enrolled_again(client: AsyncClient, app: Any) -> None:
    admin, prog = await enrolling(client, app)
    bought = await purchase(client, admin, prog, "o1", "frank", "10.00", email="f@example.com")
    assert bought["share"] is not None
    erased = await client.delete("/v1/customers/frank", headers=auth(admin))
    assert erased.status_code == 200, erased.text
    [stand_in] = await buyers(app, prog["id"])
    assert stand_in.external_id.startswith("erased:")

    back = await purchase(client, admin, prog, "o2", "frank", "10.00", email="f@example.com")
    assert back["share"] is None
    assert [r.external_id for r in await buyers(app, prog["id"])] == [stand_in.external_id]
    # a replay of the erased purchase answers no share either
    replay = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="o1",
        customer_id="frank",
        email="f@example.com",
        amount="10.00",
        currency=prog["currency"],
    )
    assert replay.status_code == 200 and replay.json()["share"] is None


async def test_a_buyer_erased_before_the_setting_was_on_is_not_enrolled(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin)
    await purchase(client, admin, prog, "o1", "gina", "10.00")
    assert (await client.delete("/v1/customers/gina", headers=auth(admin))).status_code == 200
    await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": True}, headers=auth(admin)
    )
    back = await purchase(client, admin, prog, "o2", "gina", "10.00")
    assert back["share"] is None and await buyers(app, prog["id"]) == []
    # someone else is enrolled as usual
    assert (await purchase(client, admin, prog, "o3", "hank", "10.00"))["share"] is not None


# --- concurrency (Postgres) -------------------------------------------------------------------


@pytest.mark.postgres
async def test_concurrent_first_purchases_by_one_buyer_make_one_referrer(
    client: AsyncClient, app: Any
) -> None:
    admin, prog = await enrolling(client, app)
    responses = await asyncio.gather(
        *(
            post_conversion(
                client,
                admin,
                program_id=prog["id"],
                event_id=f"race-{i}",
                customer_id="ivy",
                amount="10.00",
                currency=prog["currency"],
            )
            for i in range(10)
        )
    )
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    [referrer] = await buyers(app, prog["id"])
    [code] = await codes_of(app, referrer.id)
    assert {r.json()["share"]["code"] for r in responses} == {code.code}
    count = await db_all(app, select(func.count()).select_from(Code))
    assert count == [1]


# --- purchases from Stripe and Shopify ----------------------------------------------------------


async def test_a_shopify_order_enrols_its_buyer(client: AsyncClient, app: Any) -> None:
    admin, prog, _alice = await shopify_program(client, app)
    await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": True}, headers=auth(admin)
    )
    response = await post_shopify(client, prog["id"], "orders/create", order())
    assert response.status_code == 200 and response.json()["outcome"] == "recorded"
    again = await post_shopify(client, prog["id"], "orders/paid", order(), webhook_id="w-2")
    assert again.json()["outcome"] == "duplicate"
    enrolled = [r for r in await buyers(app, prog["id"]) if r.external_id == str(CUSTOMER_ID)]
    assert len(enrolled) == 1 and len(await codes_of(app, enrolled[0].id)) == 1


async def test_a_stripe_checkout_enrols_its_buyer(client: AsyncClient, app: Any) -> None:
    admin, prog, _alice = await stripe_program(client, app)
    await client.patch(
        f"/v1/programs/{prog['id']}", json={"auto_enrol_buyers": True}, headers=auth(admin)
    )
    session = checkout_session()
    response = await post_stripe(
        client, prog["id"], stripe_event("checkout.session.completed", session)
    )
    assert response.status_code == 200 and response.json()["outcome"] == "recorded"
    conversion = await client.get(
        f"/v1/conversions/{response.json()['conversion_id']}", headers=auth(admin)
    )
    customer_id = conversion.json()["customer_id"]
    enrolled = [r for r in await buyers(app, prog["id"]) if r.external_id == customer_id]
    assert len(enrolled) == 1 and len(await codes_of(app, enrolled[0].id)) == 1

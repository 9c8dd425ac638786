"""JSON that Python's parser takes (or chokes on) is a 4xx problem, never a 500, and stores nothing:
NaN, Infinity, 1e999, integers past Python's int-from-string limit, nesting thousands of levels
deep, NUL in text. For every request body (app.core.schemas.InputModel, app.http.errors) and for
the platforms' signed webhook bodies (app.integrations.router, app.core.json_input)."""

import json
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from app.conversions.models import Conversion
from app.integrations.models import IntegrationEvent
from app.referrers.models import Referrer
from tests import hostile_json
from tests.factories import assert_problem, auth
from tests.money_factories import setup_program
from tests.stripe_helpers import SECRET as STRIPE_SECRET
from tests.stripe_helpers import checkout_session, event, stripe_header
from tests.test_integrations_shopify import SECRET as SHOPIFY_SECRET
from tests.test_integrations_shopify import order, shopify_hmac

FRAGMENTS = sorted(hostile_json.FRAGMENTS)


async def count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def raw(body: dict[str, Any], path: tuple[Any, ...], name: str) -> bytes:
    return hostile_json.inject(body, path, hostile_json.FRAGMENTS[name])


async def post_raw(client: AsyncClient, key: str, path: str, body: bytes) -> Response:
    headers = auth(key) | {"Content-Type": "application/json"}
    return await client.post(path, content=body, headers=headers)


# --- request bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRAGMENTS)
async def test_conversion_metadata_that_cannot_be_stored_is_422(
    client: AsyncClient, app: Any, name: str
) -> None:
    admin, prog, _ = await setup_program(client, app)
    body = {
        "program_id": prog["id"],
        "event_id": "o1",
        "customer_id": "bob",
        "amount": "10.00",
        "currency": "USD",
        "metadata": {"note": "x"},
    }
    response = await post_raw(
        client, admin, "/v1/conversions", raw(body, ("metadata", "note"), name)
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith("request: ")
    assert await count(app, Conversion) == 0
    # The same body with a plain value is taken: only the fragment was wrong.
    response = await post_raw(client, admin, "/v1/conversions", json.dumps(body).encode())
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("nan", "numbers must be finite"),
        ("overflowing_float", "numbers must be finite"),
        ("long_integer", "more than 4300 digits"),
        ("deep_lists", "nested more than 64 levels deep"),
        ("deep_objects", "nested more than 64 levels deep"),
        ("nul_key", "NUL"),
    ],
)
async def test_the_message_says_what_is_wrong(
    client: AsyncClient, app: Any, name: str, says: str
) -> None:
    admin, prog, _ = await setup_program(client, app)
    body = {"external_id": "carol", "metadata": {"a": 1}}
    response = await post_raw(
        client, admin, f"/v1/programs/{prog['id']}/referrers", raw(body, ("metadata", "a"), name)
    )
    assert says in assert_problem(response, 422, "validation_error")["detail"]
    assert await count(app, Referrer) == 1  # alice, from setup_program


@pytest.mark.parametrize("name", ["nan", "long_integer", "deep_lists", "deep_objects"])
async def test_any_field_of_any_body_is_checked(client: AsyncClient, app: Any, name: str) -> None:
    admin, prog, alice = await setup_program(client, app)
    bodies = [
        ("/v1/clicks", {"code": alice["default_code"]["code"], "visitor_id": "v"}, ("visitor_id",)),
        (
            f"/v1/programs/{prog['id']}/reward-rules",
            {"recipient": "referrer", "kind": "fixed", "amount": "1.00"},
            ("amount",),
        ),
        (
            "/v1/programs",
            {"name": "p", "landing_url": "https://x.example", "currency": "USD"},
            ("name",),
        ),
        ("/v1/redemptions", {"code": "ABC", "customer_id": "c"}, ("customer_id",)),
    ]
    for path, body, where in bodies:
        response = await post_raw(client, admin, path, raw(body, where, name))
        assert_problem(response, 422, "validation_error")


async def test_nesting_up_to_the_limit_still_parses(client: AsyncClient, app: Any) -> None:
    # The body, metadata and 62 lists in it are 64 levels: not refused as too deep (metadata
    # then has its own limit of 3); one list more is.
    admin, prog, _ = await setup_program(client, app)
    path = f"/v1/programs/{prog['id']}/referrers"
    for lists, says in ((62, "at most 3 levels"), (63, "nested more than 64 levels deep")):
        deep = "[" * lists + "]" * lists
        body = f'{{"external_id": "dave", "metadata": {{"a": {deep}}}}}'.encode()
        response = await post_raw(client, admin, path, body)
        assert says in assert_problem(response, 422, "validation_error")["detail"]


# --- signed platform bodies -------------------------------------------------------------------


async def connect(client: AsyncClient, admin: str, program_id: str) -> None:
    for provider, secret in (("stripe", STRIPE_SECRET), ("shopify", SHOPIFY_SECRET)):
        response = await client.post(
            f"/v1/programs/{program_id}/integrations/{provider}/secrets",
            json={"secrets": [secret]},
            headers=auth(admin),
        )
        assert response.status_code == 201, response.text


def stripe_bodies() -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
    checkout = event("checkout.session.completed", checkout_session())
    return [
        (checkout, ("created",)),
        (checkout, ("data", "object", "amount_total")),
        (checkout, ("data", "object", "metadata")),
        (checkout, ("data", "object", "customer_details", "address", "city")),
    ]


@pytest.mark.parametrize("name", FRAGMENTS)
async def test_signed_stripe_bodies_that_cannot_be_taken_are_400(
    client: AsyncClient, app: Any, name: str
) -> None:
    admin, prog, _ = await setup_program(client, app)
    await connect(client, admin, prog["id"])
    for payload, where in stripe_bodies():
        body = raw(payload, where, name)
        response = await client.post(
            f"/v1/integrations/stripe/{prog['id']}/webhook",
            content=body,
            headers={
                "Stripe-Signature": stripe_header(body.decode(), STRIPE_SECRET),
                "Content-Type": "application/json",
            },
        )
        assert (
            "not JSON this service takes"
            in assert_problem(response, 400, "invalid_payload")["detail"]
        )
    assert await count(app, IntegrationEvent) == 0
    assert await count(app, Conversion) == 0


@pytest.mark.parametrize("name", FRAGMENTS)
async def test_signed_shopify_bodies_that_cannot_be_taken_are_400(
    client: AsyncClient, app: Any, name: str
) -> None:
    admin, prog, _ = await setup_program(client, app)
    await connect(client, admin, prog["id"])
    places = [("id",), ("total_price",), ("customer", "id"), ("line_items", 0, "quantity")]
    for n, where in enumerate(places):
        body = raw(order(), where, name)
        response = await client.post(
            f"/v1/integrations/shopify/{prog['id']}/webhook",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Hmac-Sha256": shopify_hmac(body, SHOPIFY_SECRET),
                "X-Shopify-Webhook-Id": f"hostile-{name}-{n}",
            },
        )
        assert_problem(response, 400, "invalid_payload")
    assert await count(app, IntegrationEvent) == 0
    assert await count(app, Conversion) == 0


@pytest.mark.parametrize("obj", [None, [], "cs_1", 5])
async def test_a_signed_stripe_event_whose_object_is_not_an_object_is_rejected(
    client: AsyncClient, app: Any, obj: Any
) -> None:
    # Found by the fuzz test: this was an AttributeError, a 500.
    admin, prog, _ = await setup_program(client, app)
    await connect(client, admin, prog["id"])
    body = json.dumps(event("checkout.session.completed", obj)).encode()
    response = await client.post(
        f"/v1/integrations/stripe/{prog['id']}/webhook",
        content=body,
        headers={
            "Stripe-Signature": stripe_header(body.decode(), STRIPE_SECRET),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "rejected"
    assert await count(app, Conversion) == 0

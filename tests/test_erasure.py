"""Erasure is complete: after `DELETE /v1/customers/{id}` the person shows nowhere.

Not in the API's answers (rewards, conversions, webhook deliveries, replayed Idempotency-Key
answers), and not in any column of any table: the last check reads every row of every table
of the schema, so a copy added later without erasure fails here.
"""

import hashlib
import hmac
import json
from typing import Any
from uuid import UUID

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import select, text

from app.core.config import Settings
from app.models import Base
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.outbox import EVENT_TYPES
from tests.factories import assert_problem, auth, make_key
from tests.money_factories import add_rule, list_all, rewards, setup_program
from tests.settings import settings_for_tests
from tests.test_integrations_shopify import SECRET as SHOPIFY_SECRET
from tests.test_integrations_shopify import order, post_shopify

PERSON = "115310627314723954"  # as Shopify names a customer
EMAIL = "Gone.Person@Example.com"
OTHER = "cust-stays"


def idempotent(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def everything_stored(app: Any, *, but: tuple[str, ...] = ()) -> str:
    """Every row of every table, as text (bytes decoded): what a database dump would show."""
    rows: list[str] = []
    async with app.state.sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in but:
                continue
            for row in (await session.execute(select(table))).all():
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    rows.append(json.dumps(value, default=str, ensure_ascii=False))
    return "\n".join(rows)


def echo_transport() -> httpx.MockTransport:
    """An endpoint that answers with the body it got (some do): its answer is kept too."""
    return httpx.MockTransport(lambda request: httpx.Response(200, content=request.content))


async def person_everywhere(client: AsyncClient, app: Any) -> dict[str, Any]:
    """A referred customer with a purchase, a referee reward, stored answers, webhooks sent and
    answered, and a Shopify order kept as rejected; the same for someone who stays."""
    admin, prog, alice = await setup_program(client, app)
    code = alice["default_code"]["code"]
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="10.00")
    await add_rule(client, admin, prog["id"], recipient="referee", kind="fixed", amount="5.00")
    endpoint = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": list(EVENT_TYPES)},
        headers=auth(admin),
    )
    assert endpoint.status_code == 201, endpoint.text
    replays: list[tuple[str, dict[str, Any], str]] = []
    for customer, email in ((PERSON, EMAIL), (OTHER, "stays@example.com")):
        redemption = {"code": code, "customer_id": customer, "email": email}
        key = f"redeem-{len(replays)}"
        response = await client.post(
            "/v1/redemptions", json=redemption, headers=auth(admin) | idempotent(key)
        )
        assert response.status_code == 201, response.text
        replays.append(("/v1/redemptions", redemption, key))
        # a second redemption is refused, and that answer is stored too
        key = f"again-{len(replays)}"
        refused = await client.post(
            "/v1/redemptions", json=redemption, headers=auth(admin) | idempotent(key)
        )
        assert_problem(refused, 409, "already_referred")
        replays.append(("/v1/redemptions", redemption, key))
        purchase = {
            "program_id": prog["id"],
            "event_id": f"ord-{len(replays)}",
            "customer_id": customer,
            "email": email,
            "amount": "80.00",
            "currency": "USD",
            "metadata": {"contact": email.upper(), "note": "ring twice"},
        }
        key = f"buy-{len(replays)}"
        bought = await client.post(
            "/v1/conversions", json=purchase, headers=auth(admin) | idempotent(key)
        )
        assert bought.status_code == 201, bought.text
        replays.append(("/v1/conversions", purchase, key))

    # a Shopify order in another currency is kept, as rejected, with the mapped purchase
    connected = await client.post(
        f"/v1/programs/{prog['id']}/integrations/shopify/secrets",
        json={"secrets": [SHOPIFY_SECRET]},
        headers=auth(admin),
    )
    assert connected.status_code == 201
    euros = order(
        currency="EUR",
        email=EMAIL,
        contact_email=EMAIL,
        customer={"id": int(PERSON), "email": EMAIL, "first_name": "Gone"},
    )
    kept = await post_shopify(client, prog["id"], "orders/paid", euros)
    assert kept.json()["outcome"] == "rejected", kept.text

    dispatcher = Dispatcher(
        app.state.sessionmaker, settings_for_tests(), transport=echo_transport()
    )
    try:
        while await dispatcher.run_once():
            pass
    finally:
        await dispatcher.aclose()
    return {
        "admin": admin,
        "program": prog,
        "alice": alice,
        "endpoint": endpoint.json(),
        "replays": replays,
    }


def mentions_person(value: Any) -> bool:
    written = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return PERSON in written or EMAIL.lower() in written.lower()


async def test_after_erasure_the_person_shows_nowhere(client: AsyncClient, app: Any) -> None:
    world = await person_everywhere(client, app)
    admin, prog = world["admin"], world["program"]
    deliveries_url = f"/v1/webhook-endpoints/{world['endpoint']['id']}/deliveries"
    before = await list_all(client, admin, deliveries_url)
    assert any(mentions_person(d["payload"]) for d in before)
    assert any(mentions_person(d["response_excerpt"]) for d in before if d["response_excerpt"])
    assert mentions_person(await everything_stored(app))

    response = await client.delete(f"/v1/customers/{PERSON}", headers=auth(admin))
    assert response.status_code == 200, response.text
    erased = response.json()
    stand_in = erased["replaced_by"]
    assert (erased["referrals"], erased["conversions"], erased["rewards"]) == (1, 1, 1)
    assert erased["webhook_events"] >= 4 and erased["integration_events"] == 1
    # the redemption, the refusal is without the id already; the purchase (with its rewards)
    assert erased["idempotency_answers"] == 2

    # the ledger: the referee's reward now names the stand-in
    ledger = await rewards(client, admin, program_id=prog["id"])
    assert sorted(r["recipient_id"] for r in ledger) == sorted(["alice", "alice", stand_in, OTHER])
    # webhook payloads, and what the endpoint answered to them
    after = await list_all(client, admin, deliveries_url)
    assert len(after) == len(before)
    for delivery in after:
        assert not mentions_person(delivery), delivery
    assert any(stand_in in json.dumps(d["payload"]) for d in after)
    # stored Idempotency-Key answers are replayed without the person
    for path, body, key in world["replays"]:
        replay = await client.post(path, json=body, headers=auth(admin) | idempotent(key))
        assert replay.headers.get("idempotent-replayed") == "true", (key, replay.text)
        if body["customer_id"] == PERSON:
            assert not mentions_person(replay.text), replay.text
        elif replay.status_code == 201:
            assert OTHER in replay.text
    # and no row of any table has the id or the email left, while the other customer stays
    stored = await everything_stored(app)
    assert PERSON not in stored
    assert EMAIL.lower() not in stored.lower()
    assert OTHER in stored and "stays@example.com" in stored and "ring twice" in stored


async def test_the_stand_in_is_a_keyed_hash(client: AsyncClient, app: Any, settings: Any) -> None:
    admin, _, alice = await setup_program(client, app)
    redeemed = await client.post(
        "/v1/redemptions",
        json={"code": alice["default_code"]["code"], "customer_id": "jane@example.com"},
        headers=auth(admin),
    )
    assert redeemed.status_code == 201
    erased = (await client.delete("/v1/customers/jane@example.com", headers=auth(admin))).json()
    keyed = hmac.new(settings.pseudonym_key.encode(), b"jane@example.com", hashlib.sha256)
    assert erased["replaced_by"] == "erased:" + keyed.hexdigest()[:32]
    # a dictionary of emails hashed without the key finds nothing
    unkeyed = hashlib.sha256(b"jane@example.com").hexdigest()[:32]
    assert erased["replaced_by"] != "erased:" + unkeyed


def test_production_refuses_the_default_pseudonym_key() -> None:
    production = {
        "environment": "production",
        "ip_hash_salt": "a-real-salt",
        "database_url": "postgresql+asyncpg://db.internal/referrals",
    }
    with pytest.raises(ValueError, match="REFERRAL_PSEUDONYM_KEY"):
        Settings(**production)  # type: ignore[arg-type]
    assert Settings(**production, pseudonym_key="a-real-key").pseudonym_key == "a-real-key"  # type: ignore[arg-type]


async def test_a_person_erased_again_after_coming_back(client: AsyncClient, app: Any) -> None:
    admin, _, alice = await setup_program(client, app)
    code = alice["default_code"]["code"]
    redemption = {"code": code, "customer_id": PERSON, "email": EMAIL}
    assert (await client.post("/v1/redemptions", json=redemption, headers=auth(admin))).is_success
    first = (await client.delete(f"/v1/customers/{PERSON}", headers=auth(admin))).json()
    # the same id comes back (a new account with a recycled id) and is erased again
    again = await client.post("/v1/redemptions", json=redemption, headers=auth(admin))
    assert again.status_code == 201, again.text
    response = await client.delete(f"/v1/customers/{PERSON}", headers=auth(admin))
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["referrals"] == 1 and second["replaced_by"] != first["replaced_by"]
    assert PERSON not in await everything_stored(app)


async def test_a_key_of_another_program_erases_nothing_of_this_one(
    client: AsyncClient, app: Any
) -> None:
    world = await person_everywhere(client, app)
    admin = world["admin"]
    other = (
        await client.post(
            "/v1/programs",
            json={"name": "Other", "landing_url": "https://o.example.com/", "currency": "USD"},
            headers=auth(admin),
        )
    ).json()
    limited = await make_key(app, "secret", [UUID(other["id"])])
    # (the key's last use is recorded: api_keys changes)
    stored_before = await everything_stored(app, but=("api_keys",))
    response = await client.delete(f"/v1/customers/{PERSON}", headers=auth(limited))
    assert response.status_code == 200
    counts = {k: v for k, v in response.json().items() if isinstance(v, int)}
    assert set(counts.values()) == {0}, counts
    assert await everything_stored(app, but=("api_keys",)) == stored_before


async def test_an_erased_referrer_leaves_no_copy(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="10.00")
    endpoint = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": list(EVENT_TYPES)},
        headers=auth(admin),
    )
    assert endpoint.status_code == 201
    body = {"external_id": PERSON, "email": EMAIL, "name": "Gone Person", "metadata": {"t": 1}}
    made = await client.post(
        f"/v1/programs/{prog['id']}/referrers",
        json=body,
        headers=auth(admin) | idempotent("referrer-1"),
    )
    assert made.status_code == 201
    code = made.json()["default_code"]["code"]
    bought = await client.post(
        "/v1/conversions",
        json={
            "program_id": prog["id"],
            "event_id": "o-1",
            "customer_id": OTHER,
            "amount": "30.00",
            "currency": "USD",
            "code": code,
        },
        headers=auth(admin),
    )
    assert [r["recipient_id"] for r in bought.json()["rewards"]] == [PERSON]

    erased = (await client.delete(f"/v1/customers/{PERSON}", headers=auth(admin))).json()
    assert (erased["referrers"], erased["rewards"], erased["idempotency_answers"]) == (1, 1, 1)
    replay = await client.post(
        f"/v1/programs/{prog['id']}/referrers",
        json=body,
        headers=auth(admin) | idempotent("referrer-1"),
    )
    replayed = replay.json()
    assert replayed["external_id"] == erased["replaced_by"]
    assert (replayed["email"], replayed["name"], replayed["metadata"]) == (None, None, {})
    stored = await everything_stored(app)
    assert PERSON not in stored and EMAIL.lower() not in stored.lower()
    assert "Gone Person" not in stored
    # the referrer's numbers stay whole
    referrer = await client.get(f"/v1/referrers/{made.json()['id']}", headers=auth(admin))
    assert referrer.json()["external_id"] == erased["replaced_by"]
    async with app.state.sessionmaker() as session:
        total = await session.scalar(text("SELECT count(*) FROM rewards"))
    assert total == 1

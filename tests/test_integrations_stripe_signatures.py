"""Stripe webhooks in, signatures: wrong secrets, stale timestamps and changed bytes refused;
signing secrets rotate, are never shown again and need a secret key for the program."""

import json
import time
from typing import Any
from uuid import UUID

from httpx import AsyncClient
from stripe import WebhookSignature

from app.conversions.models import Conversion
from app.integrations.models import IntegrationEvent
from tests.factories import assert_problem, auth, make_key, make_program
from tests.money_factories import setup_program
from tests.stripe_helpers import (
    OLD_SECRET,
    SECRET,
    checkout_session,
    connect,
    connected_program,
    event,
    post_stripe,
    stored,
)

# --- signatures -------------------------------------------------------------------------------


async def test_a_wrong_secret_a_stale_timestamp_or_a_changed_byte_is_refused(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, alice = await connected_program(client, app)
    body = event(
        "checkout.session.completed",
        checkout_session(client_reference_id=alice["default_code"]["code"]),
    )
    now = int(time.time())
    attempts = [
        await post_stripe(client, prog["id"], body, secret="whsec_someone_elses_secret_value"),
        await post_stripe(client, prog["id"], body, timestamp=now - 301),
        await post_stripe(client, prog["id"], body, timestamp=now + 301),
        await post_stripe(client, prog["id"], body, tamper=lambda p: p.replace("4999", "4998", 1)),
        await post_stripe(client, prog["id"], body, tamper=lambda p: p + " "),
        await client.post(f"/v1/integrations/stripe/{prog['id']}/webhook", json=body),
        await client.post(
            f"/v1/integrations/stripe/{prog['id']}/webhook",
            json=body,
            headers={"Stripe-Signature": "t=abc,v1=00"},
        ),
    ]
    other = await make_program(client, admin, name="Not connected")
    attempts.append(await post_stripe(client, other["id"], body))
    attempts.append(await post_stripe(client, "00000000-0000-4000-8000-000000000000", body))
    for response in attempts:
        assert_problem(response, 400, "invalid_signature")
    assert await stored(app, Conversion) == 0
    assert await stored(app, IntegrationEvent) == 0
    # within the tolerance, it is accepted
    ok = await post_stripe(client, prog["id"], body, timestamp=now - 200)
    assert ok.status_code == 200 and ok.json()["outcome"] == "recorded"


async def test_a_signed_body_that_is_not_an_event_is_a_400(client: AsyncClient, app: Any) -> None:
    _, prog, _ = await connected_program(client, app)
    for payload in ("not json", "[1, 2]", json.dumps({"object": "event"})):
        assert_problem(await post_stripe(client, prog["id"], payload), 400, "invalid_payload")


async def test_secrets_rotate_and_are_never_shown_again(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    path = f"/v1/programs/{prog['id']}/integrations/stripe/secrets"
    rows = await connect(client, admin, prog["id"], OLD_SECRET, SECRET)
    assert [row["prefix"] for row in rows] == ["whsec_test", "whsec_test"]
    assert OLD_SECRET not in json.dumps(rows) and SECRET not in json.dumps(rows)
    assert len(await connect(client, admin, prog["id"], SECRET)) == 2  # adding again: harmless

    first = event("checkout.session.completed", checkout_session(id="cs_1"), "evt_1")
    second = event(
        "checkout.session.completed", checkout_session(id="cs_2", customer="cus_2"), "evt_2"
    )
    assert (await post_stripe(client, prog["id"], first, secret=OLD_SECRET)).json()[
        "outcome"
    ] == "recorded"
    assert (await post_stripe(client, prog["id"], second, secret=SECRET)).json()[
        "outcome"
    ] == "recorded"
    # during a rotation Stripe sends one v1 signature per active secret
    payload = json.dumps(event("checkout.session.completed", checkout_session(id="cs_3"), "evt_3"))
    now = int(time.time())
    both = ",".join(
        [f"t={now}"]
        + [
            "v1=" + WebhookSignature._compute_signature(f"{now}.{payload}", s)
            for s in ("whsec_unknown_to_us_000000000", SECRET)
        ]
    )
    response = await client.post(
        f"/v1/integrations/stripe/{prog['id']}/webhook",
        content=payload,
        headers={"Stripe-Signature": both},
    )
    assert response.json()["outcome"] == "recorded"

    listed = (await client.get(path, headers=auth(admin))).json()
    assert len(listed) == 2
    old_id = listed[0]["id"]
    assert (await client.delete(f"{path}/{old_id}", headers=auth(admin))).status_code == 204
    assert_problem(await client.delete(f"{path}/{old_id}", headers=auth(admin)), 404, "not_found")
    late = event("checkout.session.completed", checkout_session(id="cs_4"), "evt_4")
    assert_problem(
        await post_stripe(client, prog["id"], late, secret=OLD_SECRET), 400, "invalid_signature"
    )


async def test_managing_secrets_needs_a_secret_key_for_the_program(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    path = f"/v1/programs/{prog['id']}/integrations/stripe/secrets"
    body = {"secrets": [SECRET]}
    assert_problem(await client.post(path, json=body), 401, "unauthorized")
    publishable = await make_key(app, "publishable")
    assert_problem(await client.post(path, json=body, headers=auth(publishable)), 403, "forbidden")
    elsewhere = await make_key(app, "secret", [UUID(other["id"])])
    assert_problem(
        await client.post(path, json=body, headers=auth(elsewhere)), 404, "program_not_found"
    )
    assert_problem(await client.get(path, headers=auth(elsewhere)), 404, "program_not_found")
    assert_problem(
        await client.post(
            path, json={"secrets": ["not-a-stripe-secret-1234"]}, headers=auth(admin)
        ),
        422,
        "invalid_request",
    )
    assert_problem(
        await client.post(path, json={"secrets": ["short"]}, headers=auth(admin)),
        422,
        "validation_error",
    )
    bad_provider = f"/v1/programs/{prog['id']}/integrations/paypal/secrets"
    assert_problem(
        await client.post(bad_provider, json=body, headers=auth(admin)), 422, "validation_error"
    )

"""Outbound webhook endpoints: registration with a secret shown once, input checks, key scoping."""

import base64
from typing import Any
from uuid import UUID

from httpx import AsyncClient

from tests.factories import assert_problem, auth, make_key, make_program
from tests.money_factories import setup_program
from tests.webhook_helpers import (
    make_endpoint,
)

# --- endpoints ------------------------------------------------------------------------------


async def test_endpoint_is_registered_with_a_secret_shown_once(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    created = await make_endpoint(
        client,
        admin,
        "https://hooks.example.net/referrals",
        ["reward.created", "reward.created"],
        program_id=prog["id"],
        description="payouts",
    )
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["event_types"] == ["reward.created"]
    assert created["program_id"] == prog["id"] and created["enabled"] is True

    path = f"/v1/webhook-endpoints/{created['id']}"
    fetched = (await client.get(path, headers=auth(admin))).json()
    assert "secret" not in fetched
    listed = (await client.get("/v1/webhook-endpoints", headers=auth(admin))).json()["data"]
    assert [row["id"] for row in listed] == [created["id"]] and "secret" not in listed[0]

    patched = await client.patch(
        path, json={"event_types": ["reward.paid"], "enabled": False}, headers=auth(admin)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["reward.paid"] and patched.json()["enabled"] is False
    assert_problem(
        await client.patch(path, json={"url": None}, headers=auth(admin)), 422, "invalid_request"
    )

    assert (await client.delete(path, headers=auth(admin))).status_code == 204
    assert_problem(await client.get(path, headers=auth(admin)), 404, "webhook_endpoint_not_found")


async def test_endpoint_input_is_checked(client: AsyncClient, app: Any) -> None:
    admin, _, _ = await setup_program(client, app)
    for body in (
        {"url": "https://hooks.example.net/x", "event_types": ["reward.exploded"]},
        {"url": "https://hooks.example.net/x", "event_types": []},
        {"url": "ftp://hooks.example.net/x", "event_types": ["reward.paid"]},
        {"url": "not a url", "event_types": ["reward.paid"]},
    ):
        response = await client.post("/v1/webhook-endpoints", json=body, headers=auth(admin))
        assert_problem(response, 422, "validation_error")
    publishable = await make_key(app, "publishable")
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.net/x", "event_types": ["reward.paid"]},
        headers=auth(publishable),
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await client.get("/v1/webhook-endpoints"), 401, "unauthorized")


async def test_keys_limited_to_a_program_see_only_its_endpoints(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, _ = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    limited = await make_key(app, "secret", [UUID(prog["id"])])
    url = "https://hooks.example.net/x"
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["reward.paid"]},
        headers=auth(limited),
    )
    assert_problem(response, 403, "forbidden")  # every program's events: not for this key
    response = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["reward.paid"], "program_id": other["id"]},
        headers=auth(limited),
    )
    assert_problem(response, 404, "program_not_found")
    own = await make_endpoint(client, limited, url, ["reward.paid"], program_id=prog["id"])
    theirs = await make_endpoint(client, admin, url, ["reward.paid"], program_id=other["id"])
    everything = await make_endpoint(client, admin, url, ["reward.paid"])
    listed = (await client.get("/v1/webhook-endpoints", headers=auth(limited))).json()["data"]
    assert [row["id"] for row in listed] == [own["id"]]
    for hidden in (theirs, everything):
        path = f"/v1/webhook-endpoints/{hidden['id']}"
        assert_problem(
            await client.get(path, headers=auth(limited)), 404, "webhook_endpoint_not_found"
        )
        assert_problem(
            await client.delete(path, headers=auth(limited)), 404, "webhook_endpoint_not_found"
        )
        assert_problem(
            await client.get(path + "/deliveries", headers=auth(limited)),
            404,
            "webhook_endpoint_not_found",
        )

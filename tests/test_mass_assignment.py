"""Mass assignment (OWASP API3): no request body takes a field the caller may not set.

Every listed field of a server-owned value (ids, states, counters, secrets) is refused with 422
`validation_error` naming the field, on the world of the authorization matrix
(tests/authorization_world.py); and every request body in the schema refuses unknown fields.
"""

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest

from app.http.openapi import build_schema
from tests.authorization_world import World, open_world
from tests.factories import assert_problem, auth


@pytest.fixture(scope="module")
async def world(app: Any) -> AsyncIterator[World]:
    async with open_world(app) as w:
        yield w


@pytest.mark.parametrize(
    ("method", "url", "valid", "field", "value"),
    [
        ("POST", "/v1/programs", "program", "id", "{uuid}"),
        ("POST", "/v1/programs", "program", "status", "archived"),
        ("POST", "/v1/programs", "program", "created_at", "2020-01-01T00:00:00Z"),
        ("PATCH", "/v1/programs/{program_id}", None, "id", "{uuid}"),
        ("PATCH", "/v1/programs/{program_id}", None, "updated_at", "2020-01-01T00:00:00Z"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "program_id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "default_code", "MINE"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "redemption_count", 0),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "program_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "is_default", True),
        ("PATCH", "/v1/codes/{code}", None, "redemption_count", 0),
        ("PATCH", "/v1/codes/{code}", None, "code", "OTHERCODE"),
        ("PATCH", "/v1/codes/{code}", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/clicks", "click", "is_bot", False),
        ("POST", "/v1/clicks", "click", "program_id", "{uuid}"),
        ("POST", "/v1/clicks", "click", "click_id", "{uuid}"),
        ("POST", "/v1/redemptions", "redemption", "referrer_id", "{uuid}"),
        ("POST", "/v1/redemptions", "redemption", "program_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "referrer_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "status", "attributed"),
        ("POST", "/v1/conversions", "conversion", "referral_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "refunded_amount", "0"),
        ("POST", "/v1/conversions/{conversion_id}/refunds", None, "conversion_id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/reward-rules", "rule", "version", 7),
        ("POST", "/v1/programs/{program_id}/reward-rules", "rule", "program_id", "{uuid}"),
        ("PATCH", "/v1/reward-rules/{rule_id}", None, "version", 7),
        ("PATCH", "/v1/reward-rules/{rule_id}", None, "program_id", "{uuid}"),
        ("POST", "/v1/rewards/{reward_id}/reverse", "reverse", "status", "paid"),
        ("POST", "/v1/rewards/{reward_id}/mark-paid", None, "amount", "1000.00"),
        ("POST", "/v1/api-keys", "key", "key", "rk_adm_chosen"),
        ("POST", "/v1/api-keys", "key", "prefix", "rk_adm_"),
        ("POST", "/v1/api-keys", "key", "revoked_at", None),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "token", "rk_ref_chosen"),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "expires_at", "2030-01-01T00:00Z"),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/portal-links", None, "url", "https://evil.example"),
    ],
)
async def test_fields_a_caller_may_not_set_are_refused(
    world: World, method: str, url: str, valid: str | None, field: str, value: Any
) -> None:
    bodies: dict[str | None, dict[str, Any]] = {
        None: {},
        "program": {"name": "P", "landing_url": "https://p.example.com/", "currency": "EUR"},
        "referrer": {"external_id": f"mass-{uuid4().hex}"},
        "click": {"code": world.referrer["default_code"]["code"]},
        "redemption": {"code": world.referrer["default_code"]["code"], "customer_id": "mass"},
        "conversion": {
            "program_id": world.pid,
            "event_id": f"mass-{uuid4().hex}",
            "customer_id": "mass",
            "amount": "10.00",
            "currency": "EUR",
        },
        "rule": {"recipient": "referee", "kind": "points", "points": 1},
        "reverse": {"reason": "test"},
        "key": {"kind": "publishable"},
    }
    reward = await world.new_reward() if "{reward_id}" in url else None
    filled = url.format(
        program_id=world.pid,
        referrer_id=world.referrer["id"],
        code=world.referrer["default_code"]["code"],
        conversion_id=world.conversion["id"],
        rule_id=world.rule["id"],
        reward_id=reward,
    )
    if value == "{uuid}":
        value = str(uuid4())
    body = bodies[valid] | {field: value}
    response = await world.client.request(
        method, filled, json=body, headers=auth(world.keys["admin"])
    )
    problem = assert_problem(response, 422, "validation_error")
    assert any(error["loc"][-1] == field for error in problem["errors"]), problem
    assert any(error["type"] == "extra_forbidden" for error in problem["errors"]), problem


def test_every_request_body_refuses_unknown_fields() -> None:
    """A new endpoint whose body would silently take fields it does not know fails here."""
    schema = build_schema()
    components = schema.get("components", {}).get("schemas", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[-1]]
        return node

    open_bodies = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body = resolve(content["application/json"].get("schema", {}))
            options = [resolve(option) for option in body.get("anyOf", [body])]
            for option in options:
                if (
                    option.get("type") == "object"
                    and option.get("additionalProperties") is not False
                ):
                    open_bodies.append(f"{method.upper()} {path}")
    assert not open_bodies, f"request bodies that take unknown fields: {sorted(set(open_bodies))}"

"""Every limit on input answers 413/422 with a clear message and a stable code, and stores nothing.

Limits covered: request body size, string lengths (body, path, query, Idempotency-Key), times
(2000 to 2200, with a zone), metadata keys/size/depth, page sizes, reward rules per program,
list lengths. Metrics date spans are tested
with the metrics (tests/test_metrics_ranges_and_scope.py).
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from app.conversions.models import Conversion
from app.core.schemas import METADATA_MAX_BYTES, METADATA_MAX_DEPTH, METADATA_MAX_KEYS
from app.referrers.models import Referrer
from app.rewards.rules import MAX_RULES_PER_PROGRAM
from tests.factories import assert_problem, auth, make_key, make_program, make_referrer


@pytest.fixture
async def shop(client: AsyncClient, app: Any) -> dict[str, Any]:
    admin = await make_key(app)
    program = await make_program(client, admin)
    return {"admin": admin, "program": program}


async def _count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def _conversion(program: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "program_id": program["id"],
        "event_id": "ev_limits",
        "customer_id": "cust_limits",
        "amount": "10.00",
        "currency": program["currency"],
    } | extra


# --- request body size -------------------------------------------------------------------


async def test_body_over_the_limit_is_413_by_declared_length(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    limit = app.state.settings.max_body_bytes
    body = _conversion(shop["program"], metadata={"note": "x" * limit})
    response = await client.post("/v1/conversions", json=body, headers=auth(shop["admin"]))
    problem = assert_problem(response, 413, "payload_too_large")
    assert str(limit) in problem["detail"]
    assert await _count(app, Conversion) == 0


async def test_streamed_body_over_the_limit_is_413(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    """No Content-Length (chunked): the body is counted as it is read."""
    limit = app.state.settings.max_body_bytes
    chunk = b" " * 4096

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(_conversion(shop["program"]))[:-1].encode() + b","
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"x": 1}'

    response = await client.post(
        "/v1/conversions",
        content=chunks(),
        headers=auth(shop["admin"]) | {"Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert await _count(app, Conversion) == 0


async def test_body_just_under_the_limit_is_read(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    """The limit is on bytes, not a rough guess: a large valid body within it goes through."""
    limit = app.state.settings.max_body_bytes
    body = json.dumps(_conversion(shop["program"])).encode()
    padded = body[:-1] + b" " * (limit - len(body)) + b"}"
    assert len(padded) == limit
    response = await client.post(
        "/v1/conversions",
        content=padded,
        headers=auth(shop["admin"]) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text


async def test_malformed_body_is_a_problem_answer(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    headers = auth(shop["admin"]) | {"Content-Type": "application/json"}
    syntax = await client.post("/v1/conversions", content=b'{"program_id": ', headers=headers)
    assert_problem(syntax, 422, "validation_error")
    undecodable = await client.post("/v1/conversions", content=b"\xff\xfe\x00", headers=headers)
    assert_problem(undecodable, 400, "bad_request")


# --- string lengths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "limit"),
    [
        ("/v1/programs", "name", 200),
        ("/v1/programs", "referee_offer", 500),
        ("/v1/programs/{program_id}/referrers", "external_id", 200),
        ("/v1/programs/{program_id}/referrers", "name", 200),
        ("/v1/programs/{program_id}/referrers", "email", 320),
        ("/v1/conversions", "event_id", 200),
        ("/v1/conversions", "customer_id", 200),
        ("/v1/conversions", "code", 64),
        ("/v1/clicks", "code", 64),
        ("/v1/clicks", "utm_source", 200),
        ("/v1/clicks", "visitor_id", 200),
        ("/v1/redemptions", "customer_id", 200),
    ],
)
async def test_string_over_its_length_is_422(
    client: AsyncClient, shop: dict[str, Any], path: str, field: str, limit: int
) -> None:
    program = shop["program"]
    valid: dict[str, dict[str, Any]] = {
        "/v1/programs": {
            "name": "p",
            "landing_url": "https://shop.example.com/",
            "currency": "USD",
        },
        "/v1/programs/{program_id}/referrers": {"external_id": "r1"},
        "/v1/conversions": _conversion(program),
        "/v1/clicks": {"code": "ABC"},
        "/v1/redemptions": {"code": "ABC", "customer_id": "c1"},
    }
    value = "a" * (limit + 1)
    if field == "email":
        value = "a" * (limit - len("@example.com") + 1) + "@example.com"
    body = valid[path] | {field: value}
    response = await client.post(
        path.format(program_id=program["id"]), json=body, headers=auth(shop["admin"])
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith(f"{field}: "), problem
    assert str(limit) in problem["detail"], problem


async def test_code_in_the_path_over_its_length_is_422(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    long_code = "A" * 65
    lookup = await client.get(f"/v1/codes/{long_code}", headers=auth(shop["admin"]))
    assert_problem(lookup, 422, "validation_error")
    patch = await client.patch(
        f"/v1/codes/{long_code}", json={"disabled": True}, headers=auth(shop["admin"])
    )
    assert_problem(patch, 422, "validation_error")


async def test_query_string_over_its_length_is_422(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    response = await client.get(
        "/v1/conversions", params={"customer_id": "c" * 201}, headers=auth(shop["admin"])
    )
    problem = assert_problem(response, 422, "validation_error")
    assert "customer_id" in problem["detail"]


async def test_idempotency_key_over_its_length_is_422(
    client: AsyncClient, app: Any, shop: dict[str, Any]
) -> None:
    """Cut short instead, two long keys with one prefix would share a stored answer."""
    headers = auth(shop["admin"]) | {"Idempotency-Key": "k" * 256}
    response = await client.post(
        "/v1/conversions", json=_conversion(shop["program"]), headers=headers
    )
    problem = assert_problem(response, 422, "invalid_idempotency_key")
    assert "255" in problem["detail"]
    assert await _count(app, Conversion) == 0
    ok = await client.post(
        "/v1/conversions",
        json=_conversion(shop["program"]),
        headers=auth(shop["admin"]) | {"Idempotency-Key": "k" * 255},
    )
    assert ok.status_code == 201, ok.text


# --- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00Z",  # a window before it fell off the calendar (was a 500)
        "0001-01-01T00:00:00-14:00",
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59+14:00",
        "2020-01-01T00:00:00",  # no time zone
    ],
)
async def test_conversion_time_out_of_range_is_422(
    client: AsyncClient, app: Any, shop: dict[str, Any], occurred_at: str
) -> None:
    body = _conversion(shop["program"], occurred_at=occurred_at)
    response = await client.post("/v1/conversions", json=body, headers=auth(shop["admin"]))
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith("occurred_at: "), problem
    assert await _count(app, Conversion) == 0


@pytest.mark.parametrize("path", ["/v1/conversions", "/v1/rewards"])
@pytest.mark.parametrize(
    "value",
    [
        "2020-01-01T00:00:00",  # naive: was a 500 when bound to the query
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: was a 500
        "9999-12-31T23:59:59-14:00",
    ],
)
async def test_list_time_filter_out_of_range_is_422(
    client: AsyncClient, shop: dict[str, Any], path: str, value: str
) -> None:
    for name in ("from", "to"):
        response = await client.get(path, params={name: value}, headers=auth(shop["admin"]))
        problem = assert_problem(response, 422, "validation_error")
        assert name in problem["detail"], problem


# --- metadata ------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        pytest.param(
            {f"k{i}": i for i in range(METADATA_MAX_KEYS + 1)},
            f"at most {METADATA_MAX_KEYS} keys",
            id="keys",
        ),
        pytest.param(
            {"note": "x" * METADATA_MAX_BYTES}, f"at most {METADATA_MAX_BYTES}", id="size"
        ),
        # Counted in bytes: 4100 two-byte characters are fewer than 8000 characters.
        pytest.param({"note": "é" * 4100}, f"at most {METADATA_MAX_BYTES}", id="size-utf8"),
        pytest.param(
            _nested(METADATA_MAX_DEPTH + 1), f"at most {METADATA_MAX_DEPTH} levels", id="depth"
        ),
        pytest.param({"list": [[[["deep"]]]]}, f"at most {METADATA_MAX_DEPTH} levels", id="lists"),
    ],
)
async def test_metadata_over_a_limit_is_422(
    client: AsyncClient, app: Any, shop: dict[str, Any], metadata: Any, message: str
) -> None:
    response = await client.post(
        f"/v1/programs/{shop['program']['id']}/referrers",
        json={"external_id": "r1", "metadata": metadata},
        headers=auth(shop["admin"]),
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith("metadata: "), problem
    assert message in problem["detail"], problem
    assert await _count(app, Referrer) == 0


async def test_metadata_at_the_limits_is_kept(client: AsyncClient, shop: dict[str, Any]) -> None:
    metadata = {f"k{i}": i for i in range(METADATA_MAX_KEYS - 1)} | {"deep": _nested(2)}
    referrer = await make_referrer(
        client, shop["admin"], shop["program"]["id"], "r1", metadata=metadata
    )
    assert referrer["metadata"] == metadata


@pytest.mark.parametrize("depth", [100, 5000])
async def test_absurdly_nested_metadata_is_a_client_error(
    client: AsyncClient, shop: dict[str, Any], depth: int
) -> None:
    """Nesting deeper than the JSON parser or the validator recurse is a 4xx, never a 500."""
    body = '{"external_id": "r1", "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    response = await client.post(
        f"/v1/programs/{shop['program']['id']}/referrers",
        content=body.encode(),
        headers=auth(shop["admin"]) | {"Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


# --- page sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/programs",
        "/v1/programs/{program_id}/referrers",
        "/v1/conversions",
        "/v1/rewards",
    ],
)
async def test_page_size_over_the_maximum_is_422(
    client: AsyncClient, app: Any, shop: dict[str, Any], path: str
) -> None:
    maximum = app.state.settings.max_page_limit
    url = path.format(program_id=shop["program"]["id"])
    too_big = await client.get(url, params={"limit": maximum + 1}, headers=auth(shop["admin"]))
    problem = assert_problem(too_big, 422, "invalid_limit")
    assert f"at most {maximum}" in problem["detail"]
    zero = await client.get(url, params={"limit": 0}, headers=auth(shop["admin"]))
    assert_problem(zero, 422, "validation_error")
    at_max = await client.get(url, params={"limit": maximum}, headers=auth(shop["admin"]))
    assert at_max.status_code == 200, at_max.text


async def test_malformed_cursor_is_422(client: AsyncClient, shop: dict[str, Any]) -> None:
    response = await client.get(
        "/v1/programs", params={"cursor": "not-a-cursor"}, headers=auth(shop["admin"])
    )
    assert_problem(response, 422, "invalid_cursor")
    too_long = await client.get(
        "/v1/programs", params={"cursor": "c" * 201}, headers=auth(shop["admin"])
    )
    assert_problem(too_long, 422, "validation_error")


# --- reward rules per program --------------------------------------------------------------


async def test_rules_past_the_maximum_per_program_are_422(
    client: AsyncClient, shop: dict[str, Any]
) -> None:
    url = f"/v1/programs/{shop['program']['id']}/reward-rules"
    rule = {"recipient": "referrer", "kind": "points", "points": 10}
    for _ in range(MAX_RULES_PER_PROGRAM):
        response = await client.post(url, json=rule, headers=auth(shop["admin"]))
        assert response.status_code == 201, response.text
    over = await client.post(url, json=rule, headers=auth(shop["admin"]))
    problem = assert_problem(over, 422, "too_many_rules")
    assert str(MAX_RULES_PER_PROGRAM) in problem["detail"]
    listed = await client.get(url, headers=auth(shop["admin"]))
    assert len(listed.json()) == MAX_RULES_PER_PROGRAM
    # Another program has its own allowance.
    other = await make_program(client, shop["admin"], name="Other")
    response = await client.post(
        f"/v1/programs/{other['id']}/reward-rules", json=rule, headers=auth(shop["admin"])
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tiers", [{"from_referral": n, "points": n} for n in range(2, 23)]),
        ("allowed_origins", [f"https://s{n}.example.com" for n in range(21)]),
    ],
)
async def test_lists_over_their_length_are_422(
    client: AsyncClient, shop: dict[str, Any], field: str, value: list[Any]
) -> None:
    if field == "tiers":
        url = f"/v1/programs/{shop['program']['id']}/reward-rules"
        body: dict[str, Any] = {"recipient": "referrer", "kind": "points", "points": 1}
    else:
        url = f"/v1/programs/{shop['program']['id']}"
        body = {}
    method = client.post if field == "tiers" else client.patch
    response = await method(url, json=body | {field: value}, headers=auth(shop["admin"]))
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith(f"{field}: "), problem


async def test_platform_webhooks_may_send_larger_bodies(client: AsyncClient, app: Any) -> None:
    """Whole Shopify orders exceed the API's 64 KiB limit; their webhook path allows 1 MiB."""
    admin = await make_key(app)
    program = await make_program(client, admin)
    big = b'{"note": "' + b"x" * 200_000 + b'"}'
    headers = {"content-type": "application/json", "X-Shopify-Hmac-Sha256": "AAAA"}
    shopify = await client.post(
        f"/v1/integrations/shopify/{program['id']}/webhook", content=big, headers=headers
    )
    assert shopify.status_code == 400  # read whole, then refused for its signature
    assert shopify.json()["code"] == "invalid_signature"
    too_big = await client.post(
        f"/v1/integrations/shopify/{program['id']}/webhook",
        content=b"x" * (1024 * 1024 + 1),
        headers=headers,
    )
    assert too_big.status_code == 413
    api = await client.post("/v1/conversions", content=big, headers=auth(admin) | headers)
    assert api.status_code == 413

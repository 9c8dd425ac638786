"""The mistakes a newcomer makes first, answered so that they can fix them from the answer alone.

A trailing slash is served as the path without it, by every endpoint and every middleware; a
body without `Content-Type: application/json` is a 415 that says what to send; a JSON syntax
error says where; an unknown field leads the validation answer and names the fields taken.
"""

import json
import re
from typing import Any
from uuid import uuid4

import pytest
from httpx import AsyncClient, Response

from app.http.openapi import build_schema
from tests.factories import BROWSER_UA, assert_problem, auth, make_key, make_program
from tests.money_factories import setup_program

PROGRAM = {"name": "Spring", "landing_url": "https://shop.example.com/", "currency": "USD"}
HTTP_METHODS = ("get", "post", "patch", "put", "delete")
# Pages and endpoints outside the OpenAPI schema, answered with no key.
UNDOCUMENTED = ("/dashboard", "/dashboard/assets/dashboard.js", "/r/ZZZZZZZZZZZZ", "/docs")


def _operations() -> list[tuple[str, str]]:
    """Every documented (method, path), path parameters filled with ids that exist nowhere."""
    found = []
    for path, operations in build_schema()["paths"].items():
        filled = re.sub(r"\{code\}", "ZZZZZZZZZZZZ", path)
        filled = re.sub(r"\{[a-z_]+\}", str(uuid4()), filled)
        found += [(method.upper(), filled) for method in operations if method in HTTP_METHODS]
    return found


def _comparable(response: Response) -> tuple[int, Any]:
    """The status, and the body when it is a problem (other bodies carry fresh ids and times)."""
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        return response.status_code, response.json()
    return response.status_code, None


# --- a trailing slash ---------------------------------------------------------------------------


async def test_every_endpoint_answers_the_same_with_a_trailing_slash(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    calls = _operations() + [("GET", path) for path in UNDOCUMENTED]
    assert len(calls) > 40
    for method, path in calls:
        for headers in ({}, auth(admin)):
            body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
            plain = await client.request(method, path, json=body, headers=headers)
            slashed = await client.request(method, path + "/", json=body, headers=headers)
            assert slashed.status_code not in (307, 308), (method, path)
            assert _comparable(slashed) == _comparable(plain), (method, path, slashed.text)


async def test_a_trailing_slash_reads_and_writes_the_same_resource(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    created = await client.post("/v1/programs/", json=PROGRAM, headers=auth(admin))
    assert created.status_code == 201, created.text
    listed = await client.get("/v1/programs/", headers=auth(admin))
    assert listed.json() == (await client.get("/v1/programs", headers=auth(admin))).json()
    assert [p["id"] for p in listed.json()["data"]] == [created.json()["id"]]
    one = await client.get(f"/v1/programs/{created.json()['id']}//", headers=auth(admin))
    assert one.json() == created.json()


async def test_middleware_sees_the_path_without_the_slash(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    # Idempotency: the retry with the other spelling is the same request, answered again.
    key = {"Idempotency-Key": "first-program"}
    first = await client.post("/v1/programs/", json=PROGRAM, headers=auth(admin) | key)
    again = await client.post("/v1/programs", json=PROGRAM, headers=auth(admin) | key)
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    # CORS: the storefront endpoints are public with either spelling.
    program = await make_program(client, admin, allowed_origins=["https://shop.example.com"])
    preflight = {
        "Origin": "https://shop.example.com",
        "Access-Control-Request-Method": "POST",
    }
    for path in ("/v1/clicks", "/v1/clicks/"):
        answer = await client.options(path, headers=preflight)
        assert answer.status_code == 204, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert program["allowed_origins"] == ["https://shop.example.com"]


async def test_an_unknown_path_says_where_the_api_is(client: AsyncClient) -> None:
    problem = assert_problem(await client.get("/v1/progams/"), 404, "not_found")
    assert problem["detail"] == "No endpoint at /v1/progams; the API is listed at /docs."


# --- a body that is not JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "this request had none"),
        ({"Content-Type": "text/plain"}, "this request said 'text/plain'"),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},  # what `curl -d` sends
            "this request said 'application/x-www-form-urlencoded'",
        ),
    ],
)
async def test_a_body_without_the_json_content_type_is_415(
    client: AsyncClient, app: Any, headers: dict[str, str], said: str
) -> None:
    admin = await make_key(app)
    response = await client.post(
        "/v1/programs", content=json.dumps(PROGRAM).encode(), headers=auth(admin) | headers
    )
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert problem["detail"] == (
        f"Send the body as JSON, with the header Content-Type: application/json ({said})."
    )
    assert (await client.get("/v1/programs", headers=auth(admin))).json()["data"] == []


async def test_a_patch_without_the_json_content_type_is_415_and_changes_nothing(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    path = f"/v1/programs/{program['id']}"
    response = await client.patch(
        path, content=b'{"name": "Renamed"}', headers=auth(admin) | {"Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert (await client.get(path, headers=auth(admin))).json()["name"] == program["name"]


async def test_json_content_types_with_parameters_or_suffixes_are_json(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            "/v1/programs",
            content=json.dumps(PROGRAM).encode(),
            headers=auth(admin) | {"Content-Type": content_type},
        )
        assert response.status_code == 201, (content_type, response.text)


async def test_a_missing_body_says_what_to_send(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    response = await client.post(
        "/v1/programs", headers=auth(admin) | {"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"] == (
        "The request needs a body. "
        "Send the body as JSON, with the header Content-Type: application/json."
    )


async def test_a_body_that_is_not_utf8_is_400(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    response = await client.post(
        "/v1/programs",
        content=b'{"name": "Caf\xe9"}',
        headers=auth(admin) | {"Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400, "bad_request")
    assert problem["detail"] == "The body could not be read: send UTF-8 encoded JSON."


# --- invalid JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ('{\n  "name": "Spring",\n  "currency": USD\n}', "expecting value", 3, 15),
        ('{"name": "Spring",}', "expecting property name enclosed in double quotes", 1, 19),
        ('{"name": "Spring"\n "currency": "USD"}', "expecting ',' delimiter", 2, 2),
        ('{"name": "Spring"} x', "extra data", 1, 20),
    ],
)
async def test_invalid_json_says_where(
    client: AsyncClient, app: Any, text: str, message: str, line: int, column: int
) -> None:
    admin = await make_key(app)
    response = await client.post(
        "/v1/programs",
        content=text.encode(),
        headers=auth(admin) | {"Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "validation_error")
    where = f"{message} at line {line}, column {column}"
    assert problem["detail"] == f"The body is not valid JSON: {where}."
    assert problem["errors"] == [
        {"loc": ["body"], "msg": where, "type": "json_invalid", "line": line, "column": column}
    ]


# --- an unknown field ---------------------------------------------------------------------------


async def test_an_unknown_field_leads_and_names_the_fields_taken(
    client: AsyncClient, app: Any
) -> None:
    admin, program, _ = await setup_program(client, app)
    body = {
        "program_id": program["id"],
        "event_id": "ord_1",
        "customer_id": "bob",
        "price": "10.00",  # the field is `amount`
        "currency": "USD",
    }
    response = await client.post("/v1/conversions", json=body, headers=auth(admin))
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"] == (
        "unknown field `price`; the body takes program_id, event_id, customer_id, amount, "
        "currency, occurred_at, code, click_id, email, metadata (1 more problem in errors)"
    )
    # Every error is still listed, the unknown field first.
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [
        (["body", "price"], "extra_forbidden"),
        (["body", "amount"], "missing"),
    ]
    listed = await client.get("/v1/conversions", headers=auth(admin))
    assert listed.json()["data"] == []


async def test_an_unknown_nested_field_names_the_fields_of_its_object(
    client: AsyncClient, app: Any
) -> None:
    admin, program, _ = await setup_program(client, app)
    rule = {
        "recipient": "referrer",
        "kind": "fixed",
        "amount": "10.00",
        "tiers": [{"from_referral": 5, "amount": "15.00", "after": 3}],
    }
    response = await client.post(
        f"/v1/programs/{program['id']}/reward-rules", json=rule, headers=auth(admin)
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"] == (
        "unknown field `tiers.0.after`; the body takes from_referral, amount, percent, points"
    )


async def test_other_validation_errors_keep_their_field_first_form(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    response = await client.post(
        "/v1/programs", json=PROGRAM | {"currency": "XYZ"}, headers=auth(admin)
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"] == "currency: Value error, 'XYZ' is not an ISO 4217 currency code"
    too_many = await client.post("/v1/programs", json={"name": "x"}, headers=auth(admin))
    assert assert_problem(too_many, 422, "validation_error")["detail"] == (
        "landing_url: Field required (1 more problem in errors)"
    )


async def test_query_errors_are_phrased_alike(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    response = await client.get(
        "/v1/programs", params={"limit": "many"}, headers=auth(admin) | {"User-Agent": BROWSER_UA}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["detail"].startswith("query.limit: ")

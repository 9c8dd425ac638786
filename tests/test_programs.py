import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from httpx import AsyncClient

from tests.factories import assert_problem, auth, make_program

VALID = {
    "name": "Spring referrals",
    "landing_url": "https://shop.example.com/welcome",
    "currency": "EUR",
}


async def test_create_program_defaults_and_upper_cases_currency(
    client: AsyncClient, admin: str
) -> None:
    response = await client.post(
        "/v1/programs", json=VALID | {"currency": "eur"}, headers=auth(admin)
    )
    assert response.status_code == 201, response.text
    program = response.json()
    assert program["currency"] == "EUR"
    assert program["name"] == "Spring referrals"
    assert program["landing_url"] == "https://shop.example.com/welcome"
    assert program["status"] == "active"
    assert program["attribution_model"] == "last_touch"
    assert program["attribution_window_days"] == 30
    assert program["referee_offer"] is None
    assert program["allowed_origins"] == []
    created = datetime.fromisoformat(program["created_at"])
    offset = created.utcoffset()
    assert offset is not None and offset.total_seconds() == 0

    fetched = await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))
    assert fetched.status_code == 200
    assert fetched.json() == program


async def test_create_program_with_every_field(client: AsyncClient, admin: str) -> None:
    body = VALID | {
        "attribution_model": "first_touch",
        "attribution_window_days": 7,
        "referee_offer": "15% off",
        "allowed_origins": ["https://shop.example.com"],
    }
    response = await client.post("/v1/programs", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text
    program = response.json()
    assert program["attribution_model"] == "first_touch"
    assert program["attribution_window_days"] == 7
    assert program["referee_offer"] == "15% off"
    assert program["allowed_origins"] == ["https://shop.example.com"]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"currency": "XYZ"}, id="unknown-currency"),
        pytest.param({"currency": "US"}, id="short-currency"),
        pytest.param({"currency": "USDX"}, id="long-currency"),
        pytest.param({"landing_url": "not a url"}, id="not-a-url"),
        pytest.param({"landing_url": "ftp://shop.example.com/"}, id="non-http-url"),
        pytest.param({"landing_url": "javascript:alert(1)"}, id="javascript-url"),
        pytest.param({"attribution_window_days": 0}, id="window-zero"),
        pytest.param({"attribution_window_days": 366}, id="window-too-long"),
        pytest.param({"attribution_model": "linear"}, id="unknown-model"),
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"allowed_origins": ["https://shop.example.com/path"]}, id="origin-with-path"),
    ],
)
async def test_create_program_refuses_bad_input(
    client: AsyncClient, admin: str, changes: dict[str, Any]
) -> None:
    response = await client.post("/v1/programs", json=VALID | changes, headers=auth(admin))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"], body
    listed = await client.get("/v1/programs", headers=auth(admin))
    assert listed.json()["data"] == []


@pytest.mark.parametrize("field", ["name", "landing_url", "currency"])
async def test_create_program_requires_fields(client: AsyncClient, admin: str, field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    response = await client.post("/v1/programs", json=body, headers=auth(admin))
    problem = assert_problem(response, 422, "validation_error")
    assert any(error["loc"][-1] == field for error in problem["errors"])


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"status": "paused"}, id="status"),
        pytest.param({"id": "00000000-0000-0000-0000-000000000001"}, id="id"),
        pytest.param({"created_at": "2020-01-01T00:00:00Z"}, id="created_at"),
        pytest.param({"is_admin": True}, id="unknown"),
    ],
)
async def test_create_program_refuses_unknown_fields(
    client: AsyncClient, admin: str, extra: dict[str, Any]
) -> None:
    response = await client.post("/v1/programs", json=VALID | extra, headers=auth(admin))
    assert_problem(response, 422, "validation_error")
    listed = await client.get("/v1/programs", headers=auth(admin))
    assert listed.json()["data"] == []


async def test_create_program_refuses_a_body_that_is_not_json(
    client: AsyncClient, admin: str
) -> None:
    response = await client.post(
        "/v1/programs",
        content=b"name=x",
        headers=auth(admin) | {"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")


async def test_list_programs_walks_every_page_once(client: AsyncClient, admin: str) -> None:
    created = [(await make_program(client, admin, name=f"Program {i}"))["id"] for i in range(5)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/programs", params=params, headers=auth(admin))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2
        seen.extend(program["id"] for program in page["data"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "pagination does not end"

    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert seen == created  # oldest first


async def test_list_programs_exact_multiple_of_limit_ends_without_cursor(
    client: AsyncClient, admin: str
) -> None:
    for i in range(4):
        await make_program(client, admin, name=f"Program {i}")
    first = (await client.get("/v1/programs?limit=2", headers=auth(admin))).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    second = (
        await client.get(
            "/v1/programs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(admin)
        )
    ).json()
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None
    assert {p["id"] for p in first["data"]}.isdisjoint({p["id"] for p in second["data"]})


async def test_list_programs_default_limit(client: AsyncClient, admin: str) -> None:
    for i in range(3):
        await make_program(client, admin, name=f"Program {i}")
    page = (await client.get("/v1/programs", headers=auth(admin))).json()
    assert len(page["data"]) == 3
    assert page["next_cursor"] is None


async def test_cursor_time_in_another_offset_is_the_same_position(
    client: AsyncClient, admin: str
) -> None:
    for i in range(3):
        await make_program(client, admin, name=f"Program {i}")
    first = (await client.get("/v1/programs?limit=1", headers=auth(admin))).json()
    created_at, row_id = json.loads(
        base64.urlsafe_b64decode(first["next_cursor"] + "=" * (-len(first["next_cursor"]) % 4))
    )
    shifted = datetime.fromisoformat(created_at).astimezone(timezone(timedelta(hours=-5)))
    same = _cursor([shifted.isoformat(), row_id])
    expected = await client.get(
        "/v1/programs", params={"cursor": first["next_cursor"]}, headers=auth(admin)
    )
    response = await client.get("/v1/programs", params={"cursor": same}, headers=auth(admin))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == expected.json()["data"]
    assert len(response.json()["data"]) == 2


async def test_nul_character_is_refused_on_every_backend(client: AsyncClient, admin: str) -> None:
    response = await client.post(
        "/v1/programs", json=VALID | {"name": "Spring\u0000"}, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")
    assert (await client.get("/v1/programs", headers=auth(admin))).json()["data"] == []


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="not-base64"),
        pytest.param("bm90IGpzb24", id="not-json"),
        pytest.param(_cursor({"a": 1}), id="object"),
        pytest.param(_cursor(5), id="number"),
        pytest.param(_cursor(["2024-01-01T00:00:00", str(uuid4())]), id="naive-time"),
        pytest.param(_cursor(["yesterday", str(uuid4())]), id="bad-time"),
        pytest.param(_cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]), id="bad-uuid"),
        pytest.param(_cursor(["2024-01-01T00:00:00+00:00", 5]), id="uuid-as-number"),
        pytest.param(_cursor([5, str(uuid4())]), id="time-as-number"),
        pytest.param(_cursor(["2024-01-01T00:00:00+00:00", str(uuid4()), 1]), id="three-parts"),
        pytest.param(_cursor(["9999-12-31T23:59:59-05:00", str(uuid4())]), id="past-year-9999"),
        pytest.param(_cursor(["0001-01-01T00:00:00+05:00", str(uuid4())]), id="before-year-1"),
    ],
)
async def test_list_programs_refuses_bad_cursor(
    client: AsyncClient, admin: str, cursor: str
) -> None:
    response = await client.get("/v1/programs", params={"cursor": cursor}, headers=auth(admin))
    assert_problem(response, 422, "invalid_cursor")


async def test_list_programs_limit_bounds(client: AsyncClient, admin: str, settings: Any) -> None:
    too_big = await client.get(
        "/v1/programs", params={"limit": settings.max_page_limit + 1}, headers=auth(admin)
    )
    assert_problem(too_big, 422, "invalid_limit")
    at_max = await client.get(
        "/v1/programs", params={"limit": settings.max_page_limit}, headers=auth(admin)
    )
    assert at_max.status_code == 200
    for bad in ("0", "-1", "two"):
        response = await client.get("/v1/programs", params={"limit": bad}, headers=auth(admin))
        assert_problem(response, 422, "validation_error")


async def test_get_unknown_program_is_404(client: AsyncClient, admin: str) -> None:
    response = await client.get(f"/v1/programs/{uuid4()}", headers=auth(admin))
    assert_problem(response, 404, "program_not_found")
    patched = await client.patch(f"/v1/programs/{uuid4()}", json={"name": "x"}, headers=auth(admin))
    assert_problem(patched, 404, "program_not_found")


async def test_get_program_with_malformed_id_is_422(client: AsyncClient, admin: str) -> None:
    response = await client.get("/v1/programs/not-a-uuid", headers=auth(admin))
    assert_problem(response, 422, "validation_error")


async def test_patch_program_changes_only_given_fields(client: AsyncClient, admin: str) -> None:
    program = await make_program(client, admin, attribution_window_days=14)
    response = await client.patch(
        f"/v1/programs/{program['id']}",
        json={"name": "Summer referrals", "currency": "gbp"},
        headers=auth(admin),
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Summer referrals"
    assert updated["currency"] == "GBP"
    unchanged = {"name", "currency", "updated_at"}
    assert {k: v for k, v in updated.items() if k not in unchanged} == {
        k: v for k, v in program.items() if k not in unchanged
    }
    assert updated["updated_at"] >= program["updated_at"]

    fetched = (await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))).json()
    assert fetched == updated


async def test_patch_program_status_and_window(client: AsyncClient, admin: str) -> None:
    program = await make_program(client, admin)
    response = await client.patch(
        f"/v1/programs/{program['id']}",
        json={
            "status": "paused",
            "attribution_window_days": 60,
            "landing_url": "https://x.example/a?b=1",
        },
        headers=auth(admin),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "paused"
    assert response.json()["attribution_window_days"] == 60
    assert response.json()["landing_url"] == "https://x.example/a?b=1"
    fetched = (await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))).json()
    assert fetched["status"] == "paused"


async def test_patch_program_can_clear_referee_offer(client: AsyncClient, admin: str) -> None:
    program = await make_program(client, admin, referee_offer="10% off")
    response = await client.patch(
        f"/v1/programs/{program['id']}", json={"referee_offer": None}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text
    assert response.json()["referee_offer"] is None


@pytest.mark.parametrize(
    "field",
    ["name", "landing_url", "currency", "status", "attribution_model", "attribution_window_days"],
)
async def test_patch_program_refuses_null_on_required_field(
    client: AsyncClient, admin: str, field: str
) -> None:
    program = await make_program(client, admin)
    response = await client.patch(
        f"/v1/programs/{program['id']}",
        json={"referee_offer": "changed", field: None},
        headers=auth(admin),
    )
    body = assert_problem(response, 422, "invalid_request")
    assert field in body["detail"]
    fetched = (await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))).json()
    assert fetched == program  # nothing changed, not even the valid field


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"status": "deleted"}, id="unknown-status"),
        pytest.param({"currency": "ABC"}, id="unknown-currency"),
        pytest.param({"attribution_window_days": 400}, id="window"),
        pytest.param({"id": str(uuid4())}, id="id"),
        pytest.param({"created_at": "2020-01-01T00:00:00Z"}, id="created-at"),
    ],
)
async def test_patch_program_refuses_bad_input(
    client: AsyncClient, admin: str, changes: dict[str, Any]
) -> None:
    program = await make_program(client, admin)
    response = await client.patch(
        f"/v1/programs/{program['id']}", json=changes, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")
    fetched = (await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))).json()
    assert fetched == program


async def test_patch_program_with_empty_body_changes_nothing(
    client: AsyncClient, admin: str
) -> None:
    program = await make_program(client, admin)
    response = await client.patch(f"/v1/programs/{program['id']}", json={}, headers=auth(admin))
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        k: v for k, v in program.items() if k != "updated_at"
    }

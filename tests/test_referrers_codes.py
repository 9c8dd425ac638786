import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from httpx import AsyncClient

from app.referrers.codes import ALPHABET
from tests.factories import (
    assert_problem,
    auth,
    code_row,
    make_code,
    make_key,
    make_program,
    make_referrer,
    patch_code,
    redeem,
)

PROGRAM = {"name": "Friends of the shop", "referee_offer": "$10 off"}
REFERRER = {"external_id": "cust_1", "email": "ann@example.com"}

# Spelled out rather than imported, so that a change to the alphabet is a visible decision.
UNAMBIGUOUS = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LOOKUP_KEYS = {
    "code",
    "valid",
    "state",
    "program_name",
    "referee_offer",
    "attribution_model",
    "attribution_window_days",
}


def _in_past() -> str:
    return (datetime.now(UTC) - timedelta(minutes=5)).isoformat()


def _in_future() -> str:
    return (datetime.now(UTC) + timedelta(days=5)).isoformat()


async def test_alphabet_is_unambiguous() -> None:
    assert ALPHABET == UNAMBIGUOUS
    assert not set("01OIL") & set(ALPHABET)


async def test_upsert_creates_then_updates_the_same_referrer(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    url = f"/v1/programs/{program['id']}/referrers"
    first = await client.post(
        url,
        json={"external_id": "cust_42", "email": "Ann@Example.com", "name": "Ann"},
        headers=auth(admin),
    )
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["program_id"] == program["id"]
    assert created["external_id"] == "cust_42"
    assert created["email"] == "ann@example.com"
    assert created["name"] == "Ann"
    assert created["metadata"] == {}
    default = created["default_code"]
    assert default["is_default"] is True
    assert default["is_vanity"] is False
    assert default["state"] == "valid"
    assert default["referrer_id"] == created["id"]
    assert len(default["code"]) == 10
    assert set(default["code"]) <= set(UNAMBIGUOUS)
    assert default["link"].endswith(f"/r/{default['code']}")

    second = await client.post(
        url,
        json={
            "external_id": "cust_42",
            "email": "ann.new@example.com",
            "metadata": {"tier": "gold"},
        },
        headers=auth(admin),
    )
    assert second.status_code == 200, second.text
    updated = second.json()
    assert updated["id"] == created["id"]
    assert updated["default_code"]["code"] == default["code"]
    assert updated["email"] == "ann.new@example.com"
    assert updated["name"] == "Ann"  # not given: kept
    assert updated["metadata"] == {"tier": "gold"}
    assert updated["created_at"] == created["created_at"]

    fetched = await client.get(f"/v1/referrers/{created['id']}", headers=auth(admin))
    assert fetched.status_code == 200
    assert fetched.json() == updated

    codes = await client.get(f"/v1/referrers/{created['id']}/codes", headers=auth(admin))
    assert [c["code"] for c in codes.json()] == [default["code"]]


async def test_same_external_id_in_another_program_is_another_referrer(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    other = await make_program(client, admin, name="Other")
    a = await make_referrer(client, admin, program["id"], "same")
    b = await make_referrer(client, admin, other["id"], "same")
    assert a["id"] != b["id"]
    assert a["default_code"]["code"] != b["default_code"]["code"]


async def test_default_codes_are_random(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    codes = set()
    for i in range(10):
        referrer = await make_referrer(client, admin, program["id"], f"cust_{i}")
        code = referrer["default_code"]["code"]
        assert re.fullmatch(f"[{UNAMBIGUOUS}]{{10}}", code), code
        codes.add(code)
    assert len(codes) == 10


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-external-id"),
        pytest.param({"external_id": ""}, id="empty-external-id"),
        pytest.param({"external_id": "x" * 201}, id="long-external-id"),
        pytest.param({"external_id": "c", "email": "not-an-email"}, id="bad-email"),
        pytest.param({"external_id": "c", "id": str(uuid4())}, id="id"),
        pytest.param({"external_id": "c", "program_id": str(uuid4())}, id="program-id"),
        pytest.param({"external_id": "c", "default_code": "ABC"}, id="default-code"),
        pytest.param({"external_id": "c", "metadata": {"a": {"b": {"c": {"d": 1}}}}}, id="deep"),
        pytest.param({"external_id": "c", "metadata": {f"k{i}": i for i in range(51)}}, id="wide"),
    ],
)
async def test_upsert_refuses_bad_input(
    client: AsyncClient, admin: str, program: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await client.post(
        f"/v1/programs/{program['id']}/referrers", json=body, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")
    listed = await client.get(f"/v1/programs/{program['id']}/referrers", headers=auth(admin))
    assert listed.json()["data"] == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_upsert_refuses_non_finite_metadata(
    client: AsyncClient, admin: str, program: dict[str, Any], number: str
) -> None:
    # Python's JSON parser takes these; they are not JSON, and Postgres will not store them.
    response = await client.post(
        f"/v1/programs/{program['id']}/referrers",
        content=f'{{"external_id": "c", "metadata": {{"a": [{{"b": {number}}}]}}}}'.encode(),
        headers=auth(admin) | {"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    listed = await client.get(f"/v1/programs/{program['id']}/referrers", headers=auth(admin))
    assert listed.json()["data"] == []


async def test_expiry_in_another_offset_is_stored_as_the_same_instant(
    client: AsyncClient, admin: str, referrer: dict[str, Any]
) -> None:
    code = await make_code(client, admin, referrer["id"], expires_at="2100-01-01T03:00:00+03:00")
    assert datetime.fromisoformat(code["expires_at"]) == datetime(2100, 1, 1, tzinfo=UTC)
    assert datetime.fromisoformat(code["expires_at"]).utcoffset() == timedelta(0)


async def test_upsert_in_unknown_program_is_404(client: AsyncClient, admin: str) -> None:
    response = await client.post(
        f"/v1/programs/{uuid4()}/referrers", json={"external_id": "c"}, headers=auth(admin)
    )
    assert_problem(response, 404, "program_not_found")
    listed = await client.get(f"/v1/programs/{uuid4()}/referrers", headers=auth(admin))
    assert_problem(listed, 404, "program_not_found")


async def test_list_referrers_paginates(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    other = await make_program(client, admin, name="Other")
    await make_referrer(client, admin, other["id"], "elsewhere")
    made = [await make_referrer(client, admin, program["id"], f"cust_{i}") for i in range(5)]

    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(
            f"/v1/programs/{program['id']}/referrers", params=params, headers=auth(admin)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert [r["id"] for r in seen] == [r["id"] for r in made]
    assert seen == made  # each with its default code, as the upsert returned it


async def test_list_referrers_bad_cursor(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    response = await client.get(
        f"/v1/programs/{program['id']}/referrers", params={"cursor": "nope"}, headers=auth(admin)
    )
    assert_problem(response, 422, "invalid_cursor")


async def test_get_unknown_referrer_is_404(client: AsyncClient, admin: str) -> None:
    response = await client.get(f"/v1/referrers/{uuid4()}", headers=auth(admin))
    assert_problem(response, 404, "referrer_not_found")
    codes = await client.post(f"/v1/referrers/{uuid4()}/codes", json={}, headers=auth(admin))
    assert_problem(codes, 404, "referrer_not_found")
    listed = await client.get(f"/v1/referrers/{uuid4()}/codes", headers=auth(admin))
    assert_problem(listed, 404, "referrer_not_found")


async def test_create_random_code(
    client: AsyncClient, admin: str, program: dict[str, Any], referrer: dict[str, Any]
) -> None:
    code = await make_code(client, admin, referrer["id"])
    assert code["code"] != referrer["default_code"]["code"]
    assert re.fullmatch(f"[{UNAMBIGUOUS}]{{10}}", code["code"])
    assert code["is_default"] is False
    assert code["is_vanity"] is False
    assert code["program_id"] == program["id"]
    assert code["referrer_id"] == referrer["id"]
    assert code["redemption_count"] == 0
    assert code["state"] == "valid"

    fetched = await client.get(f"/v1/referrers/{referrer['id']}", headers=auth(admin))
    assert fetched.json()["default_code"]["code"] == referrer["default_code"]["code"]
    codes = await client.get(f"/v1/referrers/{referrer['id']}/codes", headers=auth(admin))
    assert [c["code"] for c in codes.json()] == [referrer["default_code"]["code"], code["code"]]


async def test_create_vanity_code_with_limits(
    client: AsyncClient, admin: str, referrer: dict[str, Any]
) -> None:
    expires = _in_future()
    code = await make_code(
        client, admin, referrer["id"], code="Ann-2024", expires_at=expires, max_redemptions=3
    )
    assert code["code"] == "Ann-2024"  # kept as written
    assert code["is_vanity"] is True
    assert code["max_redemptions"] == 3
    assert datetime.fromisoformat(code["expires_at"]) == datetime.fromisoformat(expires)
    assert code["link"].endswith("/r/Ann-2024")


@pytest.mark.parametrize(
    "vanity",
    [
        pytest.param("ab", id="too-short"),
        pytest.param("x" * 33, id="too-long"),
        pytest.param("ann smith", id="space"),
        pytest.param("ann/1", id="slash"),
        pytest.param("-ann", id="leading-dash"),
        pytest.param("ann%20", id="percent"),
        pytest.param("café", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
async def test_vanity_code_validation(
    client: AsyncClient, admin: str, referrer: dict[str, Any], vanity: str
) -> None:
    response = await client.post(
        f"/v1/referrers/{referrer['id']}/codes", json={"code": vanity}, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")
    codes = await client.get(f"/v1/referrers/{referrer['id']}/codes", headers=auth(admin))
    assert len(codes.json()) == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"max_redemptions": 0}, id="zero-uses"),
        pytest.param({"expires_at": "2030-01-01T00:00:00"}, id="naive-expiry"),
        pytest.param({"expires_at": "9999-12-31T23:30:00-05:00"}, id="expiry-past-year-9999"),
        pytest.param({"expires_at": "0001-01-01T00:00:00+05:00"}, id="expiry-before-year-1"),
        pytest.param({"is_default": True}, id="is-default"),
        pytest.param({"redemption_count": 5}, id="redemption-count"),
    ],
)
async def test_create_code_refuses_bad_input(
    client: AsyncClient, admin: str, referrer: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await client.post(
        f"/v1/referrers/{referrer['id']}/codes", json=body, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")


async def test_vanity_codes_are_unique_ignoring_case(
    client: AsyncClient, admin: str, program: dict[str, Any], referrer: dict[str, Any]
) -> None:
    await make_code(client, admin, referrer["id"], code="Summer")
    other_program = await make_program(client, admin, name="Other")
    other = await make_referrer(client, admin, other_program["id"], "cust_2")
    for taken in ("Summer", "SUMMER", "summer", referrer["default_code"]["code"].lower()):
        for owner in (referrer, other):  # unique across referrers and programs
            response = await client.post(
                f"/v1/referrers/{owner['id']}/codes", json={"code": taken}, headers=auth(admin)
            )
            assert_problem(response, 409, "code_taken")
    codes = await client.get(f"/v1/referrers/{other['id']}/codes", headers=auth(admin))
    assert len(codes.json()) == 1


async def test_lookup_code_shows_only_what_a_widget_may(
    client: AsyncClient, app: Any, program: dict[str, Any], referrer: dict[str, Any]
) -> None:
    publishable = await make_key(app, "publishable")
    code = referrer["default_code"]["code"]
    for spelled in (code, code.lower(), code.swapcase()[:5] + code[5:]):
        response = await client.get(f"/v1/codes/{spelled}", headers=auth(publishable))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == LOOKUP_KEYS
        assert body == {
            "code": code,
            "valid": True,
            "state": "valid",
            "program_name": "Friends of the shop",
            "referee_offer": "$10 off",
            "attribution_model": "last_touch",
            "attribution_window_days": 30,
        }


async def test_lookup_unknown_code_is_404(client: AsyncClient, admin: str) -> None:
    for unknown in ("NOPE2345", "%00", "A%00B"):
        response = await client.get(f"/v1/codes/{unknown}", headers=auth(admin))
        assert_problem(response, 404, "code_not_found")


async def _lookup(client: AsyncClient, key: str, code: str) -> dict[str, Any]:
    response = await client.get(f"/v1/codes/{code}", headers=auth(key))
    assert response.status_code == 200, response.text
    assert set(response.json()) == LOOKUP_KEYS
    return response.json()


async def test_disabled_code(client: AsyncClient, admin: str, referrer: dict[str, Any]) -> None:
    code = referrer["default_code"]["code"]
    patched = await patch_code(client, admin, code.lower(), disabled=True)
    assert patched["disabled"] is True
    assert patched["state"] == "disabled"
    lookup = await _lookup(client, admin, code)
    assert (lookup["valid"], lookup["state"]) == (False, "disabled")

    enabled = await patch_code(client, admin, code, disabled=False)
    assert enabled["state"] == "valid"
    assert (await _lookup(client, admin, code))["valid"] is True


async def test_expired_code(client: AsyncClient, admin: str, referrer: dict[str, Any]) -> None:
    code = referrer["default_code"]["code"]
    patched = await patch_code(client, admin, code, expires_at=_in_past())
    assert patched["state"] == "expired"
    lookup = await _lookup(client, admin, code)
    assert (lookup["valid"], lookup["state"]) == (False, "expired")

    later = await patch_code(client, admin, code, expires_at=_in_future())
    assert later["state"] == "valid"
    cleared = await patch_code(client, admin, code, expires_at=None)
    assert cleared["expires_at"] is None
    assert (await _lookup(client, admin, code))["state"] == "valid"


async def test_code_created_already_expired(
    client: AsyncClient, admin: str, referrer: dict[str, Any]
) -> None:
    code = await make_code(client, admin, referrer["id"], expires_at=_in_past())
    assert code["state"] == "expired"
    assert (await _lookup(client, admin, code["code"]))["state"] == "expired"


async def test_exhausted_code(client: AsyncClient, admin: str, referrer: dict[str, Any]) -> None:
    code = await make_code(client, admin, referrer["id"], max_redemptions=1)
    assert (await _lookup(client, admin, code["code"]))["state"] == "valid"
    redeemed = await redeem(client, admin, code["code"], "new_customer")
    assert redeemed.status_code == 201, redeemed.text
    lookup = await _lookup(client, admin, code["code"])
    assert (lookup["valid"], lookup["state"]) == (False, "exhausted")

    raised = await patch_code(client, admin, code["code"], max_redemptions=2)
    assert raised["redemption_count"] == 1
    assert raised["state"] == "valid"
    unlimited = await patch_code(client, admin, code["code"], max_redemptions=None)
    assert unlimited["max_redemptions"] is None
    assert unlimited["state"] == "valid"


async def test_code_of_paused_program(
    client: AsyncClient, admin: str, program: dict[str, Any], referrer: dict[str, Any]
) -> None:
    response = await client.patch(
        f"/v1/programs/{program['id']}", json={"status": "paused"}, headers=auth(admin)
    )
    assert response.status_code == 200
    lookup = await _lookup(client, admin, referrer["default_code"]["code"])
    assert (lookup["valid"], lookup["state"]) == (False, "program_not_active")


async def test_patch_code_changes_only_given_fields(
    client: AsyncClient, admin: str, app: Any, referrer: dict[str, Any]
) -> None:
    code = await make_code(client, admin, referrer["id"], code="ann-vip", max_redemptions=5)
    patched = await patch_code(client, admin, "ANN-VIP", disabled=True)
    assert {k: v for k, v in patched.items() if k not in ("disabled", "state")} == {
        k: v for k, v in code.items() if k not in ("disabled", "state")
    }
    row = await code_row(app, "ann-vip")
    assert row.disabled is True
    assert row.max_redemptions == 5


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"max_redemptions": 0}, id="zero-uses"),
        pytest.param({"expires_at": "tomorrow"}, id="bad-time"),
        pytest.param({"expires_at": "2030-01-01T00:00:00"}, id="naive-time"),
        pytest.param({"expires_at": "9999-12-31T23:30:00-05:00"}, id="past-year-9999"),
        pytest.param({"redemption_count": 0}, id="redemption-count"),
        pytest.param({"code": "OTHER123"}, id="rename"),
        pytest.param({"referrer_id": str(uuid4())}, id="referrer"),
    ],
)
async def test_patch_code_refuses_bad_input(
    client: AsyncClient, admin: str, app: Any, referrer: dict[str, Any], body: dict[str, Any]
) -> None:
    code = referrer["default_code"]["code"]
    response = await client.patch(f"/v1/codes/{code}", json=body, headers=auth(admin))
    assert_problem(response, 422, "validation_error")
    row = await code_row(app, code)
    assert (row.disabled, row.expires_at, row.max_redemptions) == (False, None, None)


async def test_patch_code_refuses_null_disabled(
    client: AsyncClient, admin: str, app: Any, referrer: dict[str, Any]
) -> None:

    code = referrer["default_code"]["code"]
    response = await client.patch(
        f"/v1/codes/{code}", json={"disabled": None, "max_redemptions": 3}, headers=auth(admin)
    )
    assert_problem(response, 422, "invalid_request")
    row = await code_row(app, code)
    assert row.disabled is False
    assert row.max_redemptions is None


async def test_patch_unknown_code_is_404(client: AsyncClient, admin: str) -> None:
    response = await client.patch(
        "/v1/codes/NOPE2345", json={"disabled": True}, headers=auth(admin)
    )
    assert_problem(response, 404, "code_not_found")

from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.keys.models import ApiKey
from app.tracking.models import Click, Referral
from tests.factories import (
    assert_problem,
    auth,
    db_all,
    make_key,
    make_program,
    make_referrer,
    record_click,
    redeem,
)

PROGRAM = {"name": "Program A"}
REFERRER = {"external_id": "ref_a"}

PREFIXES = {"admin": "rk_adm_", "secret": "rk_sec_", "publishable": "rk_pub_"}
PROGRAM_BODY = {"name": "x", "landing_url": "https://x.example", "currency": "USD"}


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": ""}, id="empty"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-key"),
        pytest.param({"Authorization": "Bearer   "}, id="bearer-blank"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
        pytest.param({"Authorization": "rk_sec_abc"}, id="no-scheme"),
        pytest.param({"Authorization": "Token rk_sec_abc"}, id="other-scheme"),
        pytest.param({"Authorization": "Bearer rk_sec_" + "x" * 43}, id="unknown-key"),
        pytest.param({"Authorization": "Bearer " + "x" * 5000}, id="huge-key"),
    ],
)
async def test_requests_without_a_valid_key_are_401(
    client: AsyncClient, admin: str, program: dict[str, Any], headers: dict[str, str]
) -> None:
    for method, url, body in [
        ("GET", "/v1/programs", None),
        ("GET", f"/v1/programs/{program['id']}", None),
        ("POST", "/v1/programs", PROGRAM_BODY),
        ("POST", "/v1/clicks", {"code": "ABC"}),
        ("POST", "/v1/redemptions", {"code": "ABC", "customer_id": "c"}),
        ("GET", "/v1/codes/ABC", None),
        ("GET", "/v1/api-keys", None),
    ]:
        response = await client.request(method, url, json=body, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    listed = await client.get("/v1/programs", headers=auth(admin))
    assert len(listed.json()["data"]) == 1


async def test_scheme_is_case_insensitive(client: AsyncClient, admin: str) -> None:
    response = await client.get("/v1/programs", headers={"Authorization": f"bearer {admin}"})
    assert response.status_code == 200


async def test_a_key_with_one_character_changed_is_401(client: AsyncClient, admin: str) -> None:
    tampered = admin[:-1] + ("A" if admin[-1] != "A" else "B")
    response = await client.get("/v1/programs", headers=auth(tampered))
    assert_problem(response, 401, "unauthorized")


# --- key kinds -------------------------------------------------------------------------------


async def test_publishable_key_does_what_a_widget_needs(
    client: AsyncClient, app: Any, referrer: dict[str, Any]
) -> None:
    publishable = await make_key(app, "publishable")
    code = referrer["default_code"]["code"]
    looked_up = await client.get(f"/v1/codes/{code}", headers=auth(publishable))
    assert looked_up.status_code == 200, looked_up.text
    click = await record_click(client, publishable, code)
    assert click.status_code == 201, click.text
    redeemed = await redeem(client, publishable, code, "new_1", click_id=click.json()["click_id"])
    assert redeemed.status_code == 201, redeemed.text


async def test_publishable_key_is_forbidden_everything_else(
    client: AsyncClient, app: Any, program: dict[str, Any], referrer: dict[str, Any]
) -> None:
    publishable = await make_key(app, "publishable")
    code = referrer["default_code"]["code"]
    program_body = {"name": "x", "landing_url": "https://x.example", "currency": "USD"}
    calls = [
        ("POST", "/v1/programs", program_body),
        ("GET", "/v1/programs", None),
        ("GET", f"/v1/programs/{program['id']}", None),
        ("PATCH", f"/v1/programs/{program['id']}", {"status": "paused"}),
        ("POST", f"/v1/programs/{program['id']}/referrers", {"external_id": "evil"}),
        ("GET", f"/v1/programs/{program['id']}/referrers", None),
        ("GET", f"/v1/referrers/{referrer['id']}", None),
        ("GET", f"/v1/referrers/{referrer['id']}/codes", None),
        ("POST", f"/v1/referrers/{referrer['id']}/codes", {"code": "FREEBIE"}),
        ("PATCH", f"/v1/codes/{code}", {"max_redemptions": 1}),
        ("POST", "/v1/api-keys", {"kind": "admin"}),
        ("GET", "/v1/api-keys", None),
        ("POST", f"/v1/api-keys/{uuid4()}/revoke", None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=auth(publishable))
        assert_problem(response, 403, "forbidden")

    admin = await make_key(app)
    fetched = (await client.get(f"/v1/programs/{program['id']}", headers=auth(admin))).json()
    assert fetched == program
    codes_url = f"/v1/referrers/{referrer['id']}/codes"
    codes = (await client.get(codes_url, headers=auth(admin))).json()
    assert [c["code"] for c in codes] == [code]
    assert codes[0]["max_redemptions"] is None
    referrers_url = f"/v1/programs/{program['id']}/referrers"
    listed = (await client.get(referrers_url, headers=auth(admin))).json()
    assert [r["external_id"] for r in listed["data"]] == ["ref_a"]
    keys = (await client.get("/v1/api-keys", headers=auth(admin))).json()
    assert sorted(k["kind"] for k in keys) == ["admin", "admin", "publishable"]


async def test_secret_key_runs_programs_but_cannot_create_them_or_keys(
    client: AsyncClient, app: Any, program: dict[str, Any]
) -> None:
    secret = await make_key(app, "secret")
    created = await client.post(
        "/v1/programs",
        json={"name": "x", "landing_url": "https://x.example", "currency": "USD"},
        headers=auth(secret),
    )
    assert_problem(created, 403, "forbidden")
    for method, url, body in [
        ("POST", "/v1/api-keys", {"kind": "admin"}),
        ("POST", "/v1/api-keys", {"kind": "publishable"}),
        ("GET", "/v1/api-keys", None),
        ("POST", f"/v1/api-keys/{uuid4()}/revoke", None),
    ]:
        response = await client.request(method, url, json=body, headers=auth(secret))
        assert_problem(response, 403, "forbidden")

    # What it may do.
    assert (await client.get("/v1/programs", headers=auth(secret))).status_code == 200
    patched = await client.patch(
        f"/v1/programs/{program['id']}", json={"name": "Renamed"}, headers=auth(secret)
    )
    assert patched.status_code == 200
    referrer = await make_referrer(client, secret, program["id"], "by_secret")
    code = referrer["default_code"]["code"]
    assert (await client.get(f"/v1/codes/{code}", headers=auth(secret))).status_code == 200
    assert (await redeem(client, secret, code, "new_1")).status_code == 201


# --- program limits --------------------------------------------------------------------------


async def test_key_limited_to_a_program_sees_nothing_of_another(
    client: AsyncClient, app: Any, admin: str
) -> None:
    a = await make_program(client, admin, name="A")
    b = await make_program(client, admin, name="B")
    ref_a = await make_referrer(client, admin, a["id"], "ref_a")
    ref_b = await make_referrer(client, admin, b["id"], "ref_b")
    code_a = ref_a["default_code"]["code"]
    code_b = ref_b["default_code"]["code"]
    publishable_all = await make_key(app, "publishable")
    click_b = (await record_click(client, publishable_all, code_b)).json()["click_id"]
    click_a = (await record_click(client, publishable_all, code_a)).json()["click_id"]

    for kind in ("secret", "admin"):
        key = await make_key(app, kind, [UUID(a["id"])])
        listed = (await client.get("/v1/programs", headers=auth(key))).json()
        assert [p["id"] for p in listed["data"]] == [a["id"]]
        assert (await client.get(f"/v1/programs/{a['id']}", headers=auth(key))).status_code == 200

        # Each call made on B's object and on one that does not exist: the same answer.
        foreign = {"program": b["id"], "referrer": ref_b["id"], "code": code_b}
        missing = {"program": str(uuid4()), "referrer": str(uuid4()), "code": "NOPE23456"}
        calls: list[tuple[str, str, dict[str, Any] | None, str]] = [
            ("GET", "/v1/programs/{program}", None, "program_not_found"),
            ("PATCH", "/v1/programs/{program}", {"status": "paused"}, "program_not_found"),
            ("GET", "/v1/programs/{program}/referrers", None, "program_not_found"),
            ("POST", "/v1/programs/{program}/referrers", {"external_id": "x"}, "program_not_found"),
            ("GET", "/v1/referrers/{referrer}", None, "referrer_not_found"),
            ("GET", "/v1/referrers/{referrer}/codes", None, "referrer_not_found"),
            ("POST", "/v1/referrers/{referrer}/codes", {}, "referrer_not_found"),
            ("GET", "/v1/codes/{code}", None, "code_not_found"),
            ("PATCH", "/v1/codes/{code}", {"disabled": True}, "code_not_found"),
            ("POST", "/v1/clicks", {"code": "{code}"}, "code_not_found"),
            ("POST", "/v1/redemptions", {"code": "{code}", "customer_id": "c"}, "code_not_found"),
        ]
        for method, url, body, error in calls:
            answers = []
            for ids in (foreign, missing):
                filled = body and {
                    k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()
                }
                response = await client.request(
                    method, url.format(**ids), json=filled, headers=auth(key)
                )
                answers.append(assert_problem(response, 404, error))
            assert answers[0]["title"] == answers[1]["title"]

        # A click of program B cannot be tied to a redemption in A.
        redeemed = await redeem(client, key, code_a, f"c_{kind}", click_id=click_b)
        assert_problem(redeemed, 422, "click_not_found")

    limited_pub = await make_key(app, "publishable", [UUID(a["id"])])
    assert_problem(await record_click(client, limited_pub, code_b), 404, "code_not_found")
    assert_problem(await redeem(client, limited_pub, code_b, "c"), 404, "code_not_found")
    assert (await redeem(client, limited_pub, code_a, "c", click_id=click_a)).status_code == 201

    # Nothing of B changed.
    admin_view = (await client.get(f"/v1/programs/{b['id']}", headers=auth(admin))).json()
    assert admin_view == b
    referrers_url = f"/v1/programs/{b['id']}/referrers"
    referrers_b = (await client.get(referrers_url, headers=auth(admin))).json()
    assert [r["external_id"] for r in referrers_b["data"]] == ["ref_b"]
    assert referrers_b["data"][0]["default_code"]["disabled"] is False
    clicks = await db_all(app, select(Click))
    assert sum(1 for c in clicks if c.program_id == UUID(b["id"])) == 1
    assert [r.customer_id for r in await db_all(app, select(Referral))] == ["c"]


async def test_limited_key_cannot_create_programs(
    client: AsyncClient, app: Any, program: dict[str, Any]
) -> None:
    limited_admin = await make_key(app, "admin", [UUID(program["id"])])
    response = await client.post(
        "/v1/programs",
        json={"name": "x", "landing_url": "https://x.example", "currency": "USD"},
        headers=auth(limited_admin),
    )
    assert_problem(response, 403, "forbidden")


async def test_limited_admin_makes_keys_only_for_its_programs(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any]
) -> None:
    other = await make_program(client, admin, name="Other")
    limited_admin = await make_key(app, "admin", [UUID(program["id"])])
    for body in (
        {"kind": "secret"},
        {"kind": "secret", "program_ids": [other["id"]]},
        {"kind": "secret", "program_ids": [program["id"], other["id"]]},
    ):
        response = await client.post("/v1/api-keys", json=body, headers=auth(limited_admin))
        assert_problem(response, 403, "forbidden")
    ok = await client.post(
        "/v1/api-keys",
        json={"kind": "secret", "program_ids": [program["id"]]},
        headers=auth(limited_admin),
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["program_ids"] == [program["id"]]
    listed = (await client.get("/v1/api-keys", headers=auth(limited_admin))).json()
    # Itself and the key it made; not the unlimited admin key.
    assert sorted(k["kind"] for k in listed) == ["admin", "secret"]
    assert ok.json()["id"] in {k["id"] for k in listed}
    assert all(k["program_ids"] == [program["id"]] for k in listed)
    revoke = await client.post(
        f"/v1/api-keys/{ok.json()['id']}/revoke", headers=auth(limited_admin)
    )
    assert_problem(revoke, 403, "forbidden")


# --- API keys --------------------------------------------------------------------------------


async def test_create_key_shows_it_once(
    client: AsyncClient, app: Any, admin: str, program: dict[str, Any]
) -> None:
    made: dict[str, str] = {}
    for kind, prefix in PREFIXES.items():
        response = await client.post(
            "/v1/api-keys", json={"kind": kind, "name": f"{kind} key"}, headers=auth(admin)
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["kind"] == kind
        assert body["name"] == f"{kind} key"
        assert body["program_ids"] is None
        assert body["revoked_at"] is None
        assert body["key"].startswith(prefix)
        assert len(body["key"]) >= len(prefix) + 40
        assert body["key"].startswith(body["prefix"])
        assert body["prefix"] != body["key"]
        made[body["id"]] = body["key"]
    assert len(set(made.values())) == 3

    listed = await client.get("/v1/api-keys", headers=auth(admin))
    assert listed.status_code == 200
    for entry in listed.json():
        assert "key" not in entry
        assert "key_hash" not in entry
        for secret in [*made.values(), admin]:
            assert secret not in str(entry)
    assert set(made) <= {entry["id"] for entry in listed.json()}

    # The new keys work, each as its kind.
    by_kind = {entry["kind"]: made[entry["id"]] for entry in listed.json() if entry["id"] in made}
    assert (await client.get("/v1/api-keys", headers=auth(by_kind["admin"]))).status_code == 200
    assert (await client.get("/v1/programs", headers=auth(by_kind["secret"]))).status_code == 200
    publishable = await client.get("/v1/programs", headers=auth(by_kind["publishable"]))
    assert_problem(publishable, 403, "forbidden")


async def test_create_key_limited_to_programs(
    client: AsyncClient, admin: str, program: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/api-keys", json={"kind": "secret", "program_ids": [program["id"]]}, headers=auth(admin)
    )
    assert response.status_code == 201
    key = response.json()["key"]
    assert response.json()["program_ids"] == [program["id"]]
    listed = (await client.get("/v1/programs", headers=auth(key))).json()
    assert [p["id"] for p in listed["data"]] == [program["id"]]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"kind": "root"}, id="unknown-kind"),
        pytest.param({}, id="no-kind"),
        pytest.param({"kind": "secret", "program_ids": []}, id="empty-programs"),
        pytest.param({"kind": "secret", "program_ids": ["nope"]}, id="bad-program-id"),
        pytest.param({"kind": "secret", "key": "rk_sec_chosen"}, id="chosen-key"),
        pytest.param({"kind": "secret", "key_hash": "0" * 64}, id="chosen-hash"),
    ],
)
async def test_create_key_refuses_bad_input(
    client: AsyncClient, app: Any, admin: str, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/api-keys", json=body, headers=auth(admin))
    assert_problem(response, 422, "validation_error")
    assert len(await db_all(app, select(ApiKey))) == 1


async def test_create_key_for_unknown_program(client: AsyncClient, app: Any, admin: str) -> None:
    response = await client.post(
        "/v1/api-keys", json={"kind": "secret", "program_ids": [str(uuid4())]}, headers=auth(admin)
    )
    assert_problem(response, 404, "not_found")
    assert len(await db_all(app, select(ApiKey))) == 1


async def test_keys_are_stored_hashed(client: AsyncClient, app: Any, admin: str) -> None:
    made = [admin]
    for kind in PREFIXES:
        response = await client.post("/v1/api-keys", json={"kind": kind}, headers=auth(admin))
        made.append(response.json()["key"])
    rows = await db_all(app, select(ApiKey))
    assert len(rows) == 4
    for row in rows:
        stored = " ".join(str(getattr(row, column.key)) for column in ApiKey.__table__.columns)
        for key in made:
            assert key not in stored
            assert key[len("rk_xxx_") :] not in stored
        assert len(row.key_hash) == 64
        assert row.prefix.startswith(PREFIXES[row.kind])
    assert len({row.key_hash for row in rows}) == 4


async def test_revoked_key_is_401(client: AsyncClient, app: Any, admin: str) -> None:
    created = await client.post("/v1/api-keys", json={"kind": "secret"}, headers=auth(admin))
    key_id, key = created.json()["id"], created.json()["key"]
    assert (await client.get("/v1/programs", headers=auth(key))).status_code == 200

    revoked = await client.post(f"/v1/api-keys/{key_id}/revoke", headers=auth(admin))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert "key" not in revoked.json()

    response = await client.get("/v1/programs", headers=auth(key))
    assert_problem(response, 401, "unauthorized")
    # Revoking again is harmless and keeps the first time.
    again = await client.post(f"/v1/api-keys/{key_id}/revoke", headers=auth(admin))
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    listed = {k["id"]: k for k in (await client.get("/v1/api-keys", headers=auth(admin))).json()}
    assert listed[key_id]["revoked_at"] == revoked.json()["revoked_at"]
    assert listed[key_id]["revoked_at"] is not None


async def test_revoked_publishable_key_cannot_redeem(
    client: AsyncClient, app: Any, admin: str, referrer: dict[str, Any]
) -> None:

    created = await client.post("/v1/api-keys", json={"kind": "publishable"}, headers=auth(admin))
    await client.post(f"/v1/api-keys/{created.json()['id']}/revoke", headers=auth(admin))
    response = await redeem(client, created.json()["key"], referrer["default_code"]["code"], "c")
    assert_problem(response, 401, "unauthorized")
    assert await db_all(app, select(Referral)) == []


async def test_revoke_unknown_key_is_404(client: AsyncClient, admin: str) -> None:
    response = await client.post(f"/v1/api-keys/{uuid4()}/revoke", headers=auth(admin))
    assert_problem(response, 404, "not_found")


async def test_last_used_at_is_recorded(client: AsyncClient, app: Any) -> None:
    fresh = await make_key(app)
    [before] = await db_all(app, select(ApiKey))
    assert before.last_used_at is None
    await client.get("/v1/programs", headers=auth(fresh))
    [after] = await db_all(app, select(ApiKey))
    assert after.last_used_at is not None

"""Referrer sessions: minted by a secret key, hashed at rest, expiring, revocable, /v1/me… only."""

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from app.main import create_app
from app.referrer_sessions.models import ReferrerSession
from tests.factories import (
    assert_problem,
    auth,
    db_all,
    make_key,
    make_program,
    make_referrer,
)
from tests.session_factories import me, me_ok, mint, session_token, set_session_expiry
from tests.settings import settings_for_tests

SHOP = "https://shop.example.com"
OTHER_SHOP = "https://other-shop.example.com"


async def _program_with_referrer(
    client: AsyncClient, app: Any, **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    admin = await make_key(app)
    prog = await make_program(client, admin, **program)
    referrer = await make_referrer(client, admin, prog["id"], "alice", email="alice@example.com")
    return admin, prog, referrer


def _close(value: str, expected: datetime, seconds: float = 30) -> bool:
    return abs(datetime.fromisoformat(value) - expected) < timedelta(seconds=seconds)


async def test_a_minted_token_is_prefixed_shown_once_and_kept_only_as_a_hash(
    client: AsyncClient, app: Any
) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    secret = await make_key(app, "secret")
    created = await mint(client, secret, referrer["id"])
    token = created["token"]
    assert token.startswith("rk_ref_")
    # 32 random bytes, URL-safe base64 without padding: 43 characters after the prefix.
    assert len(token) == len("rk_ref_") + 43
    assert _close(created["expires_at"], datetime.now(UTC) + timedelta(hours=1))
    assert created["referrer_id"] == referrer["id"]
    assert created["purpose"] == "session"
    rows = await db_all(app, select(ReferrerSession))
    assert len(rows) == 1
    row = rows[0]
    assert str(row.id) == created["session_id"]
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.prefix == token[:12] == created["prefix"]
    stored = " ".join(str(getattr(row, column.key)) for column in ReferrerSession.__table__.c)
    assert token not in stored and token[12:] not in stored
    # Two mints, two different tokens.
    again = await mint(client, admin, referrer["id"])
    assert again["token"] != token and again["session_id"] != created["session_id"]
    body = await me_ok(client, token)
    assert body["referrer"]["id"] == referrer["id"]


async def test_the_lifetime_can_be_chosen_within_bounds(client: AsyncClient, app: Any) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    short = await mint(client, admin, referrer["id"], ttl_seconds=120)
    assert _close(short["expires_at"], datetime.now(UTC) + timedelta(seconds=120), 10)
    url = f"/v1/referrers/{referrer['id']}/sessions"
    for body in ({"ttl_seconds": 59}, {"ttl_seconds": "soon"}, {"ttl_seconds": 60, "kind": "x"}):
        response = await client.post(url, json=body, headers=auth(admin))
        assert_problem(response, 422, "validation_error")
    too_long = await client.post(url, json={"ttl_seconds": 8 * 86400}, headers=auth(admin))
    assert "604800" in assert_problem(too_long, 422, "invalid_ttl")["detail"]
    assert len(await db_all(app, select(ReferrerSession))) == 1


async def test_an_expired_session_is_refused_with_its_own_code(
    client: AsyncClient, app: Any
) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    created = await mint(client, admin, referrer["id"])
    await me_ok(client, created["token"])
    await set_session_expiry(app, created["session_id"], datetime.now(UTC) - timedelta(seconds=1))
    for path in ("", "/referrals", "/rewards", "/balance", "/progress", "/leaderboard"):
        response = await me(client, created["token"], path)
        assert_problem(response, 401, "session_expired")
        assert "invalid_token" in response.headers["www-authenticate"]


async def test_revoked_sessions_are_refused_one_or_all(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await _program_with_referrer(client, app)
    bob = await make_referrer(client, admin, prog["id"], "bob")
    first, second = await mint(client, admin, alice["id"]), await mint(client, admin, alice["id"])
    third = await mint(client, admin, alice["id"])
    bobs = await session_token(client, admin, bob["id"])

    revoked = await client.post(
        f"/v1/referrer-sessions/{first['session_id']}/revoke", headers=auth(admin)
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert "token" not in revoked.json()
    assert_problem(await me(client, first["token"]), 401, "session_revoked")
    await me_ok(client, second["token"])
    # Revoking twice keeps the first time.
    twice = await client.post(
        f"/v1/referrer-sessions/{first['session_id']}/revoke", headers=auth(admin)
    )
    assert twice.json()["revoked_at"] == revoked.json()["revoked_at"]

    everything = await client.post(
        f"/v1/referrers/{alice['id']}/sessions/revoke", headers=auth(admin)
    )
    assert everything.status_code == 200, everything.text
    assert everything.json() == {"referrer_id": alice["id"], "revoked": 2}
    for token in (second["token"], third["token"]):
        assert_problem(await me(client, token), 401, "session_revoked")
    await me_ok(client, bobs)  # another referrer's sessions are untouched


async def test_a_referrer_can_sign_out(client: AsyncClient, app: Any) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    token, other = (
        await session_token(client, admin, referrer["id"]),
        await session_token(client, admin, referrer["id"]),
    )
    response = await client.delete("/v1/me/session", headers=auth(token))
    assert response.status_code == 204, response.text
    assert_problem(await me(client, token), 401, "session_revoked")
    await me_ok(client, other)


async def test_unknown_or_missing_tokens_are_401(client: AsyncClient, app: Any) -> None:
    await _program_with_referrer(client, app)
    assert_problem(await me(client, "rk_ref_" + "x" * 43), 401, "unauthorized")
    missing = await client.get("/v1/me")
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    basic = await client.get("/v1/me", headers={"Authorization": "Basic abc"})
    assert_problem(basic, 401, "unauthorized")


async def test_an_api_key_is_not_a_referrer(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await _program_with_referrer(client, app)
    keys = [
        admin,
        await make_key(app, "secret"),
        await make_key(app, "publishable", [UUID(prog["id"])]),
    ]
    for key in keys:
        for path in ("", "/referrals", "/rewards", "/balance", "/progress", "/leaderboard"):
            assert_problem(await me(client, key, path), 403, "referrer_session_required")
        patched = await client.patch("/v1/me", json={"leaderboard_name": "X"}, headers=auth(key))
        assert_problem(patched, 403, "referrer_session_required")
    # An unknown key is still an unknown key.
    assert_problem(await me(client, "rk_sec_" + "y" * 43), 401, "unauthorized")


async def test_a_session_can_call_nothing_but_me(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await _program_with_referrer(client, app)
    token = await session_token(client, admin, referrer["id"])
    code = referrer["default_code"]["code"]
    calls = [
        ("GET", "/v1/programs", None),
        ("GET", f"/v1/programs/{prog['id']}", None),
        ("GET", f"/v1/referrers/{referrer['id']}", None),
        ("GET", f"/v1/referrers/{referrer['id']}/balance", None),
        ("POST", f"/v1/referrers/{referrer['id']}/sessions", None),
        ("POST", f"/v1/referrers/{referrer['id']}/portal-links", None),
        ("GET", f"/v1/codes/{code}", None),
        ("POST", "/v1/clicks", {"code": code}),
        ("POST", "/v1/redemptions", {"code": code, "customer_id": "c1"}),
        ("GET", "/v1/rewards", None),
        ("POST", "/v1/api-keys", {"kind": "admin"}),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=auth(token))
        assert_problem(response, 403, "referrer_session_not_allowed")
    # Even an expired or unknown session token: the prefix decides, before any lookup.
    assert_problem(
        await client.get("/v1/programs", headers=auth("rk_ref_unknown")),
        403,
        "referrer_session_not_allowed",
    )
    assert len(await db_all(app, select(ReferrerSession))) == 1


async def test_only_keys_that_see_the_referrer_mint_sessions(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await _program_with_referrer(client, app)
    other = await make_program(client, admin, name="Other")
    limited = await make_key(app, "secret", [UUID(other["id"])])
    publishable = await make_key(app, "publishable", [UUID(prog["id"])])
    url = f"/v1/referrers/{referrer['id']}/sessions"
    theirs = await client.post(url, headers=auth(limited))
    missing = await client.post(f"/v1/referrers/{uuid4()}/sessions", headers=auth(limited))
    assert_problem(theirs, 404, "referrer_not_found")
    assert theirs.json() == missing.json()
    assert_problem(await client.post(url, headers=auth(publishable)), 403, "forbidden")
    for path in ("portal-links", "sessions/revoke"):
        response = await client.post(
            f"/v1/referrers/{referrer['id']}/{path}", headers=auth(limited)
        )
        assert_problem(response, 404, "referrer_not_found")
    created = await mint(client, admin, referrer["id"])
    revoke = await client.post(
        f"/v1/referrer-sessions/{created['session_id']}/revoke", headers=auth(limited)
    )
    assert_problem(revoke, 404, "referrer_session_not_found")
    await me_ok(client, created["token"])
    assert len(await db_all(app, select(ReferrerSession))) == 1


async def test_a_portal_link_carries_a_fresh_token_in_its_fragment(
    client: AsyncClient, app: Any, settings: Any
) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    response = await client.post(
        f"/v1/referrers/{referrer['id']}/portal-links", headers=auth(admin)
    )
    assert response.status_code == 201, response.text
    link = response.json()
    assert link["url"] == f"{settings.public_base_url}/portal#token={link['token']}"
    assert link["purpose"] == "portal_link"
    assert _close(link["expires_at"], datetime.now(UTC) + timedelta(hours=24))
    assert (await me_ok(client, link["token"]))["referrer"]["id"] == referrer["id"]
    second = await client.post(
        f"/v1/referrers/{referrer['id']}/portal-links",
        json={"ttl_seconds": 600},
        headers=auth(admin),
    )
    assert second.json()["token"] != link["token"]
    assert _close(second.json()["expires_at"], datetime.now(UTC) + timedelta(minutes=10), 10)


@pytest.fixture
async def limited(client: AsyncClient) -> AsyncIterator[tuple[AsyncClient, Any]]:
    """A second app on the same (emptied) database, with small limits and the caches on."""
    app = create_app(
        settings_for_tests(
            rate_limits_enabled=True,
            rate_limit_failed_auth_per_ip="3/minute",
            rate_limit_me_per_session="4/minute",
            rate_limit_me_per_ip="1000/minute",
            auth_cache_seconds=60,
            database_pool_size=5,
        )
    )
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def test_me_is_limited_per_session(limited: tuple[AsyncClient, Any]) -> None:
    http, app = limited
    admin, _, referrer = await _program_with_referrer(http, app)
    token, other = (
        await session_token(http, admin, referrer["id"]),
        await session_token(http, admin, referrer["id"]),
    )
    statuses = [(await me(http, token)).status_code for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    limited_answer = await me(http, token)
    assert_problem(limited_answer, 429, "rate_limited")
    assert int(limited_answer.headers["retry-after"]) >= 1
    await me_ok(http, other)


async def test_me_is_limited_per_ip(client: AsyncClient) -> None:
    app = create_app(settings_for_tests(rate_limits_enabled=True, rate_limit_me_per_ip="3/minute"))
    transport = ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        admin, _, referrer = await _program_with_referrer(http, app)
        tokens = [await session_token(http, admin, referrer["id"]) for _ in range(4)]
        statuses = [(await me(http, token)).status_code for token in tokens]
    assert statuses == [200, 200, 200, 429]


async def test_guessing_tokens_counts_as_failed_authentication(
    limited: tuple[AsyncClient, Any],
) -> None:
    http, app = limited
    admin, _, referrer = await _program_with_referrer(http, app)
    expired = await mint(http, admin, referrer["id"])
    await set_session_expiry(app, expired["session_id"], datetime.now(UTC) - timedelta(seconds=1))
    # A real token that expired is not a guess: it does not count against the address.
    for _ in range(5):
        assert_problem(await me(http, expired["token"]), 401, "session_expired")
    statuses = [(await me(http, f"rk_ref_guess{n}")).status_code for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_revocation_reaches_this_replica_at_once_despite_the_cache(
    limited: tuple[AsyncClient, Any],
) -> None:
    http, app = limited
    admin, _, referrer = await _program_with_referrer(http, app)
    created = await mint(http, admin, referrer["id"])
    await me_ok(http, created["token"])  # now cached
    revoke = await http.post(
        f"/v1/referrer-sessions/{created['session_id']}/revoke", headers=auth(admin)
    )
    assert revoke.status_code == 200
    assert_problem(await me(http, created["token"]), 401, "session_revoked")
    signed_out = await session_token(http, admin, referrer["id"])
    await me_ok(http, signed_out)
    assert (await http.delete("/v1/me/session", headers=auth(signed_out))).status_code == 204
    assert_problem(await me(http, signed_out), 401, "session_revoked")


# --- CORS: the widget calls /v1/me… from the storefront --------------------------------------


async def test_me_answers_preflights_and_requests_from_the_programs_storefronts(
    client: AsyncClient, app: Any
) -> None:
    admin, _, referrer = await _program_with_referrer(client, app, allowed_origins=[SHOP])
    await make_program(client, admin, name="Other shop", allowed_origins=[OTHER_SHOP])
    token = await session_token(client, admin, referrer["id"])
    preflight = {"Access-Control-Request-Method": "PATCH", "Origin": SHOP}
    for path in ("/v1/me", "/v1/me/referrals", "/v1/me/leaderboard"):
        ok = await client.options(path, headers=preflight)
        assert ok.status_code == 204, path
        assert ok.headers["access-control-allow-origin"] == SHOP
        assert "PATCH" in ok.headers["access-control-allow-methods"]
        assert "authorization" in ok.headers["access-control-allow-headers"]
    foreign = await client.options("/v1/me", headers=preflight | {"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers

    got = await client.get("/v1/me", headers=auth(token) | {"Origin": SHOP})
    assert got.status_code == 200
    assert got.headers["access-control-allow-origin"] == SHOP
    patched = await client.patch(
        "/v1/me", json={"leaderboard_name": "Ally"}, headers=auth(token) | {"Origin": SHOP}
    )
    assert patched.status_code == 200
    assert patched.headers["access-control-allow-origin"] == SHOP
    # Another program's storefront may not read this program's referrer, and changes nothing.
    elsewhere = await client.patch(
        "/v1/me", json={"leaderboard_name": "Evil"}, headers=auth(token) | {"Origin": OTHER_SHOP}
    )
    assert_problem(elsewhere, 403, "origin_not_allowed")
    assert (await me_ok(client, token))["referrer"]["leaderboard_name"] == "Ally"


async def test_minting_is_never_open_to_browsers(client: AsyncClient, app: Any) -> None:
    admin, _, referrer = await _program_with_referrer(client, app, allowed_origins=[SHOP])
    for path in ("sessions", "portal-links", "sessions/revoke"):
        url = f"/v1/referrers/{referrer['id']}/{path}"
        preflight = await client.options(
            url, headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        response = await client.post(url, headers=auth(admin) | {"Origin": SHOP})
        assert response.status_code in (200, 201)
        assert "access-control-allow-origin" not in response.headers


async def test_erasing_a_referrer_ends_their_sessions_and_their_leaderboard_name(
    client: AsyncClient, app: Any
) -> None:
    admin, _, referrer = await _program_with_referrer(client, app)
    token = await session_token(client, admin, referrer["id"])
    named = await client.patch("/v1/me", json={"leaderboard_name": "Ally"}, headers=auth(token))
    assert named.status_code == 200
    erased = await client.delete("/v1/customers/alice", headers=auth(admin))
    assert erased.status_code == 200, erased.text
    assert_problem(await me(client, token), 401, "session_revoked")
    fresh = await session_token(client, admin, referrer["id"])
    body = await me_ok(client, fresh)
    assert body["referrer"]["leaderboard_name"] is None
    assert body["referrer"]["external_id"].startswith("erased:")

"""Factories for referrer sessions: mint a token for a referrer, call /v1/me… with it."""

from datetime import datetime
from typing import Any
from uuid import UUID

from httpx import AsyncClient, Response
from sqlalchemy import update

from app.referrer_sessions.models import ReferrerSession
from tests.factories import auth, make_key, make_program, make_referrer


async def mint(client: AsyncClient, key: str, referrer_id: str, **body: Any) -> dict[str, Any]:
    """POST /v1/referrers/{id}/sessions; asserts 201 and returns the answer (with `token`)."""
    response = await client.post(
        f"/v1/referrers/{referrer_id}/sessions", json=body or None, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def session_token(client: AsyncClient, key: str, referrer_id: str) -> str:
    return str((await mint(client, key, referrer_id))["token"])


async def me(client: AsyncClient, token: str, path: str = "", **params: Any) -> Response:
    """GET /v1/me{path} with the session token."""
    return await client.get(f"/v1/me{path}", params=params or None, headers=auth(token))


async def me_ok(client: AsyncClient, token: str, path: str = "", **params: Any) -> Any:
    response = await me(client, token, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


async def set_session_expiry(app: Any, session_id: str, when: datetime) -> None:
    """Move a session's end in time (tests cannot wait an hour)."""
    async with app.state.sessionmaker() as db:
        result = await db.execute(
            update(ReferrerSession)
            .where(ReferrerSession.id == UUID(session_id))
            .values(expires_at=when)
        )
        assert result.rowcount == 1
        await db.commit()


async def referrer_with_session(client: AsyncClient, app: Any, **program: Any) -> dict[str, Any]:
    """An admin key, a program, its referrer alice (with email and name) and her session token."""
    admin = await make_key(app)
    prog = await make_program(client, admin, **program)
    alice = await make_referrer(
        client, admin, prog["id"], "alice-ext", email="alice@example.com", name="Alice Liddell"
    )
    token = await session_token(client, admin, alice["id"])
    return {"admin": admin, "program": prog, "alice": alice, "token": token}


def code_of(referrer: dict[str, Any]) -> str:
    """The referrer's default code."""
    return str(referrer["default_code"]["code"])

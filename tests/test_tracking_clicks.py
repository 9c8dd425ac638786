"""The clicks API: recording, bots, duplicates by visitor and IP, hashed IPs, bad input."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update

from app.tracking.models import Click, ClickClaim
from tests.factories import (
    BROWSER_UA,
    assert_problem,
    auth,
    make_code,
    patch_code,
    record_click,
    redeem,
)

# PROGRAM and REFERRER shape the conftest program and referrer fixtures of this module.
from tests.tracking_helpers import (  # noqa: F401
    PROGRAM,
    REFERRER,
    assert_nothing_changed,
    clicks,
    code_fixture,
    pause,
    publishable_fixture,
)


def client_at(app: Any, ip: str) -> AsyncClient:
    """A client whose requests come from `ip`."""
    transport = ASGITransport(app=app, client=(ip, 40000))
    return AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def other_ip_client(app: Any, client: AsyncClient) -> AsyncIterator[AsyncClient]:
    async with client_at(app, "203.0.113.77") as http:
        yield http


# --- clicks API ------------------------------------------------------------------------------


async def test_record_click(
    client: AsyncClient, app: Any, publishable: str, program: dict[str, Any], code: str
) -> None:
    response = await record_click(
        client,
        publishable,
        code.lower(),
        landing_url="https://shop.example.com/p/1",
        referring_url="https://social.example.net/",
        utm_source="social",
        visitor_id="visitor-1",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["program_id"] == program["id"]
    assert body["code"] == code
    assert (body["attributable"], body["is_bot"], body["is_duplicate"]) == (True, False, False)

    [click] = await clicks(app)
    assert click.id == UUID(body["click_id"])
    assert click.source == "api"
    assert click.landing_url == "https://shop.example.com/p/1"
    assert click.referring_url == "https://social.example.net/"
    assert click.utm_source == "social"
    assert click.visitor_id == "visitor-1"


async def test_click_from_a_bot_is_flagged(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    response = await record_click(client, publishable, code, user_agent="curl/8.4.0")
    assert response.status_code == 201
    assert response.json()["is_bot"] is True
    [click] = await clicks(app)
    assert click.is_bot is True


async def test_click_same_visitor_is_duplicate(
    client: AsyncClient,
    other_ip_client: AsyncClient,
    app: Any,
    publishable: str,
    admin: str,
    referrer: dict[str, Any],
    code: str,
) -> None:
    first = await record_click(client, publishable, code, visitor_id="v1")
    # Another IP, same visitor: a duplicate.
    second = await record_click(other_ip_client, publishable, code, visitor_id="v1")
    assert first.json()["is_duplicate"] is False
    assert second.json()["is_duplicate"] is True
    # Another IP, another visitor: not a duplicate.
    async with client_at(app, "198.51.100.9") as third_ip:
        third = await record_click(third_ip, publishable, code, visitor_id="v3")
    assert third.json()["is_duplicate"] is False
    # Same visitor, another code: not a duplicate.
    other_code = await make_code(client, admin, referrer["id"])
    fourth = await record_click(other_ip_client, publishable, other_code["code"], visitor_id="v1")
    assert fourth.json()["is_duplicate"] is False

    assert [c.is_duplicate for c in await clicks(app)] == [False, True, False, False]


async def test_click_same_ip_is_duplicate(
    client: AsyncClient, app: Any, publishable: str, admin: str, referrer: dict[str, Any], code: str
) -> None:
    first = await record_click(client, publishable, code, visitor_id="a")
    second = await record_click(client, publishable, code, visitor_id="b")
    no_visitor = await record_click(client, publishable, code)
    assert first.json()["is_duplicate"] is False
    assert second.json()["is_duplicate"] is True
    assert no_visitor.json()["is_duplicate"] is True
    other_code = await make_code(client, admin, referrer["id"])
    other = await record_click(client, publishable, other_code["code"])
    assert other.json()["is_duplicate"] is False


async def test_forwarded_for_is_not_trusted_by_default(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    first = await record_click(client, publishable, code)
    second = await client.post(
        "/v1/clicks",
        json={"code": code},
        headers=auth(publishable) | {"User-Agent": BROWSER_UA, "X-Forwarded-For": "192.0.2.1"},
    )
    assert first.json()["is_duplicate"] is False
    assert second.json()["is_duplicate"] is True
    hashes = {c.ip_hash for c in await clicks(app)}
    assert len(hashes) == 1


async def test_click_outside_the_window_is_not_duplicate(
    client: AsyncClient, app: Any, publishable: str, settings: Any, code: str
) -> None:
    first = await record_click(client, publishable, code, visitor_id="v1")
    long_ago = datetime.now(UTC) - timedelta(hours=settings.duplicate_click_window_hours, minutes=5)
    window = timedelta(hours=settings.duplicate_click_window_hours)
    async with app.state.sessionmaker() as session:
        # The click, and the claims it took (app.tracking.models.ClickClaim), move back together.
        await session.execute(
            update(Click)
            .where(Click.id == UUID(first.json()["click_id"]))
            .values(occurred_at=long_ago)
        )
        moved = await session.execute(
            update(ClickClaim)
            .where(ClickClaim.claimed_by == UUID(first.json()["click_id"]))
            .values(claimed_at=long_ago, seen_until=long_ago + window)
        )
        assert moved.rowcount == 2  # its visitor id and its IP hash
        await session.commit()
    second = await record_click(client, publishable, code, visitor_id="v1")
    assert second.json()["is_duplicate"] is False


async def test_link_and_api_clicks_share_duplicate_detection(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    response = await record_click(client, publishable, code)
    assert response.json()["is_duplicate"] is True


async def test_ip_is_stored_only_as_a_hash(
    client: AsyncClient, other_ip_client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    await record_click(client, publishable, code)
    await record_click(other_ip_client, publishable, code)
    await other_ip_client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    stored = await clicks(app)
    assert len(stored) == 3
    for click, raw_ip in zip(stored, ["127.0.0.1", "203.0.113.77", "203.0.113.77"], strict=True):
        assert click.ip_hash and len(click.ip_hash) == 64
        values = [str(getattr(click, column.key)) for column in Click.__table__.columns]
        assert not any(raw_ip in value for value in values), values
    assert stored[0].ip_hash != stored[1].ip_hash
    assert stored[1].ip_hash == stored[2].ip_hash


async def test_click_on_unusable_code_is_not_attributable(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    await patch_code(client, admin, code, disabled=True)
    response = await record_click(client, publishable, code)
    assert response.status_code == 201
    assert response.json()["attributable"] is False
    [click] = await clicks(app)
    assert click.attributable is False


async def test_click_on_paused_program_is_refused(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    await pause(client, admin, program["id"])
    response = await record_click(client, publishable, code)
    assert_problem(response, 409, "program_not_active")
    assert await clicks(app) == []


async def test_click_on_unknown_code(client: AsyncClient, app: Any, publishable: str) -> None:
    response = await record_click(client, publishable, "NOPE23456")
    assert_problem(response, 404, "code_not_found")
    redeemed = await redeem(client, publishable, "NOPE23456", "c")
    assert_problem(redeemed, 404, "code_not_found")


async def test_nul_in_a_body_is_refused_on_every_backend(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    # Postgres cannot store U+0000; the schemas refuse it so that SQLite answers the same.
    for unknown_code in ("NOPE\u0000", code):
        response = await record_click(client, publishable, unknown_code, visitor_id="v\u0000")
        assert_problem(response, 422, "validation_error")
    assert await clicks(app) == []
    redeemed = await redeem(client, publishable, code, "c\u0000")
    assert_problem(redeemed, 422, "validation_error")
    await assert_nothing_changed(app, code)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"is_bot": False}, id="is-bot"),
        pytest.param({"is_duplicate": False}, id="is-duplicate"),
        pytest.param({"attributable": True}, id="attributable"),
        pytest.param({"ip_hash": "x"}, id="ip-hash"),
        pytest.param({"customer_id": "c"}, id="customer-id"),
        pytest.param({"landing_url": "javascript:alert(1)"}, id="bad-landing-url"),
        pytest.param({"utm_source": "x" * 201}, id="long-utm"),
        pytest.param({"visitor_id": ""}, id="empty-visitor"),
    ],
)
async def test_click_refuses_bad_input(
    client: AsyncClient, app: Any, publishable: str, code: str, extra: dict[str, Any]
) -> None:
    response = await record_click(client, publishable, code, **extra)
    assert_problem(response, 422, "validation_error")
    assert await clicks(app) == []

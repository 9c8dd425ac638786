"""Referral links: the redirect with ref and click id, UTM, bots, unknown and unusable codes."""

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from httpx import AsyncClient

from tests.factories import (
    BROWSER_UA,
    auth,
    code_row,
    make_code,
    make_program,
    make_referrer,
    patch_code,
    redeem,
)

# PROGRAM and REFERRER shape the conftest program and referrer fixtures of this module.
from tests.tracking_helpers import (  # noqa: F401
    PROGRAM,
    REFERRER,
    clicks,
    code_fixture,
    pause,
)

# --- links -----------------------------------------------------------------------------------


async def test_link_redirects_with_ref_and_click_id(
    client: AsyncClient, app: Any, code: str
) -> None:
    response = await client.get(
        f"/r/{code.lower()}",
        params={"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "spring"},
        headers={"User-Agent": BROWSER_UA, "Referer": "https://blog.example.org/post"},
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "https",
        "shop.example.com",
        "/welcome",
    )
    query = parse_qs(location.query)
    assert query["lang"] == ["en"]  # the landing URL's own query is kept
    assert query["ref"] == [code]
    [click_id] = query["click_id"]

    [click] = await clicks(app)
    assert click.id == UUID(click_id)
    assert click.source == "link"
    assert (click.utm_source, click.utm_medium, click.utm_campaign) == (
        "newsletter",
        "email",
        "spring",
    )
    assert click.referring_url == "https://blog.example.org/post"
    assert click.user_agent == BROWSER_UA
    assert click.attributable is True
    assert click.is_bot is False
    assert click.is_duplicate is False
    assert click.customer_id is None
    row = await code_row(app, code)
    assert (click.code_id, click.referrer_id, click.program_id) == (
        row.id,
        row.referrer_id,
        row.program_id,
    )


async def test_link_without_utm_records_none(client: AsyncClient, app: Any, code: str) -> None:
    response = await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    assert response.status_code == 302
    [click] = await clicks(app)
    assert (click.utm_source, click.utm_medium, click.utm_campaign, click.referring_url) == (
        None,
        None,
        None,
        None,
    )


async def test_link_from_a_bot_is_flagged(client: AsyncClient, app: Any, code: str) -> None:
    ua = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    response = await client.get(f"/r/{code}", headers={"User-Agent": ua})
    assert response.status_code == 302
    [click] = await clicks(app)
    assert click.is_bot is True


async def test_unknown_link_is_an_html_page(client: AsyncClient, app: Any) -> None:
    response = await client.get("/r/NOPE23456")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "NOPE23456" in response.text
    assert await clicks(app) == []


async def test_unknown_link_with_nul_is_the_html_page(client: AsyncClient, app: Any) -> None:
    response = await client.get("/r/%00")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_link_with_nul_in_utm_still_redirects(
    client: AsyncClient, app: Any, code: str
) -> None:
    response = await client.get(
        f"/r/{code}?utm_source=%00&utm_medium=e%00mail", headers={"User-Agent": BROWSER_UA}
    )
    assert response.status_code == 302
    [click] = await clicks(app)
    assert (click.utm_source, click.utm_medium) == (None, "email")


async def test_unknown_link_page_escapes_the_code(client: AsyncClient) -> None:
    response = await client.get("/r/<img src=x onerror=alert(1)>")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<img" not in response.text
    assert "&lt;img" in response.text


async def test_link_replaces_a_ref_already_in_the_landing_url(
    client: AsyncClient, admin: str, app: Any
) -> None:
    program = await make_program(
        client, admin, landing_url="https://shop.example.com/?ref=stale&click_id=old&x=1"
    )
    referrer = await make_referrer(client, admin, program["id"], "r")
    code = referrer["default_code"]["code"]
    response = await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    query = parse_qs(urlsplit(response.headers["location"]).query)
    [click] = await clicks(app)
    assert query == {"x": ["1"], "ref": [code], "click_id": [str(click.id)]}


@pytest.mark.parametrize("change", ["disabled", "expired"])
async def test_link_of_unusable_code_redirects_without_ref(
    client: AsyncClient, admin: str, app: Any, code: str, change: str
) -> None:
    if change == "disabled":
        await patch_code(client, admin, code, disabled=True)
    else:
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        await patch_code(client, admin, code, expires_at=past)

    response = await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert query.get("ref") is None
    assert query["lang"] == ["en"]

    [click] = await clicks(app)
    assert click.attributable is False
    assert query["click_id"] == [str(click.id)]


async def test_link_of_exhausted_code_still_attributable(
    client: AsyncClient, admin: str, app: Any, referrer: dict[str, Any]
) -> None:
    limited = await make_code(client, admin, referrer["id"], max_redemptions=1)
    assert (await redeem(client, admin, limited["code"], "someone")).status_code == 201
    response = await client.get(f"/r/{limited['code']}", headers={"User-Agent": BROWSER_UA})
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["ref"] == [limited["code"]]


async def test_link_of_paused_program_redirects_plainly(
    client: AsyncClient, admin: str, app: Any, program: dict[str, Any], code: str
) -> None:
    await pause(client, admin, program["id"])
    response = await client.get(f"/r/{code}", headers={"User-Agent": BROWSER_UA})
    assert response.status_code == 302
    assert response.headers["location"] == program["landing_url"]
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert "click_id" not in query and "ref" not in query
    assert await clicks(app) == []


async def test_link_needs_no_key_and_ignores_a_bad_one(
    client: AsyncClient, app: Any, code: str
) -> None:
    response = await client.get(f"/r/{code}", headers=auth("rk_sec_wrong"))
    assert response.status_code == 302
    assert len(await clicks(app)) == 1

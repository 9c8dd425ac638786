"""The hosted referrer portal in a real browser, opened through a magic link.

The service runs under uvicorn (tests/test_dashboard_browser.py `live_server`); the merchant's
backend (httpx with a secret key) asks it for a portal link, and headless Chromium opens that
link, on a desktop and on a 390 px phone. The token leaves the address bar and stays in the
tab's sessionStorage only; every number the page shows is the `/v1/me…` API's; a leaderboard
name set in the page is on the leaderboard; expired, revoked, missing and signed-out links
show the page that asks for a new link. No console error, no CSP violation, no request
leaves the service, and the token travels only to `/v1/me…`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from httpx import AsyncClient

from app.dashboard.router import CONTENT_SECURITY_POLICY
from tests.factories import auth
from tests.session_factories import set_session_expiry
from tests.storefront_fixtures import DESKTOP, chromium
from tests.test_dashboard_browser import MISSING, OUTPUT, REQUIRED, live_server
from tests.widget_fixtures import (
    PHONE,
    Page,
    assert_fits_the_phone,
    assert_widget_matches,
    open_page,
    referrer_program,
)

pytestmark = pytest.mark.skipif(
    MISSING is not None and not REQUIRED, reason=f"browser test: {MISSING}"
)

TOKEN_STORAGE = "referral-portal.token"


@dataclass
class Portal:
    api: httpx.AsyncClient  # the merchant's backend: a secret (admin) key, on the live server
    base: str
    program: dict[str, Any]
    alice: dict[str, Any]
    bob: dict[str, Any]

    async def link(self, referrer: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /v1/referrers/{id}/portal-links, as the merchant's backend does."""
        referrer_id = (referrer or self.alice)["id"]
        response = await self.api.post(f"/v1/referrers/{referrer_id}/portal-links")
        assert response.status_code == 201, response.text
        link: dict[str, Any] = response.json()
        return link

    async def me(self, token: str, path: str = "", **params: Any) -> Any:
        response = await self.api.get(f"/v1/me{path}", params=params, headers=auth(token))
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def portal(client: AsyncClient, app: Any) -> AsyncIterator[Portal]:
    world = await referrer_program(client, app)
    with live_server() as base:
        headers = auth(world["admin"])
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as api:
            found = Portal(api, base, world["program"], world["alice"], world["bob"])
            bob_token = (await found.link(found.bob))["token"]
            named = await api.patch(
                "/v1/me", json={"leaderboard_name": "Bob S."}, headers=auth(bob_token)
            )
            assert named.status_code == 200, named.text
            yield found


async def open_portal(tab: Page, url: str) -> None:
    answer = await tab.page.goto(url)
    assert answer is not None and answer.status == 200
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "Northwind" not in await answer.text()  # public markup: the data comes with the token


async def wait_ready(tab: Page) -> None:
    await tab.page.wait_for_selector("#main[data-state=ready]")
    await tab.page.wait_for_selector("#friends[data-state=ready]")
    await tab.page.wait_for_selector("#leaderboard[data-state=ready]")
    await tab.page.wait_for_selector("referral-share[data-state=ready]")


async def test_the_portal_through_a_magic_link(client: AsyncClient, app: Any) -> None:
    async with portal(client, app) as site, chromium() as browser:
        for device, options in (("desktop", DESKTOP), ("phone", PHONE)):
            link = await site.link()
            url, token = link["url"], link["token"]
            assert url == f"{site.base}/portal#token={token}"
            tab = await open_page(browser, (site.base,), **options)
            await open_portal(tab, url)
            await wait_ready(tab)
            await _check_token_handling(tab, site, token)
            await _check_numbers(tab, site, token)
            if device == "desktop":
                await _check_leaderboard_name(tab, site, token)
                OUTPUT.mkdir(exist_ok=True)
                await tab.page.screenshot(path=str(OUTPUT / "portal.png"), full_page=True)
                # A reload keeps the tab's session (the token is in sessionStorage).
                await tab.page.reload()
                await wait_ready(tab)
            else:
                await assert_fits_the_phone(tab.page)
                await tab.page.screenshot(path=str(OUTPUT / "portal-phone.png"))
                await tab.page.screenshot(
                    path=str(OUTPUT / "portal-phone-full.png"), full_page=True
                )
                # Sign out: the token is dead, and the page says how to come back.
                await tab.page.click("#signout")
                await tab.page.wait_for_selector("#main[data-state=gone][data-reason=signed_out]")
                assert await tab.page.evaluate(f"sessionStorage.getItem('{TOKEN_STORAGE}')") is None
                ended = await site.api.get("/v1/me", headers=auth(token))
                assert ended.status_code == 401 and ended.json()["code"] == "session_revoked"
            tab.assert_clean()
            _assert_token_only_to_me(tab, site.base, token)
            await tab.context.close()


async def _check_token_handling(tab: Page, site: Portal, token: str) -> None:
    page = tab.page
    assert page.url == f"{site.base}/portal"  # the fragment is gone from the address bar
    assert await page.evaluate("location.hash") == ""
    # about:blank, then the portal: the entry was replaced, not pushed (Back cannot show it).
    assert await page.evaluate("history.length") == 2
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_STORAGE}')") == token
    assert await page.evaluate("sessionStorage.length") == 1
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""
    assert await tab.context.cookies() == []
    # The token is in no attribute of the page (the widget got it as a property).
    assert token not in await page.content()


def _assert_token_only_to_me(tab: Page, base: str, token: str) -> None:
    assert tab.requests and all(url.startswith(base + "/") for _, url in tab.requests)
    for url, authorization in tab.authorizations:
        assert urlsplit(url).path.startswith("/v1/me"), url
        assert authorization == f"Bearer {token}"
    assert token not in " ".join(url for _, url in tab.requests)  # never in a URL on the wire


async def _check_numbers(tab: Page, site: Portal, token: str) -> None:
    page = tab.page
    me = await site.me(token)
    assert await page.inner_text("#program-name") == "Northwind Coffee friends"
    assert await page.inner_text("#greeting") == "Hi Alice"
    await assert_widget_matches(page, "#share", site.api, token, rewards_shown=100)

    friends = (await site.me(token, "/referrals", limit=100))["data"]
    assert len(friends) == 4
    rows = page.locator("#friends-list li")
    assert await rows.count() == len(friends)
    for index, friend in enumerate(reversed(friends)):  # newest first
        row = rows.nth(index)
        assert await row.get_attribute("data-referral") == friend["id"]
        assert await row.get_attribute("data-status") == friend["status"]
        assert await row.get_attribute("data-reason") == (friend["reason"] or "")
        assert friend["friend"] in await row.inner_text()
        assert friend["explanation"] in await row.inner_text()
    statuses = sorted(friend["status"] for friend in friends)
    assert statuses == ["redeemed", "refunded", "rewarded", "rewarded"]
    for status in set(statuses):
        shown = page.locator(f"#friends-counts [data-status={status}] dd")
        assert await shown.get_attribute("data-value") == str(statuses.count(status))
    assert "frank" not in await page.inner_text("#friends")  # masked: f***@e***.com

    board = await site.me(token, "/leaderboard", limit=10)
    assert await page.get_attribute("#rank", "data-rank") == str(board["you"]["rank"])
    assert f"#{board['you']['rank']}" in await page.inner_text("#rank")
    entries = page.locator("#board-list li[data-rank]")
    assert await entries.count() == len(board["top"])
    for index, entry in enumerate(board["top"]):
        row = entries.nth(index)
        assert await row.get_attribute("data-rank") == str(entry["rank"])
        assert await row.get_attribute("data-you") == str(entry["is_you"]).lower()
        assert await row.get_attribute("data-successful") == str(entry["successful_referrals"])
        assert entry["name"] in await row.inner_text()
    assert board["top"][0]["name"] == "Bob S." and not board["top"][0]["is_you"]
    assert me["referrer"]["leaderboard_name"] is None


async def _check_leaderboard_name(tab: Page, site: Portal, token: str) -> None:
    page = tab.page
    await page.fill("#leaderboard-name", "  Alice L.  ")
    await page.click("#save-name")
    await page.wait_for_selector("#name-status:has-text('Saved')")
    assert (await site.me(token))["referrer"]["leaderboard_name"] == "Alice L."
    you = page.locator("#board-list li[data-you=true]")
    await you.filter(has_text="Alice L. (you)").wait_for()
    board = await site.me(token, "/leaderboard", limit=10)
    assert [e["name"] for e in board["top"] if e["is_you"]] == ["Alice L."]
    assert await page.input_value("#leaderboard-name") == "Alice L."

    # A name the API refuses (a right-to-left override) is told, and nothing changes.
    await page.fill("#leaderboard-name", "Alice\u202eL")
    await page.click("#save-name")
    await page.wait_for_selector("#name-status.bad")
    tab.forgive(422)
    assert (await site.me(token))["referrer"]["leaderboard_name"] == "Alice L."

    # Hidden again: anonymised on the board.
    await page.click("#clear-name")
    await page.wait_for_selector("#name-status:has-text('anonymously')")
    assert (await site.me(token))["referrer"]["leaderboard_name"] is None
    assert "Alice L." not in await page.inner_text("#board-list")
    assert await page.is_hidden("#clear-name")


async def test_expired_revoked_and_missing_links_ask_for_a_new_one(
    client: AsyncClient, app: Any
) -> None:
    async with portal(client, app) as site, chromium() as browser:
        expired = await site.link()
        await set_session_expiry(app, expired["session_id"], datetime.now(UTC) - timedelta(1))
        revoked = await site.link()
        answer = await site.api.post(f"/v1/referrer-sessions/{revoked['session_id']}/revoke")
        assert answer.status_code == 200
        for url, reason, title in (
            (expired["url"], "session_expired", "This link has expired"),
            (revoked["url"], "session_revoked", "This link is no longer valid"),
            (f"{site.base}/portal#token=rk_ref_nothing", "unauthorized", "This link is not valid"),
            (f"{site.base}/portal", "missing", "Open your link again"),
        ):
            for options in (DESKTOP, PHONE):
                tab = await open_page(browser, (site.base,), **options)
                await open_portal(tab, url)
                page = tab.page
                await page.wait_for_selector(f"#main[data-state=gone][data-reason={reason}]")
                assert await page.inner_text("#gone-title") == title
                assert "new link" in await page.inner_text("#gone-text")
                assert await page.is_hidden("#portal")
                assert page.url == f"{site.base}/portal"
                assert await page.evaluate("sessionStorage.length") == 0
                if options is PHONE:
                    await assert_fits_the_phone(page)
                # The browser logs the service's 401 answers; nothing else may be logged.
                tab.forgive(401)
                tab.assert_clean()
                await tab.context.close()

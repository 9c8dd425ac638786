"""The share widget in a real browser, on a shop of another origin, under a strict CSP.

The service runs under uvicorn on 127.0.0.1; a fixture shop on `localhost` (another origin,
tests/widget_fixtures.py) loads `/js/v2/widget.js` with its SRI hash, under a CSP that allows
scripts only from the service and its own nonce, connections only to the service and itself,
images only from the service (the QR code, scanned back to the link), and no style for the
widget. Its backend mints the referrer session token with a secret key, as the README's samples
do, and renders `<referral-share token="…">`; its cart page renders `<referral-redeem>` with the
customer's id (and a signed customer token) next to the referral snippet. Desktop and a 390 px
phone; no console error or CSP violation anywhere, and the widget's calls go to the service
only.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.keys.service import hash_key
from app.referrer_sessions.models import ReferrerSession
from tests.factories import auth, db_all, make_key
from tests.session_factories import set_session_expiry
from tests.storefront_fixtures import DESKTOP, chromium
from tests.test_dashboard_browser import MISSING, OUTPUT, REQUIRED, live_server
from tests.widget_fixtures import (
    NO_CLIPBOARD,
    PHONE,
    SHARE_STUB,
    Page,
    Shop,
    assert_fits_the_phone,
    assert_widget_matches,
    open_page,
    referrer_program,
    shop_server,
)

pytestmark = pytest.mark.skipif(
    MISSING is not None and not REQUIRED, reason=f"browser test: {MISSING}"
)

DEVICES = (("desktop", DESKTOP), ("phone", PHONE))
OFFER = "10% off your first order"


@asynccontextmanager
async def storefront(client: AsyncClient, app: Any) -> AsyncIterator[Shop]:
    """The program (widget redemptions need a click or a customer token) and its shop."""
    world = await referrer_program(client, app, redemption_proof="click_or_token")
    program_id = world["program"]["id"]
    with live_server() as api, shop_server(api, world) as shop:
        changed = await client.patch(
            f"/v1/programs/{program_id}",
            json={"allowed_origins": [shop.base], "landing_url": f"{shop.base}/cart"},
            headers=auth(world["admin"]),
        )
        assert changed.status_code == 200, changed.text
        shop.key = await make_key(app, "publishable", [UUID(program_id)])
        secret = await client.post(
            f"/v1/programs/{program_id}/customer-token-secrets", headers=auth(world["admin"])
        )
        assert secret.status_code == 201, secret.text
        shop.token_secret = secret.json()["secret"]
        yield shop


async def events(tab: Page, name: str) -> list[Any]:
    found: list[list[Any]] = await tab.page.evaluate("window.events")
    return [detail for event, detail in found if event == name]


def assert_calls_only_the_service(tab: Page, shop: Shop) -> None:
    for url, authorization in tab.authorizations:
        assert url.startswith(shop.api + "/v1/"), url
        assert authorization.startswith(("Bearer rk_ref_", "Bearer rk_pub_")), url


# --- <referral-share> ---------------------------------------------------------------------------


async def test_the_share_widget_shows_copies_and_shares_the_referrers_link(
    client: AsyncClient, app: Any
) -> None:
    async with storefront(client, app) as shop, chromium() as browser:
        for device, options in DEVICES:
            tab = await open_page(browser, (shop.base, shop.api), **options)
            await tab.context.grant_permissions(
                ["clipboard-read", "clipboard-write"], origin=shop.base
            )
            page = tab.page
            answer = await page.goto(f"{shop.base}/account?as=alice")
            assert answer is not None and answer.ok
            await page.wait_for_selector("#share[data-state=ready]")
            token = shop.minted[-1]
            async with httpx.AsyncClient(base_url=shop.api) as api:
                shown = await assert_widget_matches(page, "#share", api, token)
            share = shown["me"]["share"]
            # The token came as an attribute; the widget sent it to /v1/me… only.
            assert {url for url, _ in tab.authorizations} >= {f"{shop.api}/v1/me"}
            assert all(
                urlsplit(url).path.startswith("/v1/me") and value == f"Bearer {token}"
                for url, value in tab.authorizations
            )

            # Copy: the Clipboard API, and a polite live region says so.
            status = page.locator("#share [part=status]")
            assert await status.get_attribute("aria-live") == "polite"
            await page.click("#share [part~=copy]")
            await page.wait_for_selector("#share [part=status]:has-text('Link copied.')")
            assert await page.evaluate("navigator.clipboard.readText()") == share["link"]
            assert await events(tab, "referral-share:copy") == [{"link": share["link"]}]
            if device == "phone":
                await assert_fits_the_phone(page)
            OUTPUT.mkdir(exist_ok=True)
            name = "widget.png" if device == "desktop" else "widget-phone.png"
            await page.screenshot(path=str(OUTPUT / name), full_page=True)

            # Each channel opens its composer with the API's share URL.
            for channel in ("whatsapp", "x", "facebook", "linkedin"):
                async with page.expect_popup() as opened:
                    await page.click(f"#share a[data-channel={channel}]")
                popup = await opened.value
                assert popup.url == share[channel]["share_url"], channel
                await popup.close()
            told = await events(tab, "referral-share:share")
            assert [entry["channel"] for entry in told] == ["whatsapp", "x", "facebook", "linkedin"]

            # Keyboard: the copy button is a button, reachable with Tab, its focus visible.
            await page.focus("#share #link")
            await page.keyboard.press("Tab")
            focused = await page.eval_on_selector(
                "#share",
                "host => [host.shadowRoot.activeElement.getAttribute('part'),"
                " getComputedStyle(host.shadowRoot.activeElement).outlineStyle]",
            )
            assert focused == ["button copy", "solid"]
            assert_calls_only_the_service(tab, shop)
            tab.assert_clean()
            await tab.context.close()


async def test_web_share_clipboard_fallback_and_the_empty_state(
    client: AsyncClient, app: Any
) -> None:
    async with storefront(client, app) as shop, chromium() as browser:
        # A browser with the Web Share API and without the Clipboard API.
        tab = await open_page(
            browser, (shop.base, shop.api), init_script=SHARE_STUB + NO_CLIPBOARD, **PHONE
        )
        page = tab.page
        await page.goto(f"{shop.base}/account?as=alice")
        await page.wait_for_selector("#share[data-state=ready]")
        me = (
            await httpx.AsyncClient(base_url=shop.api).get("/v1/me", headers=auth(shop.minted[-1]))
        ).json()
        share = me["share"]
        assert await page.is_hidden("#share #channels")
        await page.click("#share [part~=share]")
        await page.wait_for_function("window.shared.length == 1")
        assert await page.evaluate("window.shared[0]") == {
            "title": share["email"]["subject"],
            "text": share["offer"],
            "url": share["link"],
        }
        more = page.locator("#share [part~=more]")
        assert await more.get_attribute("aria-expanded") == "false"
        await more.click()
        assert await more.get_attribute("aria-expanded") == "true"
        assert await page.is_visible("#share a[data-channel=whatsapp]")
        # No Clipboard API: the link is selected and copied with the editing command.
        await page.click("#share [part~=copy]")
        said = await page.locator("#share [part=status]").inner_text()
        assert said in ("Link copied.", "Link selected: copy it with Ctrl+C (⌘C).")
        selected = await page.eval_on_selector(
            "#share",
            "host => { const i = host.shadowRoot.getElementById('link');"
            " return i.value.slice(i.selectionStart, i.selectionEnd); }",
        )
        assert selected == share["link"]
        await assert_fits_the_phone(page)
        tab.assert_clean()
        await tab.context.close()

        # Carol's only code is disabled and she has no rewards: the empty states.
        tab = await open_page(browser, (shop.base, shop.api))
        await tab.page.goto(f"{shop.base}/account?as=carol")
        await tab.page.wait_for_selector("#share[data-state=ready]")
        text = await tab.page.inner_text("#share [part=card]")
        assert "You have no active referral code at the moment." in text
        assert "No rewards yet: they appear here when a friend buys." in text
        assert await tab.page.locator("#share #link").count() == 0
        tab.assert_clean()
        await tab.context.close()


async def test_loading_error_and_an_expired_session(client: AsyncClient, app: Any) -> None:
    async with storefront(client, app) as shop, chromium() as browser:
        tab = await open_page(browser, (shop.base, shop.api))
        page = tab.page
        # Loading, then an error the page can retry: the balance answers 500 once.
        release = asyncio.Event()

        async def failing_balance(route: Any) -> None:
            if route.request.method != "GET":
                await route.fallback()
                return
            await release.wait()
            await route.fulfill(
                status=500,
                content_type="application/problem+json",
                headers={"Access-Control-Allow-Origin": shop.base},
                body='{"status": 500, "code": "internal_error"}',
            )

        await page.route(f"{shop.api}/v1/me/balance", failing_balance)
        await page.goto(f"{shop.base}/account?as=alice")
        await page.wait_for_selector("#share[data-state=loading]")
        assert await page.get_attribute("#share [part=card]", "aria-busy") == "true"
        assert "Loading your referral link" in await page.inner_text("#share [part=card]")
        release.set()
        await page.wait_for_selector("#share[data-state=error]")
        assert "could not be loaded" in await page.inner_text("#share [role=alert]")
        await page.unroute(f"{shop.api}/v1/me/balance")
        await page.click("#share [part~=retry]")
        await page.wait_for_selector("#share[data-state=ready]")
        tab.forgive(500)
        tab.assert_clean()

        # An expired token: a clear message, and the event the page renews the token on.
        expired = shop.mint("alice")
        [row] = await db_all(
            app, select(ReferrerSession).where(ReferrerSession.token_hash == hash_key(expired))
        )
        await set_session_expiry(app, str(row.id), datetime.now(UTC) - timedelta(minutes=1))
        shop.expired_token = expired
        await page.goto(f"{shop.base}/account?as=alice&expired")
        await page.wait_for_selector("#share[data-state=expired]")
        assert await page.get_attribute("html", "data-expired") == "session_expired"
        message = await page.inner_text("#share [role=alert]")
        assert message.startswith("This referral session has ended.")
        minted = len(shop.minted)
        await page.goto(f"{shop.base}/account?as=alice&expired&renew")
        await page.wait_for_selector("#share[data-state=ready]")
        assert await page.get_attribute("html", "data-expired") == "session_expired"
        assert len(shop.minted) == minted + 1  # the page asked its backend for a new token
        fresh = shop.minted[-1]
        assert tab.authorizations[-1][1] == f"Bearer {fresh}"
        async with httpx.AsyncClient(base_url=shop.api) as api:
            await assert_widget_matches(page, "#share", api, fresh)
        tab.forgive(401)
        tab.assert_clean()
        await tab.context.close()


# --- <referral-redeem> --------------------------------------------------------------------------


async def check(tab: Page, code: str, state: str) -> str:
    await tab.page.fill("#redeem #code", code)
    await tab.page.click("#redeem [part~=check]")
    await tab.page.wait_for_selector(f"#redeem[data-state={state}]")
    return str(await tab.page.inner_text("#redeem [part=message]"))


async def apply(tab: Page, state: str) -> str:
    await tab.page.click("#redeem [part~=apply]")
    await tab.page.wait_for_selector(f"#redeem[data-state={state}]")
    return str(await tab.page.inner_text("#redeem [part=message]"))


async def friends_of(shop: Shop, referrer: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=shop.api) as api:
        answer = await api.get("/v1/me/referrals?limit=100", headers=auth(shop.mint(referrer)))
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


async def test_a_friend_checks_and_redeems_a_code(client: AsyncClient, app: Any) -> None:
    async with storefront(client, app) as shop, chromium() as browser:
        code = shop.world["alice"]["default_code"]["code"]
        bob_code = shop.world["bob"]["default_code"]["code"]
        for device, options in DEVICES:
            tab = await open_page(browser, (shop.base, shop.api), **options)
            page = tab.page
            # A signed-in customer: the shop's backend signed a customer token for them.
            customer = f"dave-{device}"
            await page.goto(f"{shop.base}/cart?customer={customer}&signed")
            assert await page.input_value("#redeem #code") == ""
            said = await check(tab, code.lower(), "valid")
            assert said == f"It gives you: {OFFER}"
            if device == "phone":
                OUTPUT.mkdir(exist_ok=True)
                await page.locator("main").screenshot(path=str(OUTPUT / "widget-redeem-phone.png"))
            said = await apply(tab, "redeemed")
            assert said == f"Code applied: {OFFER}"
            [redeemed] = await events(tab, "referral-redeem:redeemed")
            assert (redeemed["code"], redeemed["customer_id"]) == (code, customer)
            assert redeemed["click_id"] is None
            friends = await friends_of(shop, "alice")
            assert redeemed["referral_id"] in [friend["id"] for friend in friends]
            assert await page.is_disabled("#redeem [part~=check]")
            if device == "phone":
                await assert_fits_the_phone(page)

            # The same customer again, with another code: already referred.
            await page.reload()
            await check(tab, bob_code, "valid")
            said = await apply(tab, "refused")
            assert await page.get_attribute("#redeem", "data-refusal") == "already_referred"
            assert said == "You have already been referred, so this code cannot be applied."
            assert await page.is_hidden("#redeem [part~=apply]")
            tab.forgive(409)

            # No customer token and no click through the link: the program wants a proof.
            await page.goto(f"{shop.base}/cart?customer=erin-{device}")
            await check(tab, code, "valid")
            said = await apply(tab, "refused")
            assert await page.get_attribute("#redeem", "data-refusal") == (
                "redemption_proof_required"
            )
            assert said == "Please sign in (or open your friend's link) to apply this code."
            tab.forgive(422)

            # Unknown, disabled and malformed codes are refused before any redemption.
            said = await check(tab, "NOPE2345", "refused")
            assert said == "We don't know this code. Check it and try again."
            tab.forgive(404)
            said = await check(tab, shop.world["carol"]["default_code"]["code"], "refused")
            assert said == "This code is no longer active."
            said = await check(tab, "no spaces!", "refused")
            assert said == "A code has letters, digits and dashes only."
            refused = [entry["code"] for entry in await events(tab, "referral-redeem:refused")]
            assert refused == [
                "redemption_proof_required",
                "code_not_found",
                "code_disabled",
                "malformed",
            ]

            # Through the friend's link: the snippet's click is the proof, the code is filled in.
            landing = f"{shop.base}/cart?customer=fay-{device}"
            await client.patch(
                f"/v1/programs/{shop.world['program']['id']}",
                json={"landing_url": landing},
                headers=auth(shop.admin),
            )
            await page.goto(f"{shop.api}/r/{code}")
            await page.evaluate("() => window.referrals.ready")
            kept = await page.evaluate("referrals.attribution()")
            assert kept["code"] == code and kept["click_id"]
            await page.wait_for_load_state("load")
            assert await page.input_value("#redeem #code") == code
            await page.click("#redeem [part~=check]")
            await page.wait_for_selector("#redeem[data-state=valid]")
            await apply(tab, "redeemed")
            [redeemed] = await events(tab, "referral-redeem:redeemed")
            assert redeemed["click_id"] == kept["click_id"]
            assert redeemed["customer_id"] == f"fay-{device}"
            assert redeemed["referral_id"] in [f["id"] for f in await friends_of(shop, "alice")]
            assert_calls_only_the_service(tab, shop)
            tab.assert_clean()
            await tab.context.close()

"""The storefront snippet in a real browser, on a shop of another origin, under a strict CSP.

The service runs under uvicorn on 127.0.0.1; a fixture shop runs on `localhost` (another origin)
and loads `/js/v1/referrals.js` with its SRI hash, under a Content-Security-Policy that allows
scripts only from the service (and the page's nonce) and connections only to the service and
itself. Headless Chromium (Debian's package, driven by Playwright as in
tests/test_dashboard_browser.py) lands on the shop through `/r/{code}` and goes on to check
out; the values the snippet hands to checkout are then posted as the platforms would post the
purchase (signed Stripe and Shopify webhooks), and each purchase is attributed to the referrer.
"""

import re
import time
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.storefront.router import SCRIPT_PATH, snippet
from app.tracking.models import Click
from tests.factories import db_all
from tests.storefront_fixtures import (
    BLOCK_COOKIES,
    DAY,
    DESKTOP,
    PHONE,
    Program,
    Shop,
    Tab,
    assert_attributed_to,
    chromium,
    open_tab,
    set_model,
    shop_server,
    stored,
    storefront_program,
)
from tests.stripe_helpers import checkout_session, event, post_stripe
from tests.test_dashboard_browser import MISSING, REQUIRED, live_server
from tests.test_integrations_shopify import order, post_shopify

pytestmark = pytest.mark.skipif(
    MISSING is not None and not REQUIRED, reason=f"browser test: {MISSING}"
)

# --- the tests --------------------------------------------------------------------------------


async def test_a_shopper_from_a_referral_link_checks_out_attributed(
    client: AsyncClient, app: Any
) -> None:
    """/r/{code} → the shop → a second page → checkout: Payment Link, form and Shopify cart
    all carry the referral, and each purchase is attributed to the referrer. Desktop and phone."""
    with shop_server() as shop, live_server() as api:
        shop.api = api
        program = await storefront_program(client, app, shop)
        async with chromium() as browser:
            for device, options in (("desktop", DESKTOP), ("phone", PHONE)):
                tab = await open_tab(browser, shop, **options)
                await _referred_checkout(client, app, shop, program, tab, device)
                tab.assert_clean()
                await tab.context.close()


async def _referred_checkout(
    client: AsyncClient, app: Any, shop: Shop, program: Program, tab: Tab, device: str
) -> None:
    page, code = tab.page, program.alice_code
    await tab.goto(f"{shop.api}/r/{code}")
    landed = urlsplit(page.url)
    assert landed.netloc == urlsplit(shop.base).netloc and landed.path == "/shop/welcome"
    click_id = parse_qs(landed.query)["click_id"][0]
    assert await page.get_attribute("html", "data-shop") == "ready"  # the nonce'd script ran
    if device == "phone":
        assert await page.evaluate("innerWidth") == 390

    await tab.follow("#next")
    assert urlsplit(page.url).path == "/shop/products"
    cookie = (await tab.cookies())["referral"]
    assert cookie["domain"] == "localhost" and cookie["path"] == "/"
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False and cookie["httpOnly"] is False  # http here; see below
    assert abs(cookie["expires"] - (time.time() + 30 * DAY)) < 120  # the program's window
    kept = stored(cookie)
    assert kept["code"] == code and kept["click_id"] == click_id
    assert kept["model"] == "last_touch"
    assert re.fullmatch(r"[0-9a-f]{32}", kept["visitor_id"]), kept
    attribution = await tab.attribution()
    assert attribution == {"code": code, "click_id": click_id, "visitor_id": kept["visitor_id"]}
    assert await page.evaluate("localStorage.length") == 0  # the cookie was enough

    # The click that /r/ recorded is the one kept, and a browser's click counts.
    [click] = await db_all(app, select(Click).where(Click.id == UUID(click_id)))
    assert (click.source, click.referrer_id, click.is_bot) == (
        "link",
        UUID(program.alice["id"]),
        False,
    )

    # Stripe Payment Links: decorated in the page, and by the helper.
    link = await page.get_attribute("#buy", "href")
    assert link is not None
    link_query = parse_qs(urlsplit(link).query)
    assert link_query == {"prefilled_email": ["bob@example.com"], "client_reference_id": [code]}
    assert link.startswith("https://buy.stripe.com/test_4gw5mQ8Xk?")
    own = await page.get_attribute("#own-domain", "href")
    assert own == f"https://pay.example.com/b/test_7sI3fa?client_reference_id={code}"
    untouched = await page.get_attribute("#not-ours", "href")
    assert untouched == "https://buy.stripe.com/test_off?client_reference_id=order-17"
    helper = await page.evaluate(
        "referrals.stripeLink('https://buy.stripe.com/test_9AQ?locale=fr')"
    )
    assert helper == f"https://buy.stripe.com/test_9AQ?locale=fr&client_reference_id={code}"
    filled = await page.evaluate(
        "() => Object.fromEntries(new FormData(referrals.fillForm(document.createElement('form'))))"
    )
    assert filled == {
        "referral_code": code,
        "click_id": click_id,
        "visitor_id": kept["visitor_id"],
    }

    # The checkout form: filled on submit, posted to the shop.
    await tab.follow("#next")
    await tab.follow("#pay")
    assert await page.inner_text("h1") == "Thank you"
    assert shop.posts[-1] == {
        "email": "carol@example.com",
        "referral_code": code,
        "click_id": click_id,
        "visitor_id": kept["visitor_id"],
    }

    # Shopify: the cart attributes that become the order's note attributes.
    cart = await page.evaluate("referrals.shopifyCart()")
    assert cart["attributes"] == {"referral_code": code, "click_id": click_id}
    assert shop.carts[-1] == {"attributes": {"referral_code": code, "click_id": click_id}}

    # The purchases, as the platforms post them: each attributed to alice.
    paid_by_link = checkout_session(
        id=f"cs_test_link_{device}",
        client_reference_id=link_query["client_reference_id"][0],
        customer=f"cus_link_{device}",
        payment_intent=f"pi_link_{device}",
        payment_link="plink_1PZ8bqLkdIwHu7ix",
    )
    answer = await post_stripe(
        client,
        program.id,
        event("checkout.session.completed", paid_by_link, f"evt_link_{device}"),
    )
    await assert_attributed_to(client, program, answer, program.alice)

    # The shop's backend makes a Checkout Session from the posted form, metadata as documented.
    form = shop.posts[-1]
    paid_by_form = checkout_session(
        id=f"cs_test_form_{device}",
        customer=None,
        payment_intent=f"pi_form_{device}",
        metadata={
            "referral_code": form["referral_code"],
            "click_id": form["click_id"],
            "customer_id": f"shop-customer-{device}",
        },
    )
    answer = await post_stripe(
        client,
        program.id,
        event("checkout.session.completed", paid_by_form, f"evt_form_{device}"),
    )
    conversion = await assert_attributed_to(client, program, answer, program.alice)
    assert conversion["customer_id"] == f"shop-customer-{device}"

    order_id = 4_000_000 + len(device)
    shopify_order = order(
        id=order_id,
        admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
        note_attributes=[
            {"name": name, "value": value} for name, value in cart["attributes"].items()
        ],
        customer={"id": 9_000_000 + len(device), "email": f"{device}@example.com"},
        email=f"{device}@example.com",
    )
    answer = await post_shopify(
        client, program.id, "orders/create", shopify_order, webhook_id=f"shopify-{device}"
    )
    await assert_attributed_to(client, program, answer, program.alice)

    # Last touch (the program's model): a later link replaces the referral, same visitor.
    await tab.goto(f"{shop.api}/r/{program.bob_code}")
    later = await tab.attribution()
    assert later["code"] == program.bob_code
    assert later["click_id"] not in (None, click_id)
    assert later["visitor_id"] == kept["visitor_id"]


async def test_a_code_shared_as_text_and_first_touch(client: AsyncClient, app: Any) -> None:
    """?ref=CODE without click_id records the click (CORS, publishable key) and keeps its id;
    under first touch a later code does not replace the first; an unknown code is not kept."""
    with shop_server() as shop, live_server() as api:
        shop.api = api
        program = await storefront_program(client, app, shop)
        async with chromium() as browser:
            tab = await open_tab(browser, shop)
            code = program.alice_code
            await tab.goto(f"{shop.base}/shop/welcome?ref={code}&utm_source=newsletter")
            found = await tab.attribution()
            assert found["code"] == code and found["click_id"] is not None
            assert ("POST", f"{api}/v1/clicks") in tab.api_calls(api)
            [click] = await db_all(app, select(Click).where(Click.id == UUID(found["click_id"])))
            assert click.source == "api" and click.visitor_id == found["visitor_id"]
            assert click.utm_source == "newsletter" and click.referrer_id == UUID(
                program.alice["id"]
            )
            assert click.landing_url == f"{shop.base}/shop/welcome?ref={code}&utm_source=newsletter"
            assert not click.is_bot
            await tab.follow("#next")
            assert await tab.attribution() == found
            tab.assert_clean()
            await tab.context.close()

            # First touch: the program's model, learnt from the code lookup.
            await set_model(client, program, "first_touch")
            tab = await open_tab(browser, shop)
            await tab.goto(f"{api}/r/{code}")
            first = await tab.attribution()
            await tab.goto(f"{api}/r/{program.bob_code}")
            assert await tab.attribution() == first
            await tab.goto(f"{shop.base}/shop/welcome?ref={program.bob_code}")
            assert await tab.attribution() == first
            assert stored((await tab.cookies())["referral"])["model"] == "first_touch"
            # Both later visits were still recorded, with the same visitor.
            bob_clicks = await db_all(
                app, select(Click).where(Click.referrer_id == UUID(program.bob["id"]))
            )
            assert sorted(c.source for c in bob_clicks) == ["api", "link"]
            assert {c.visitor_id for c in bob_clicks if c.source == "api"} == {first["visitor_id"]}
            tab.assert_clean()
            await tab.context.close()

            # Last touch again: an unknown code replaces nothing (the service answers 404).
            await set_model(client, program, "last_touch")
            tab = await open_tab(browser, shop)
            await tab.goto(f"{api}/r/{code}")
            kept = await tab.attribution()
            await tab.goto(f"{shop.base}/shop/welcome?ref=NOPE2345")
            assert await tab.attribution() == kept
            assert tab.errors and all("404" in error for error in tab.errors), tab.errors
            assert tab.violations == []
            await tab.context.close()


async def test_consent_storage_fallback_and_cookie_options(client: AsyncClient, app: Any) -> None:
    """data-consent="required" stores and sends nothing until consent(true), and consent(false)
    clears it; blocked cookies fall back to localStorage; an https shop gets a Secure cookie
    with the name, domain and lifetime of its data- attributes; a changed script is refused."""
    with shop_server() as shop, live_server() as api:
        shop.api = api
        program = await storefront_program(client, app, shop)
        code = program.alice_code
        async with chromium() as browser:
            tab = await open_tab(browser, shop)
            page = tab.page
            await tab.goto(f"{shop.base}/consent/welcome?ref={code}")
            nothing = {"code": None, "click_id": None, "visitor_id": None}
            assert await tab.attribution() == nothing
            assert await tab.cookies() == {}
            assert await page.evaluate("localStorage.length") == 0
            assert tab.api_calls(api) == []
            await page.evaluate("referrals.consent(true)")
            given = await tab.attribution()
            assert given["code"] == code and given["click_id"] is not None
            assert ("POST", f"{api}/v1/clicks") in tab.api_calls(api)
            assert "referral" in await tab.cookies()
            # The next page has no consent call yet: the stored referral is the earlier consent.
            await tab.follow("#next")
            assert await tab.attribution() == given
            await page.evaluate("referrals.consent(false)")
            assert await tab.attribution() == nothing
            assert await tab.cookies() == {}
            assert await page.evaluate("localStorage.length") == 0
            tab.assert_clean()
            await tab.context.close()

            # Cookies blocked (by the browser or a privacy tool): localStorage keeps it.
            tab = await open_tab(browser, shop, init_script=BLOCK_COOKIES)
            await tab.goto(f"{api}/r/{code}")
            await tab.follow("#next")
            found = await tab.attribution()
            assert found["code"] == code and found["click_id"] is not None
            saved = await tab.page.evaluate("localStorage.getItem('referral')")
            assert dict(parse_qsl(saved))["click_id"] == found["click_id"]
            assert await tab.cookies() == {}
            tab.assert_clean()
            await tab.context.close()

            # An https shop with its own cookie settings and no key (no service calls).
            tab = await open_tab(browser, shop)
            await _https_shop(tab, api, code, program.bob_code)
            tab.assert_clean()
            await tab.context.close()

            # A script that is not the one the page pinned is not run.
            tab = await open_tab(browser, shop)
            await tab.page.goto(f"{shop.base}/tampered/welcome?ref={code}")
            assert await tab.page.evaluate("typeof window.referrals") == "undefined"
            assert any("integrity" in error for error in tab.errors), tab.errors
            # The listener hears violations (so the empty lists above mean something).
            await tab.page.evaluate(
                "document.head.append(Object.assign(document.createElement('script'),"
                " {textContent: 'window.injected = 1'}))"
            )
            await tab.page.wait_for_timeout(200)
            assert await tab.page.evaluate("typeof window.injected") == "undefined"
            assert any(v.startswith("script-src-elem inline") for v in tab.violations), (
                tab.violations
            )
            await tab.context.close()


async def _https_shop(tab: Tab, api: str, code: str, later_code: str) -> None:
    script = snippet()
    tag = (
        f'<script src="https://shop.test/js/v1/referrals.js" integrity="{script.integrity}" '
        'crossorigin="anonymous" data-cookie="shop_ref" data-cookie-domain="shop.test" '
        'data-window-days="7" data-attribution="first_touch"></script>'
    )

    async def serve(route: Any) -> None:
        if urlsplit(route.request.url).path == SCRIPT_PATH:
            await route.fulfill(
                body=script.body,
                content_type="text/javascript; charset=utf-8",
                headers={"Access-Control-Allow-Origin": "*"},
            )
        else:
            await route.fulfill(
                body=f"<!doctype html><title>shop</title>{tag}<h1>Shop</h1>",
                content_type="text/html; charset=utf-8",
                headers={
                    "Content-Security-Policy": "default-src 'none'; "
                    "script-src https://shop.test; connect-src 'self'"
                },
            )

    await tab.context.route("https://shop.test/**", serve)
    await tab.goto(f"https://shop.test/welcome?ref={code}")
    cookie = (await tab.cookies())["shop_ref"]
    assert cookie["secure"] is True and cookie["sameSite"] == "Lax"
    assert cookie["domain"] == ".shop.test"
    assert abs(cookie["expires"] - (time.time() + 7 * DAY)) < 120
    assert stored(cookie)["model"] == "first_touch"
    await tab.goto(f"https://shop.test/other?ref={later_code}")
    found = await tab.attribution()
    assert found["code"] == code and found["click_id"] is None
    assert tab.api_calls(api) == []

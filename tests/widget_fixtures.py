"""Fixtures of the share widget and portal browser tests (tests/test_widget_browser.py,
tests/test_portal_browser.py): a browser page that records what went wrong, a referrer with
friends and rewards in every state, what the widget must show for a session token, and a
fixture shop on another origin whose backend mints the tokens.
"""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx
from httpx import AsyncClient

from app.programs.tokens import sign
from app.storefront.router import SCRIPT_PATH, WIDGET_PATH, snippet, widget
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer, redeem
from tests.money_factories import add_rule, post_refund, purchase
from tests.storefront_fixtures import DESKTOP, VIOLATION_LISTENER
from tests.test_qr import decode_png

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
CHANNELS = ("whatsapp", "email", "sms", "x", "facebook", "linkedin")
SHARE_STUB = """
window.shared = [];
Object.defineProperty(Navigator.prototype, "share", {
  configurable: true, value(data) { window.shared.push(data); return Promise.resolve(); },
});
"""
NO_CLIPBOARD = """
Object.defineProperty(Navigator.prototype, "clipboard", { configurable: true, get() {} });
"""


# --- a browser page that records what went wrong ---------------------------------------------


@dataclass
class Page:
    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[tuple[str, str]] = field(default_factory=list)

    def forgive(self, status: int) -> None:
        """Chromium logs each 4xx/5xx answer of a fetch; drop those of an expected refusal."""
        self.errors[:] = [e for e in self.errors if f"status of {status}" not in e]

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.violations == [], self.violations


async def open_page(
    browser: Any, origins: tuple[str, ...], *, init_script: str = "", **options: Any
) -> Page:
    """A fresh context that may reach only `origins`; the share sites answer a stub page."""
    context = await browser.new_context(
        **(DESKTOP | options), user_agent=BROWSER_UA, locale="en-US"
    )
    tab = Page(context, await context.new_page())
    tab.page.set_default_timeout(30_000)
    local = tuple(origin + "/" for origin in origins)
    stubs = ("https://wa.me/", "https://twitter.com/", "https://www.facebook.com/")

    async def only_local(route: Any) -> None:
        url = route.request.url
        if url.startswith(local):
            await route.fallback()
        elif url.startswith(stubs) or url.startswith("https://www.linkedin.com/"):
            await route.fulfill(body="<title>share</title>", content_type="text/html")
        else:
            tab.errors.append(f"left the shop and the service: {url}")
            await route.abort()

    await context.route("**/*", only_local)
    await context.expose_function("reportViolation", lambda text: tab.violations.append(text))
    await context.add_init_script(VIOLATION_LISTENER + init_script)
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.page.on(
        "console",
        lambda message: tab.errors.append(message.text) if message.type == "error" else None,
    )

    def record(request: Any) -> None:
        tab.requests.append((request.method, request.url))
        if "authorization" in request.headers:
            tab.authorizations.append((request.url, request.headers["authorization"]))

    tab.page.on("request", record)
    return tab


async def assert_fits_the_phone(page: Any) -> None:
    """Nothing is wider than the 390 px screen, in the page or in a widget's shadow tree."""
    layout = await page.evaluate(
        """() => {
          const outside = [];
          const walk = (root) => root.querySelectorAll("*").forEach((node) => {
            const box = node.getBoundingClientRect();
            if (box.width && (box.left < -0.5 || box.right > innerWidth + 0.5)) {
              outside.push(node.localName + (node.id ? "#" + node.id : ""));
            }
            if (node.shadowRoot) walk(node.shadowRoot);
          });
          walk(document);
          return {width: document.documentElement.scrollWidth, inner: innerWidth, outside};
        }"""
    )
    assert layout["inner"] == 390
    assert layout["width"] <= layout["inner"] and layout["outside"] == [], layout


async def assert_qr_code_of(page: Any, host: str, api: str, share: dict[str, Any]) -> None:
    """The widget shows the service's QR image of the link, loaded, and it scans to the link."""
    image = page.locator(f"{host} [part=qr-image]")
    assert await image.get_attribute("src") == f"{api}/v1/codes/{share['code']}/qr.svg?size=160"
    assert await image.get_attribute("alt") == "QR code of your referral link"
    await image.evaluate("img => img.complete ? null : img.decode()")
    assert await image.evaluate("img => [img.naturalWidth, img.width]") == [160, 160]
    assert decode_png(await image.screenshot()) == [share["link"]]


def shown_money(amount: str, unit: str) -> str:
    assert unit == "USD"
    return "$" + format(Decimal(amount), ",")


async def assert_widget_matches(
    page: Any, host: str, api: httpx.AsyncClient, token: str, rewards_shown: int = 5
) -> dict[str, Any]:
    """The <referral-share> at `host` shows what /v1/me… answers for the token."""
    me, progress, balance, rewards = [
        (await api.get(f"/v1/me{path}", headers=auth(token))).json()
        for path in ("", "/progress", "/balance", "/rewards?limit=100")
    ]
    share = me["share"]
    assert await page.get_attribute(host, "data-state") == "ready"
    await assert_qr_code_of(page, host, str(api.base_url).rstrip("/"), share)
    assert await page.input_value(f"{host} #link") == share["link"]
    assert await page.inner_text(f"{host} [part=offer]") == f"Your friends get: {share['offer']}"
    for channel in CHANNELS:
        button = page.locator(f"{host} a[data-channel={channel}]")
        assert await button.get_attribute("href") == share[channel]["share_url"], channel
        web = share[channel]["share_url"].startswith("https://")
        assert await button.get_attribute("target") == ("_blank" if web else None)
    steps = page.locator(f"{host} [data-rule]")
    assert await steps.count() == len(progress["rules"]) > 0
    for index, rule in enumerate(progress["rules"]):
        step = steps.nth(index)
        assert await step.get_attribute("data-rule") == rule["rule_id"]
        assert await step.get_attribute("data-needed") == str(rule["referrals_needed"])
        assert await step.locator("p").inner_text() == rule["sentence"]
        bar = step.locator("progress")
        done = progress["successful_referrals"] - rule["current"]["from_referral"] + 1
        assert await bar.get_attribute("value") == str(done)
        assert await bar.get_attribute("max") == str(done + rule["referrals_needed"])
    for line in balance["balances"]:
        for column in ("pending", "approved", "paid"):
            cell = page.locator(f"{host} [data-unit={line['unit']}] [data-field={column}]")
            assert await cell.get_attribute("data-value") == line[column]
            assert await cell.inner_text() == shown_money(line[column], line["unit"])
    expected = list(reversed(rewards["data"]))[:rewards_shown]
    shown = page.locator(f"{host} li[data-reward]")
    assert await shown.count() == len(expected)
    for index, reward in enumerate(expected):
        row = shown.nth(index)
        assert await row.get_attribute("data-reward") == reward["id"]
        assert await row.get_attribute("data-status") == reward["status"]
        assert await row.get_attribute("data-amount") == reward["amount"]
        text = await row.inner_text()
        assert shown_money(reward["amount"], reward["unit"]) in text and reward["why"] in text
    return {"me": me, "progress": progress, "balance": balance, "rewards": rewards}


# --- the program ------------------------------------------------------------------------------


async def referrer_program(client: AsyncClient, app: Any, **program: Any) -> dict[str, Any]:
    """Alice has friends in every state and rewards in three; bob leads the board; carol's
    only code is disabled."""
    admin = await make_key(app)
    made = await make_program(client, admin, name="Northwind Coffee friends", **program)
    pid = made["id"]
    alice = await make_referrer(
        client, admin, pid, "alice", email="alice@example.com", name="Alice Liddell"
    )
    bob = await make_referrer(client, admin, pid, "bob", email="bob@example.com", name="Bob Stone")
    carol = await make_referrer(client, admin, pid, "carol", name="Carol Danvers")
    disabled = await client.patch(
        f"/v1/codes/{carol['default_code']['code']}", json={"disabled": True}, headers=auth(admin)
    )
    assert disabled.status_code == 200, disabled.text
    await add_rule(
        client,
        admin,
        pid,
        name="Friend bonus",
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        hold_days=14,
        tiers=[{"from_referral": 5, "amount": "15.00"}],
    )
    code, bob_code = alice["default_code"]["code"], bob["default_code"]["code"]
    # frank redeemed and bought (a pending reward); grace only redeemed.
    for customer, email in (("frank", "frank@example.com"), ("grace", "grace@example.org")):
        assert (await redeem(client, admin, code, customer, email=email)).status_code == 201
    await purchase(client, admin, made, "o-frank", "frank", "40.00")
    # heidi bought through the code: her reward was approved and paid.
    heidi = await purchase(client, admin, made, "o-heidi", "heidi", "60.00", code=code)
    for action in ("approve", "mark-paid"):
        path = f"/v1/rewards/{heidi['rewards'][0]['id']}/{action}"
        assert (await client.post(path, headers=auth(admin))).status_code == 200
    # ivan bought and was refunded in full.
    ivan = await purchase(client, admin, made, "o-ivan", "ivan", "30.00", code=code)
    assert (await post_refund(client, admin, ivan["id"])).status_code == 201
    # bob has more successful referrals than alice.
    for n in range(4):
        await purchase(client, admin, made, f"o-bob-{n}", f"bob-{n}", "25.00", code=bob_code)
    return {"admin": admin, "program": made, "alice": alice, "bob": bob, "carol": carol}


# --- the fixture shop -------------------------------------------------------------------------


@dataclass
class Shop:
    """A shop on http://localhost:PORT whose backend mints tokens from the service."""

    api: str
    admin: str  # the shop backend's secret (here an admin key of the program)
    world: dict[str, Any]
    base: str = ""
    key: str = ""  # the publishable key
    token_secret: str = ""
    expired_token: str = ""
    minted: list[str] = field(default_factory=list)

    def mint(self, referrer: str) -> str:
        """What the README's backend samples do: a session token for the logged-in referrer."""
        referrer_id = self.world[referrer]["id"]
        response = httpx.post(
            f"{self.api}/v1/referrers/{referrer_id}/sessions",
            json={"ttl_seconds": 3600},
            headers=auth(self.admin),
            timeout=30,
        )
        response.raise_for_status()
        token = str(response.json()["token"])
        self.minted.append(token)
        return token

    def csp(self, nonce: str) -> str:
        return "; ".join(
            (
                "default-src 'none'",
                f"script-src {self.api} 'nonce-{nonce}'",
                f"connect-src {self.api} 'self'",
                f"style-src 'nonce-{nonce}'",  # the shop's own style; the widget needs none
                f"img-src {self.api}",  # the widget's QR code, from the service
                "form-action 'self'",
                "base-uri 'none'",
                "frame-ancestors 'none'",
            )
        )

    def page(self, path: str, query: dict[str, str], nonce: str) -> str:
        tags = [
            f'<script src="{self.api}{WIDGET_PATH}" integrity="{widget().integrity}" '
            'crossorigin="anonymous" defer></script>'
        ]
        if path == "/account":
            token = self.expired_token if "expired" in query else self.mint(query["as"])
            renew = ' data-renew="as=' + query["as"] + '"' if "renew" in query else ""
            body = (
                '<h1>Your account</h1><p class="lede">Invite a friend, you both win.</p>'
                f'<referral-share id="share" token="{token}"{renew}></referral-share>'
            )
        else:
            tags.append(
                f'<script src="{self.api}{SCRIPT_PATH}" integrity="{snippet().integrity}" '
                f'crossorigin="anonymous" data-key="{self.key}" async></script>'
            )
            customer = query.get("customer", "")
            attributes = f'data-key="{self.key}"' + (
                f' customer-id="{customer}"' if customer else ""
            )
            if "signed" in query:
                program_id = UUID(self.world["program"]["id"])
                signed = sign(self.token_secret, program_id, customer, int(time.time()) + 600)
                attributes += f' customer-token="{signed}"'
            body = (
                "<h1>Your cart</h1><p class=lede>House blend, 250 g: $14.00</p>"
                f'<referral-redeem id="redeem" {attributes}></referral-redeem>'
            )
        style = (
            "body{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f6f3ee;color:#1f2933}"
            "main{max-width:560px;margin:0 auto;padding:20px 16px}h1{margin:0 0 4px;font-size:26px}"
            ".lede{margin:0 0 16px;color:#52606d}"
            "referral-share,referral-redeem{--referral-accent:#0f766e;--referral-radius:16px}"
        )
        listener = (
            "const share = document.getElementById('share');"
            "document.addEventListener('referral-share:expired', async (event) => {"
            "  document.documentElement.dataset.expired = event.detail.code;"
            "  if (!share.dataset.renew) return;"
            "  const answer = await fetch('/token?' + share.dataset.renew, {method: 'POST'});"
            "  share.token = (await answer.json()).token;"
            "});"
            "window.events = [];"
            "for (const name of ['referral-share:share', 'referral-share:copy', "
            "'referral-redeem:redeemed', 'referral-redeem:refused', 'referral-redeem:valid'])"
            "  document.addEventListener(name, (event) => events.push([name, event.detail]));"
        )
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Northwind Coffee</title>{''.join(tags)}"
            f'<style nonce="{nonce}">{style}</style></head><body><main>{body}</main>'
            f'<script nonce="{nonce}">{listener}</script></body></html>'
        )


def _handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(url.query, True).items()}
            nonce = secrets.token_urlsafe(16)
            html = shop.page(url.path, query, nonce).encode()
            self._send(html, "text/html; charset=utf-8", Content_Security_Policy=shop.csp(nonce))

        def do_POST(self) -> None:  # /token?as=alice: the page asks its backend for a new one
            query = parse_qs(urlsplit(self.path).query)
            body = json.dumps({"token": shop.mint(query["as"][0])}).encode()
            self._send(body, "application/json")

    return Handler


@contextmanager
def shop_server(api: str, world: dict[str, Any]) -> Iterator[Shop]:
    shop = Shop(api=api, admin=world["admin"], world=world)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(shop))
    shop.base = f"http://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield shop
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()

"""The storefront browser tests' kit: a fixture shop on another origin, Chromium, a program."""

import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import pytest
from httpx import AsyncClient

from app.storefront.router import SCRIPT_PATH, snippet
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer
from tests.money_factories import add_rule
from tests.stripe_helpers import connect
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, MISSING
from tests.test_integrations_shopify import SECRET as SHOPIFY_SECRET

DAY = 86400
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
PAYMENT_LINK = "https://buy.stripe.com/test_4gw5mQ8Xk?prefilled_email=bob%40example.com"
VIOLATION_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) =>
  window.reportViolation(`${event.effectiveDirective} ${event.blockedURI}`));
"""
BLOCK_COOKIES = """
Object.defineProperty(Document.prototype, "cookie", {
  configurable: true, get() { return ""; }, set(value) {},
});
"""


# --- the fixture shop -------------------------------------------------------------------------


@dataclass
class Shop:
    """A shop on http://localhost:PORT: pages under /{variant}/, its checkout records posts."""

    base: str = ""
    api: str = ""
    key: str = ""
    integrity: str = field(default_factory=lambda: snippet().integrity)
    posts: list[dict[str, str]] = field(default_factory=list)
    carts: list[dict[str, Any]] = field(default_factory=list)

    def csp(self, nonce: str) -> str:
        return "; ".join(
            (
                "default-src 'none'",
                f"script-src {self.api} 'nonce-{nonce}'",
                f"connect-src {self.api} 'self'",
                "img-src 'none'",
                "style-src 'none'",
                "form-action 'self'",
                "base-uri 'none'",
                "frame-ancestors 'none'",
            )
        )

    def page(self, variant: str, name: str, nonce: str) -> str:
        attributes = {
            "src": self.api + SCRIPT_PATH,
            "integrity": self.integrity,
            "crossorigin": "anonymous",
            "data-key": self.key,
        }
        if variant == "consent":
            attributes["data-consent"] = "required"
        if variant == "tampered":
            attributes["integrity"] = "sha384-" + "A" * 64
        tag = " ".join(f'{name}="{value}"' for name, value in attributes.items())
        bodies = {
            "welcome": '<h1>Welcome</h1><a id="next" href="products">Our coffee</a>',
            "products": (
                f'<a id="buy" href="{PAYMENT_LINK.replace("&", "&amp;")}">Buy now</a> '
                '<a id="own-domain" data-referrals="stripe" '
                'href="https://pay.example.com/b/test_7sI3fa">Buy (our domain)</a> '
                '<a id="not-ours" data-referrals="off" '
                'href="https://buy.stripe.com/test_off?client_reference_id=order-17">Gift</a> '
                '<a id="next" href="checkout">Checkout</a>'
            ),
            "checkout": (
                '<form id="checkout" method="post" action="checkout" data-referrals>'
                '<input name="email" type="email" value="carol@example.com">'
                '<button id="pay" type="submit">Pay</button></form>'
            ),
            "thanks": "<h1>Thank you</h1>",
        }
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{name}</title><script {tag} async></script>"
            # The page's own script, allowed by its nonce: the shop marks itself ready.
            f'<script nonce="{nonce}">document.documentElement.dataset.shop = "ready";</script>'
            f"</head><body>{bodies[name]}</body></html>"
        )


def _handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _page(self, variant: str, name: str) -> None:
            nonce = secrets.token_urlsafe(16)
            self._send(
                200,
                shop.page(variant, name, nonce).encode(),
                "text/html; charset=utf-8",
                Content_Security_Policy=shop.csp(nonce),
            )

        def do_GET(self) -> None:
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) == 2 and parts[1] in ("welcome", "products", "checkout"):
                self._page(parts[0], parts[1])
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            if path == "/cart/update.js":
                update = json.loads(body)
                shop.carts.append(update)
                answer = {"token": "c1-7a6b", "attributes": update["attributes"], "items": []}
                self._send(200, json.dumps(answer).encode(), "application/json")
            elif path.endswith("/checkout"):
                shop.posts.append(dict(parse_qsl(body.decode())))
                self._page(path.strip("/").split("/")[0], "thanks")
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


@contextmanager
def shop_server() -> Iterator[Shop]:
    shop = Shop()
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


# --- the browser ------------------------------------------------------------------------------


@dataclass
class Tab:
    """One browser context and its page, with what went wrong in them."""

    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    async def ready(self) -> None:
        """Wait until the snippet has dealt with the page (its service calls answered)."""
        await self.page.evaluate("() => window.referrals.ready")

    async def goto(self, url: str) -> None:
        answer = await self.page.goto(url)
        assert answer is not None and answer.ok, url
        await self.ready()

    async def follow(self, selector: str) -> None:
        async with self.page.expect_navigation():
            await self.page.click(selector)
        await self.ready()

    async def attribution(self) -> dict[str, str | None]:
        found: dict[str, str | None] = await self.page.evaluate("referrals.attribution()")
        return found

    async def cookies(self) -> dict[str, dict[str, Any]]:
        return {cookie["name"]: cookie for cookie in await self.context.cookies()}

    def api_calls(self, api: str) -> list[tuple[str, str]]:
        return [(method, url) for method, url in self.requests if url.startswith(api + "/v1/")]

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.violations == [], self.violations


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    if MISSING is not None:
        pytest.fail(f"the browser test must run here: {MISSING}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_tab(browser: Any, shop: Shop, *, init_script: str = "", **options: Any) -> Tab:
    """A fresh context (no cookies) that reaches only the shop and the service."""
    context = await browser.new_context(
        **(DESKTOP | options), user_agent=BROWSER_UA, locale="en-US"
    )
    tab = Tab(context, await context.new_page())
    tab.page.set_default_timeout(30_000)
    local = (shop.base + "/", shop.api + "/", "https://shop.test/")

    async def only_local(route: Any) -> None:
        if route.request.url.startswith(local):
            await route.fallback()
        else:
            tab.errors.append(f"left the shop and the service: {route.request.url}")
            await route.abort()

    await context.route("**/*", only_local)
    await context.expose_function("reportViolation", lambda text: tab.violations.append(text))
    await context.add_init_script(VIOLATION_LISTENER + init_script)
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.page.on(
        "console",
        lambda message: tab.errors.append(message.text) if message.type == "error" else None,
    )
    tab.page.on("request", lambda request: tab.requests.append((request.method, request.url)))
    return tab


# --- the program ------------------------------------------------------------------------------


@dataclass
class Program:
    admin: str
    id: str
    alice: dict[str, Any]
    bob: dict[str, Any]

    @property
    def alice_code(self) -> str:
        return str(self.alice["default_code"]["code"])

    @property
    def bob_code(self) -> str:
        return str(self.bob["default_code"]["code"])


async def storefront_program(client: AsyncClient, app: Any, shop: Shop) -> Program:
    """A program whose storefront is the shop: its key, Stripe and Shopify secrets, a rule."""
    admin = await make_key(app)
    program = await make_program(
        client, admin, landing_url=f"{shop.base}/shop/welcome", allowed_origins=[shop.base]
    )
    alice = await make_referrer(client, admin, program["id"], "alice", email="alice@example.com")
    bob = await make_referrer(client, admin, program["id"], "bob", email="robert@example.com")
    shop.key = await make_key(app, "publishable", [UUID(program["id"])])
    await connect(client, admin, program["id"])
    response = await client.post(
        f"/v1/programs/{program['id']}/integrations/shopify/secrets",
        json={"secrets": [SHOPIFY_SECRET]},
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text
    await add_rule(client, admin, program["id"], recipient="referrer", kind="percent", percent="10")
    return Program(admin, program["id"], alice, bob)


async def set_model(client: AsyncClient, program: Program, model: str) -> None:
    response = await client.patch(
        f"/v1/programs/{program.id}", json={"attribution_model": model}, headers=auth(program.admin)
    )
    assert response.status_code == 200, response.text


def stored(cookie: dict[str, Any]) -> dict[str, str]:
    return dict(parse_qsl(cookie["value"]))


async def assert_attributed_to(
    client: AsyncClient, program: Program, answer: Any, referrer: dict[str, Any]
) -> dict[str, Any]:
    """The platform's event became a conversion of the referrer, with their reward."""
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["outcome"] == "recorded", outcome
    conversion = (
        await client.get(f"/v1/conversions/{outcome['conversion_id']}", headers=auth(program.admin))
    ).json()
    assert conversion["status"] == "attributed", conversion
    assert conversion["referrer_id"] == referrer["id"]
    assert conversion["code"] == referrer["default_code"]["code"]
    assert [reward["referrer_id"] for reward in conversion["rewards"]] == [referrer["id"]]
    return dict(conversion)

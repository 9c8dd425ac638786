"""The dashboard in a real browser: headless Chromium, driven by Playwright, loads /dashboard from
a live uvicorn server on the suite's database (seeded with the demo seeder), and the numbers it
shows are exactly the API's: the funnel, the top referrer, a time-series point, the attribution
of recent conversions and a CSV export, each compared with the same request made with httpx.
Then a phone (390 by 844, touch): no horizontal overflow, a one-line header, the totals above the
fold, every table row a card that fits the screen. Neither shows a console error or breaks the
Content-Security-Policy.

Chromium is Debian's package (`apt-get install chromium`); Playwright never downloads a browser.
Without it the test is skipped, except where Postgres is required (CI), where it fails.
"""

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from app.core.db import utcnow
from app.dashboard.router import CONTENT_SECURITY_POLICY
from app.demo import DEMO_PROGRAM_NAME, ensure_demo
from app.fulfilment.models import Fulfilment
from app.fulfilment.states import FulfilmentStatus
from app.main import create_app
from app.rewards.models import Reward
from app.rewards.states import FulfilmentMethod, FulfilmentProvider
from tests.settings import DATABASE_URL, settings_for_tests

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
KEY_STORAGE = "referral-dashboard.key"
TIME_ZONE = "Europe/Paris"  # not UTC: the page must pass its zone to the timeseries
FUNNEL = (
    "clicks",
    "unique_clicks",
    "referrals",
    "converted_referrals",
    "conversions",
    "revenue",
    "reward_cost",
    "conversion_rate",
    "referral_rate",
    "referral_purchase_rate",
    "average_order_value",
    "revenue_per_reward_spent",
    "reward_cost_issued",
    "reward_cost_redeemed",
    "reward_breakage",
    "reward_redemption_rate",
)
MONEY = {
    "revenue",
    "reward_cost",
    "average_order_value",
    "reward_cost_issued",
    "reward_cost_redeemed",
    "reward_breakage",
}
RATES = {"conversion_rate", "referral_rate", "referral_purchase_rate", "reward_redemption_rate"}
TIMES = "\u00d7"  # multiplication sign: revenue per reward spent reads "3.61" + TIMES
PHONE = {"width": 390, "height": 844}
# Collects what the CSP refused; init scripts run outside the page's CSP.
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make dev)"
    return None


MISSING = _missing_browser()
REQUIRED = os.environ.get("REFERRAL_TEST_REQUIRE_POSTGRES") == "1"
pytestmark = pytest.mark.skipif(
    MISSING is not None and not REQUIRED, reason=f"browser test: {MISSING}"
)


@contextmanager
def live_server() -> Iterator[str]:
    """The app under uvicorn in a thread of its own, on a random loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Its own app and engine, on the suite's database, in the server thread's event loop; the
    # links it makes (/r/{code}, portal links) point at itself.
    base_url = f"http://127.0.0.1:{port}"
    app = create_app(settings_for_tests(database_url=DATABASE_URL, public_base_url=base_url))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def shown_as(kind: str, api_value: Any, text: str) -> bool:
    """Is `text` how the page should show the API's value, digit for digit?"""
    if api_value is None:
        return text == "—"
    if kind in MONEY:
        return text == "$" + format(Decimal(api_value), ",")
    if kind in RATES:
        return text.endswith("%") and Decimal(text[:-1]) == Decimal(api_value) * 100
    if kind == "revenue_per_reward_spent":
        # The API's 4 places, shown to 2 (half-even, as the API rounds).
        two = Decimal(api_value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        return text == format(two, ",") + TIMES
    return text == format(int(api_value), ",")


async def test_dashboard_shows_the_apis_numbers(app: Any, client: httpx.AsyncClient) -> None:
    if MISSING is not None:
        pytest.fail(f"the browser test must run here: {MISSING}")
    from playwright.async_api import async_playwright

    started = time.monotonic()
    async with app.state.sessionmaker() as session:
        demo = await ensure_demo(session, app.state.settings, scale=0.25)
        await session.commit()
        await _issue_coupons(session, demo.program_id)
    key = demo.dashboard_key
    headers = {"Authorization": f"Bearer {key}"}

    with live_server() as base_url:
        async with (
            httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as api,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            errors: list[str] = []
            requests: list[tuple[str, str | None]] = []
            violations: list[str] = []
            try:
                page = await _open_page(
                    browser,
                    errors,
                    requests,
                    viewport={"width": 1440, "height": 900},
                    accept_downloads=True,
                )
                try:
                    await _check_page(page, api, base_url, key)
                    violations += await page.evaluate("window.cspViolations")
                finally:
                    await _screenshot(page, "dashboard.png", full_page=True)
                phone = await _open_page(
                    browser,
                    errors,
                    requests,
                    viewport=PHONE,
                    device_scale_factor=2,
                    is_mobile=True,
                    has_touch=True,
                )
                try:
                    await _check_phone(phone, api, base_url, key)
                    violations += await phone.evaluate("window.cspViolations")
                finally:
                    await _screenshot(phone, "dashboard-phone.png", full_page=False)
                    await _screenshot(phone, "dashboard-phone-full.png", full_page=True)
            finally:
                await browser.close()

    assert errors == [], errors
    assert violations == [], violations
    # Every request stays on this service; the key travels only to the JSON API.
    assert requests and all(url.startswith(base_url + "/") for url, _ in requests), requests
    for url, authorization in requests:
        if authorization is not None:
            assert url.startswith(base_url + "/v1/"), url
            assert authorization == f"Bearer {key}"
    print(f"browser test took {time.monotonic() - started:.1f} s")


async def _issue_coupons(session: Any, program_id: Any) -> None:
    """Three of the demo's rewards were coupons, issued a week ago; an order used one of them
    for less than its face value: the true reward cost is shown, not only zeros."""
    week_ago = utcnow() - timedelta(days=7)
    rewards = list(
        await session.scalars(
            select(Reward)
            .where(Reward.program_id == program_id, Reward.unit == "USD", Reward.amount > 2)
            .order_by(Reward.created_at, Reward.id)
            .limit(3)
        )
    )
    assert len(rewards) == 3
    for index, reward in enumerate(rewards):
        session.add(
            Fulfilment(
                program_id=program_id,
                reward_id=reward.id,
                method=FulfilmentMethod.COUPON,
                provider=FulfilmentProvider.SHOPIFY,
                status=FulfilmentStatus.FULFILLED,
                code=f"REFDEMO{index}",
                amount=reward.amount,
                currency="USD",
                fulfilled_at=week_ago,
                redeemed_at=week_ago + timedelta(days=1) if index == 0 else None,
                redeemed_amount=reward.amount - Decimal("1.25") if index == 0 else None,
            )
        )
    await session.commit()


async def _open_page(
    browser: Any, errors: list[str], requests: list[tuple[str, str | None]], **options: Any
) -> Any:
    """A page in a fresh context (its own sessionStorage) that records errors and requests."""
    context = await browser.new_context(timezone_id=TIME_ZONE, locale="en-US", **options)
    await context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = await context.new_page()
    page.set_default_timeout(90_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.on(
        "request",
        lambda request: requests.append((request.url, request.headers.get("authorization"))),
    )
    return page


async def _screenshot(page: Any, name: str, *, full_page: bool) -> None:
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / name), full_page=full_page)


async def _check_page(page: Any, api: httpx.AsyncClient, base_url: str, key: str) -> None:
    answer = await page.goto(base_url + "/dashboard")
    assert answer is not None and answer.status == 200
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = await answer.text()
    assert DEMO_PROGRAM_NAME not in html  # public markup: the data comes with the key

    await page.fill("#key", key)
    await page.click("#open")
    await _wait_until_loaded(page)
    # The date-range picker: the 90-day preset.
    await page.click("#presets button[data-days='90']")
    await _wait_until_loaded(page)

    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORAGE}')") == key
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("localStorage.length") == 0

    board = await page.eval_on_selector("#board", "node => ({...node.dataset})")
    assert board["tz"] == TIME_ZONE
    assert board["interval"] == "week"
    program_id = board["program"]
    window = {"from": board["from"], "to": board["to"]}
    metrics = f"/v1/programs/{program_id}/metrics"

    summary = (await api.get(f"{metrics}/summary", params=window)).json()
    assert summary["clicks"] > 0 and summary["conversions"] > 0, summary
    assert Decimal(summary["reward_cost_redeemed"]) > 0, summary
    assert Decimal(summary["reward_breakage"]) > 0, summary
    for metric in FUNNEL:
        for scope in ("#funnel", "#kpis"):
            found = await page.query_selector(f"{scope} [data-metric={metric}]")
            if found is None:
                assert scope == "#kpis", f"{metric} is not in the funnel"
                continue
            raw = await found.get_attribute("data-value")
            assert raw == ("" if summary[metric] is None else str(summary[metric])), metric
            assert shown_as(metric, summary[metric], await found.inner_text()), metric

    order = board["order"]
    leaders = (
        await api.get(f"{metrics}/referrers", params=window | {"order_by": order, "limit": 10})
    ).json()
    top = leaders["data"][0]
    row = await page.query_selector("#referrers tbody tr")
    assert row is not None
    assert await row.get_attribute("data-referrer") == top["referrer_id"]
    for column in ("clicks", "unique_clicks", "referrals", "conversions", "revenue"):
        shown = await row.query_selector(f"[data-col={column}]")
        assert shown is not None
        assert await shown.get_attribute("data-value") == str(top[column]), column
        assert shown_as(column, top[column], await shown.inner_text()), column
    rows = await page.query_selector_all("#referrers tbody tr")
    assert len(rows) == len(leaders["data"])

    series = (
        await api.get(
            f"{metrics}/timeseries", params=window | {"interval": "week", "tz": TIME_ZONE}
        )
    ).json()
    buckets = series["buckets"]
    bars = await page.query_selector_all("svg[data-chart=revenue] rect[data-series=revenue]")
    assert len(bars) == len(buckets)
    busiest = max(buckets, key=lambda bucket: Decimal(bucket["revenue"]))
    bar = await page.query_selector(
        f"svg[data-chart=revenue] rect[data-series=revenue][data-label='{busiest['label']}']"
    )
    assert bar is not None
    assert await bar.get_attribute("data-value") == busiest["revenue"]
    dot = await page.query_selector(
        f"svg[data-chart=conversion_rate] circle[data-label='{busiest['label']}']"
    )
    assert dot is not None
    assert await dot.get_attribute("data-value") == busiest["conversion_rate"]
    # A week the range cuts (the 90 days rarely start on a Monday) is drawn and told as partial.
    partial = [bucket["label"] for bucket in buckets if bucket["partial"]]
    assert partial and partial[0] == buckets[0]["label"], partial
    drawn = await page.query_selector_all(
        "svg[data-chart=revenue] rect[data-series=revenue][data-partial=true]"
    )
    assert [await bar.get_attribute("data-label") for bar in drawn] == partial
    note = await page.inner_text("#card-revenue [data-partial-note]")
    assert note.startswith("Dashed: partial week"), note
    # The tooltip of that bar shows the same revenue.
    box = await bar.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tooltip = await page.inner_text("#tooltip")
    assert "$" + format(Decimal(busiest["revenue"]), ",") in tooltip, tooltip

    channels = (await api.get(f"{metrics}/channels", params=window | {"limit": 10})).json()
    channel_rows = await page.query_selector_all("#channels tbody tr")
    assert len(channel_rows) == len(channels["data"])
    first_channel = await channel_rows[0].query_selector("[data-col=clicks]")
    assert first_channel is not None
    assert await first_channel.get_attribute("data-value") == str(channels["data"][0]["clicks"])

    # Recent conversions: the newest first, each with the API's winner and reason.
    recent = await page.query_selector_all("#recent tbody tr[data-conversion]")
    assert recent
    moments = []
    for shown_row in recent:
        conversion_id = await shown_row.get_attribute("data-conversion")
        attribution = (await api.get(f"/v1/conversions/{conversion_id}/attribution")).json()
        reason = await shown_row.query_selector("[data-col=reason]")
        winner = await shown_row.query_selector("[data-col=winner]")
        assert reason is not None and winner is not None
        assert await reason.get_attribute("data-value") == attribution["reason"]
        expected_code = (attribution["winner"] or {}).get("code") or ""
        assert await winner.get_attribute("data-value") == expected_code
        when = await shown_row.query_selector("[data-col=occurred_at]")
        assert when is not None
        moments.append(await when.get_attribute("data-value"))
    assert moments == sorted(moments, reverse=True)

    # A CSV export: fetched with the key by the page and saved; the same bytes as the API's.
    link = page.locator("#exports a[data-export=referrers]")
    href = await link.get_attribute("href")
    assert href is not None and "format=csv" in href
    async with page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    saved = await download.path()
    expected_csv = (await api.get(href)).content
    assert await asyncio.to_thread(Path(saved).read_bytes) == expected_csv
    lines = expected_csv.decode().splitlines()
    assert lines[0].startswith("referrer_id,external_id,name,clicks,")
    assert len(lines) == 1 + len(leaders["data"])

    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")  # the sticky header back on top


async def _wait_until_loaded(page: Any) -> None:
    # Selectors, not wait_for_function: the page's CSP forbids evaluating strings.
    # The recent conversions start loading in the same task that marks the board ready.
    await page.wait_for_selector("#board[data-state=ready]")
    await page.wait_for_selector("#recent[data-state=ready]")


async def _check_phone(page: Any, api: httpx.AsyncClient, base_url: str, key: str) -> None:
    """390 by 844 with touch: everything fits the width, the totals show without scrolling."""
    await page.goto(base_url + "/dashboard")
    await page.fill("#key", key)
    await page.click("#open")
    await _wait_until_loaded(page)
    # The one-line header hides the range behind a button; the presets are inside.
    assert not await page.is_visible("#presets")
    await page.click("#range-toggle")
    await page.click("#presets button[data-days='90']")
    await _wait_until_loaded(page)
    assert not await page.is_visible("#presets")  # closed again after the pick
    assert await page.inner_text("#range-toggle") == "90D"
    await page.evaluate("window.scrollTo(0, 0)")

    layout = await page.evaluate(
        """() => {
          const box = (node) => node.getBoundingClientRect();
          const cells = [...document.querySelectorAll("table.data td")].map(box);
          return {
            scrollWidth: document.documentElement.scrollWidth,
            innerWidth: window.innerWidth,
            innerHeight: window.innerHeight,
            header: box(document.querySelector(".topbar")).height,
            totals: [...document.querySelectorAll("#kpis .kpi")].map((kpi) => box(kpi).bottom),
            cells: cells.length,
            outside: cells.filter((c) => c.left < 0 || c.right > window.innerWidth).length,
            scrolled: [...document.querySelectorAll(".table-wrap")]
              .filter((wrap) => wrap.scrollWidth > wrap.clientWidth).length,
          };
        }"""
    )
    assert layout["innerWidth"] == PHONE["width"]
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["header"] <= 0.08 * layout["innerHeight"], layout  # was 27 %
    assert len(layout["totals"]) == 5
    assert max(layout["totals"]) <= layout["innerHeight"], layout
    assert layout["cells"] > 0 and layout["outside"] == 0 and layout["scrolled"] == 0, layout

    # Each referrer is a card: its numbers under their column's name, the API's numbers.
    board = await page.eval_on_selector("#board", "node => ({...node.dataset})")
    window = {"from": board["from"], "to": board["to"]}
    leaders = (
        await api.get(
            f"/v1/programs/{board['program']}/metrics/referrers",
            params=window | {"order_by": board["order"], "limit": 10},
        )
    ).json()
    revenue = page.locator("#referrers tbody tr").first.locator("[data-col=revenue]")
    assert await revenue.get_attribute("data-label") == "Revenue"
    label = await revenue.evaluate("td => getComputedStyle(td, '::before').content")
    assert label == '"Revenue"'
    assert shown_as("revenue", leaders["data"][0]["revenue"], await revenue.inner_text())
    assert await page.is_hidden("#referrers thead")

    # A tap on a bar shows its tooltip.
    bar = page.locator("svg[data-chart=revenue] rect[data-series=revenue]").last
    await bar.scroll_into_view_if_needed()
    box = await bar.bounding_box()
    assert box is not None
    await page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert await page.is_visible("#tooltip")
    assert "Revenue" in await page.inner_text("#tooltip")
    await page.evaluate("window.scrollTo(0, 0)")

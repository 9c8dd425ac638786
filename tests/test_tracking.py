from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update

from app.referrers.models import Code
from app.tracking.models import Click, ClickClaim, Referral
from tests.factories import (
    BROWSER_UA,
    assert_problem,
    auth,
    code_row,
    db_all,
    make_code,
    make_key,
    make_program,
    make_referrer,
    patch_code,
    record_click,
    redeem,
)

LANDING = "https://shop.example.com/welcome?lang=en"

PROGRAM = {"landing_url": LANDING}
REFERRER = {"email": "Ref.One@Example.com"}


@pytest.fixture
async def publishable(client: AsyncClient, app: Any) -> str:
    return await make_key(app, "publishable")


@pytest.fixture
def code(referrer: dict[str, Any]) -> str:
    return referrer["default_code"]["code"]


def client_at(app: Any, ip: str) -> AsyncClient:
    """A client whose requests come from `ip`."""
    transport = ASGITransport(app=app, client=(ip, 40000))
    return AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def other_ip_client(app: Any, client: AsyncClient) -> AsyncIterator[AsyncClient]:
    async with client_at(app, "203.0.113.77") as http:
        yield http


async def clicks(app: Any) -> list[Click]:
    return await db_all(app, select(Click).order_by(Click.created_at, Click.id))


async def referrals(app: Any) -> list[Referral]:
    return await db_all(app, select(Referral))


async def pause(client: AsyncClient, admin: str, program_id: str) -> None:
    response = await client.patch(
        f"/v1/programs/{program_id}", json={"status": "paused"}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text


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
    await _assert_nothing_changed(app, code)


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


# --- redemptions -----------------------------------------------------------------------------


async def test_redeem_makes_a_referral(
    client: AsyncClient,
    app: Any,
    publishable: str,
    program: dict[str, Any],
    referrer: dict[str, Any],
    code: str,
) -> None:
    response = await redeem(client, publishable, code.lower(), "new_1", email="New@Example.com")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["program_id"] == program["id"]
    assert body["referrer_id"] == referrer["id"]
    assert body["code"] == code
    assert body["customer_id"] == "new_1"
    assert body["click_id"] is None

    [referral] = await referrals(app)
    assert referral.id == UUID(body["referral_id"])
    assert referral.customer_id == "new_1"
    assert referral.email == "new@example.com"
    assert referral.source == "redemption"
    assert referral.referrer_id == UUID(referrer["id"])
    assert (await code_row(app, code)).redemption_count == 1


async def test_redeem_with_click_ties_the_click_to_the_customer(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:
    click = (await record_click(client, publishable, code)).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert response.status_code == 201, response.text
    assert response.json()["click_id"] == click["click_id"]
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"
    [referral] = await referrals(app)
    assert referral.click_id == UUID(click["click_id"])


async def test_redeem_with_click_of_another_code_of_the_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    other = await make_referrer(client, admin, program["id"], "ref_2")
    click = (await record_click(client, publishable, other["default_code"]["code"])).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert response.status_code == 201, response.text
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"


async def _assert_nothing_changed(app: Any, code: str, count: int = 0) -> None:
    assert (await code_row(app, code)).redemption_count == count
    assert len(await referrals(app)) == count
    assert all(click.customer_id is None for click in await clicks(app))


async def test_redeem_unknown_code(client: AsyncClient, app: Any, publishable: str) -> None:
    response = await redeem(client, publishable, "NOPE23456", "new_1")
    assert_problem(response, 404, "code_not_found")
    assert await referrals(app) == []


async def test_redeem_disabled_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    await patch_code(client, admin, code, disabled=True)
    click = (await record_click(client, publishable, code)).json()
    response = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert_problem(response, 409, "code_disabled")
    await _assert_nothing_changed(app, code)


async def test_redeem_expired_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await patch_code(client, admin, code, expires_at=past)
    response = await redeem(client, publishable, code, "new_1")
    assert_problem(response, 409, "code_expired")
    await _assert_nothing_changed(app, code)


async def test_redeem_exhausted_code(
    client: AsyncClient, app: Any, admin: str, publishable: str, referrer: dict[str, Any]
) -> None:
    limited = (await make_code(client, admin, referrer["id"], max_redemptions=2))["code"]
    assert (await redeem(client, publishable, limited, "new_1")).status_code == 201
    assert (await redeem(client, publishable, limited, "new_2")).status_code == 201
    click = (await record_click(client, publishable, limited)).json()
    response = await redeem(client, publishable, limited, "new_3", click_id=click["click_id"])
    assert_problem(response, 409, "code_exhausted")
    assert (await code_row(app, limited)).redemption_count == 2
    assert sorted(r.customer_id for r in await referrals(app)) == ["new_1", "new_2"]
    assert all(c.customer_id is None for c in await clicks(app))


async def test_redeem_in_paused_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    await pause(client, admin, program["id"])
    response = await redeem(client, publishable, code, "new_1")
    assert_problem(response, 409, "program_not_active")
    await _assert_nothing_changed(app, code)


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param({"customer_id": "ref_1"}, id="external-id"),
        pytest.param({"customer_id": "someone", "email": "ref.one@example.com"}, id="email"),
        pytest.param({"customer_id": "someone", "email": "REF.ONE@EXAMPLE.COM"}, id="email-case"),
    ],
)
async def test_redeem_own_code_is_self_referral(
    client: AsyncClient, app: Any, publishable: str, code: str, customer: dict[str, Any]
) -> None:
    click = (await record_click(client, publishable, code)).json()
    body = {"code": code, "click_id": click["click_id"]} | customer
    response = await client.post("/v1/redemptions", json=body, headers=auth(publishable))
    assert_problem(response, 422, "self_referral")
    await _assert_nothing_changed(app, code)


async def test_redeem_twice_is_already_referred(
    client: AsyncClient, app: Any, admin: str, publishable: str, program: dict[str, Any], code: str
) -> None:
    assert (await redeem(client, publishable, code, "new_1")).status_code == 201
    again = await redeem(client, publishable, code, "new_1")
    assert_problem(again, 409, "already_referred")
    # Nor through another referrer's code in the same program.
    other = await make_referrer(client, admin, program["id"], "ref_2")
    other_code = other["default_code"]["code"]
    through_other = await redeem(client, publishable, other_code, "new_1")
    assert_problem(through_other, 409, "already_referred")
    assert (await code_row(app, code)).redemption_count == 1
    assert (await code_row(app, other_code)).redemption_count == 0
    assert len(await referrals(app)) == 1


async def test_same_customer_may_be_referred_in_another_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    other_program = await make_program(client, admin, name="Other")
    other = await make_referrer(client, admin, other_program["id"], "ref_x")
    assert (await redeem(client, publishable, code, "new_1")).status_code == 201
    second = await redeem(client, publishable, other["default_code"]["code"], "new_1")
    assert second.status_code == 201, second.text
    assert len(await referrals(app)) == 2


async def test_redeem_with_click_of_another_program(
    client: AsyncClient, app: Any, admin: str, publishable: str, code: str
) -> None:
    other_program = await make_program(client, admin, name="Other")
    other = await make_referrer(client, admin, other_program["id"], "ref_x")
    foreign = (await record_click(client, publishable, other["default_code"]["code"])).json()
    response = await redeem(client, publishable, code, "new_1", click_id=foreign["click_id"])
    assert_problem(response, 422, "click_not_found")
    unknown = await redeem(client, publishable, code, "new_1", click_id=str(uuid4()))
    assert_problem(unknown, 422, "click_not_found")
    await _assert_nothing_changed(app, code)


async def test_redeem_keeps_a_click_already_tied_to_another_customer(
    client: AsyncClient, app: Any, admin: str, publishable: str, referrer: dict[str, Any], code: str
) -> None:
    click = (await record_click(client, publishable, code)).json()
    first = await redeem(client, publishable, code, "new_1", click_id=click["click_id"])
    assert first.status_code == 201
    second = await redeem(client, publishable, code, "new_2", click_id=click["click_id"])
    assert second.status_code == 201, second.text
    [stored] = await clicks(app)
    assert stored.customer_id == "new_1"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"code": "X"}, id="no-customer"),
        pytest.param({"customer_id": "c"}, id="no-code"),
        pytest.param({"code": "X", "customer_id": ""}, id="empty-customer"),
        pytest.param({"code": "X", "customer_id": "c", "email": "nope"}, id="bad-email"),
        pytest.param({"code": "X", "customer_id": "c", "click_id": "nope"}, id="bad-click-id"),
        pytest.param({"code": "X", "customer_id": "c", "referrer_id": str(uuid4())}, id="referrer"),
    ],
)
async def test_redeem_refuses_bad_input(
    client: AsyncClient, app: Any, publishable: str, code: str, body: dict[str, Any]
) -> None:
    body = {k: (code if v == "X" else v) for k, v in body.items()}
    response = await client.post("/v1/redemptions", json=body, headers=auth(publishable))
    assert_problem(response, 422, "validation_error")
    await _assert_nothing_changed(app, code)


async def test_code_row_counts_only_successes(
    client: AsyncClient, app: Any, publishable: str, code: str
) -> None:

    for i in range(3):
        assert (await redeem(client, publishable, code, f"new_{i}")).status_code == 201
    for i in range(3):
        assert (await redeem(client, publishable, code, f"new_{i}")).status_code == 409
    rows = await db_all(app, select(Code.redemption_count).where(Code.normalized == code))
    assert rows == [3]

"""/v1/me…: a referrer's own profile, share texts, friends, rewards and balance; isolation.

Progress and the leaderboard are in tests/test_me_standing.py.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID, uuid4

from httpx import AsyncClient
from sqlalchemy import select, update

from app.core.config import Settings
from app.programs.models import Program
from app.referrers.share import share_for
from app.rewards.models import Reward
from app.tracking.models import Click, Referral
from tests.factories import (
    BROWSER_UA,
    assert_problem,
    auth,
    db_all,
    make_code,
    make_key,
    make_program,
    make_referrer,
    patch_code,
    redeem,
)
from tests.money_factories import add_rule, patch_rule, post_refund, purchase, set_occurred_at
from tests.session_factories import code_of, me, me_ok, referrer_with_session, session_token

ME_PATHS = ("", "/referrals", "/rewards", "/balance", "/progress", "/leaderboard")


# --- GET /v1/me and the share texts ------------------------------------------------------------


async def test_me_shows_the_referrer_their_codes_links_and_share_texts(
    client: AsyncClient, app: Any, settings: Settings
) -> None:
    w = await referrer_with_session(client, app)
    vanity = await make_code(client, w["admin"], w["alice"]["id"], code="ALICE-SPRING")
    body = await me_ok(client, w["token"])
    assert body["referrer"] == {
        "id": w["alice"]["id"],
        "program_id": w["program"]["id"],
        "external_id": "alice-ext",
        "name": "Alice Liddell",
        "leaderboard_name": None,
    }
    assert body["program"]["name"] == w["program"]["name"]
    assert body["referee_offer"] == "10% off your first order"
    assert [c["code"] for c in body["codes"]] == [code_of(w["alice"]), vanity["code"]]
    assert body["codes"][0]["link"] == f"{settings.public_base_url}/r/{code_of(w['alice'])}"
    share = body["share"]
    code = code_of(w["alice"])
    assert share["code"] == code  # the default code, while it is valid
    assert share["link"] == f"{settings.public_base_url}/r/{code}"
    assert share["offer"] == "10% off your first order"
    for channel, opener in (
        ("whatsapp", "https://wa.me/?text="),
        ("x", "https://twitter.com/intent/tweet?text="),
        ("sms", "sms:?&body="),
    ):
        entry = share[channel]
        assert entry["link"] == f"{share['link']}?utm_source={channel}&utm_medium=share"
        assert entry["link"] in entry["text"] and "10% off your first order" in entry["text"]
        assert entry["share_url"].startswith(opener)
        assert unquote(entry["share_url"][len(opener) :]) == entry["text"]
    email = share["email"]
    assert "10% off your first order" in email["subject"]
    assert email["link"] in email["body"] and code in email["body"]
    mailto = parse_qs(urlsplit(email["share_url"]).query)
    assert email["share_url"].startswith("mailto:?")
    assert mailto == {"subject": [email["subject"]], "body": [email["body"]]}
    assert share["facebook"]["share_url"].startswith(
        "https://www.facebook.com/sharer/sharer.php?u="
    )
    assert share["linkedin"]["share_url"].startswith(
        "https://www.linkedin.com/sharing/share-offsite/?url="
    )
    for channel in ("facebook", "linkedin"):
        target = parse_qs(urlsplit(share[channel]["share_url"]).query)
        assert list(target.values()) == [[share[channel]["link"]]]
    # Nothing personal beyond what the referrer is: no email, no metadata.
    assert "alice@example.com" not in str(body)


async def test_a_shared_link_lands_and_is_counted_under_its_channel(
    client: AsyncClient, app: Any
) -> None:
    w = await referrer_with_session(client, app)
    link = (await me_ok(client, w["token"]))["share"]["whatsapp"]["link"]
    path = urlsplit(link)
    followed = await client.get(
        path.path, params=parse_qs(path.query), headers={"User-Agent": BROWSER_UA}
    )
    assert followed.status_code == 302
    assert f"ref={code_of(w['alice'])}" in followed.headers["location"]
    clicks = await db_all(app, select(Click))
    assert [(c.utm_source, c.utm_medium) for c in clicks] == [("whatsapp", "share")]


async def test_share_texts_without_an_offer_and_without_a_validcode_of(
    client: AsyncClient, app: Any
) -> None:
    w = await referrer_with_session(client, app, referee_offer=None)
    share = (await me_ok(client, w["token"]))["share"]
    assert share["offer"] is None
    texts = [share["email"]["subject"], share["email"]["body"], share["whatsapp"]["text"]]
    assert all("None" not in text and "{" not in text for text in texts), texts
    # The default code disabled: the valid vanity code is shared instead; none valid: nothing.
    vanity = await make_code(client, w["admin"], w["alice"]["id"], code="ALICE-TWO")
    await patch_code(client, w["admin"], code_of(w["alice"]), disabled=True)
    assert (await me_ok(client, w["token"]))["share"]["code"] == vanity["code"]
    await patch_code(client, w["admin"], vanity["code"], disabled=True)
    body = await me_ok(client, w["token"])
    assert body["share"] is None
    assert [c["state"] for c in body["codes"]] == ["disabled", "disabled"]


def test_an_offer_is_filled_in_as_written(settings: Settings) -> None:
    program = Program(name="P", landing_url="https://s.example/", currency="USD")
    program.referee_offer = "{link} {code} 100% off"
    share = share_for(program, "CODE1", settings)
    assert share.whatsapp.text.startswith("With my link you get {link} {code} 100% off: http")


# --- PATCH /v1/me ------------------------------------------------------------------------------


async def test_the_leaderboard_name_is_set_cleared_and_validated(
    client: AsyncClient, app: Any
) -> None:
    w = await referrer_with_session(client, app)

    async def patch(body: Any) -> Any:
        return await client.patch("/v1/me", json=body, headers=auth(w["token"]))

    response = await patch({"leaderboard_name": "  Ally  "})
    assert response.status_code == 200, response.text
    assert response.json()["referrer"]["leaderboard_name"] == "Ally"
    assert (await patch({})).json()["referrer"]["leaderboard_name"] == "Ally"
    for bad in (
        {"leaderboard_name": "x" * 41},
        {"leaderboard_name": ""},
        {"leaderboard_name": "Ally\u202eevil"},
        {"leaderboard_name": "two\nlines"},
        {"leaderboard_name": "nul\u0000"},
        {"leaderboard_name": 7},
        {"name": "Someone else"},
        {"external_id": "bob"},
    ):
        assert_problem(await patch(bad), 422, "validation_error")
    body = await me_ok(client, w["token"])
    assert body["referrer"]["leaderboard_name"] == "Ally"
    assert (body["referrer"]["name"], body["referrer"]["external_id"]) == (
        "Alice Liddell",
        "alice-ext",
    )
    cleared = await patch({"leaderboard_name": None})
    assert cleared.json()["referrer"]["leaderboard_name"] is None


# --- referred friends --------------------------------------------------------------------------


async def test_each_friend_shows_where_their_referral_stands(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    admin, prog, code = w["admin"], w["program"], code_of(w["alice"])
    bob = await make_referrer(client, admin, prog["id"], "bob-ext")
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="5.00")

    async def redeemed(customer: str, email: str) -> dict[str, Any]:
        response = await redeem(client, admin, code, customer, email=email)
        assert response.status_code == 201, response.text
        return dict(response.json())

    await redeemed("c-waiting", "waiting@example.com")
    await redeemed("c-rewarded", "rewarded@example.com")
    await purchase(client, admin, prog, "e1", "c-rewarded", "20.00")
    await redeemed("c-refunded", "refunded@example.com")
    refunded = await purchase(client, admin, prog, "e2", "c-refunded", "20.00")
    assert (await post_refund(client, admin, refunded["id"])).status_code == 201
    # The friend bought with Alice's own email: a self-referral, not counted.
    await redeemed("c-self", "self@example.com")
    await purchase(client, admin, prog, "e3", "c-self", "20.00", email="alice@example.com")
    # Bought too late: the redemption is older than the program's 30-day window.
    late = await redeemed("c-late", "late@example.com")
    await set_occurred_at(app, Referral, late["referral_id"], datetime.now(UTC) - timedelta(40))
    await purchase(client, admin, prog, "e4", "c-late", "20.00")
    # Never bought, and the window has closed.
    stale = await redeemed("c-stale", "stale@example.com")
    await set_occurred_at(app, Referral, stale["referral_id"], datetime.now(UTC) - timedelta(31))
    # Bought with Bob's code: Bob's explicit code outranks Alice's redemption.
    await redeemed("c-elsewhere", "elsewhere@example.com")
    await purchase(client, admin, prog, "e5", "c-elsewhere", "20.00", code=code_of(bob))
    # A purchase through Alice's link without a redemption first: referred by the purchase.
    await purchase(client, admin, prog, "e6", "c-direct", "20.00", code=code)

    rows = (await me_ok(client, w["token"], "/referrals", limit=100))["data"]
    by_email = {row["friend"]: row for row in rows}
    assert len(rows) == 8
    seen = sorted((row["status"], row["reason"]) for row in rows)
    assert seen == sorted(
        [
            ("redeemed", None),
            ("rewarded", None),
            ("refunded", None),
            ("not_counted", "self_referral"),
            ("not_counted", "outside_window"),
            ("not_counted", "outside_window"),
            ("not_counted", "lower_priority"),
            ("rewarded", None),
        ]
    )
    waiting = by_email["w***@e***.com"]
    assert waiting["counts_until"] is not None and waiting["purchased_at"] is None
    assert "counts" in waiting["explanation"]
    assert by_email["l***@e***.com"]["explanation"].startswith("They did not buy within 30 days")
    assert by_email["e***@e***.com"]["reason"] == "lower_priority"
    direct = [row for row in rows if row["source"] == "purchase"]
    assert len(direct) == 1 and direct[0]["friend"].startswith("Friend #")
    assert direct[0]["status"] == "rewarded" and direct[0]["purchased_at"] is not None
    # Never a customer id, never another customer's email, never the merchant's data.
    text = str(rows)
    for secret in ("c-waiting", "c-direct", "c-elsewhere", "@example.com", "bob-ext"):
        assert secret not in text
    # Bob's session sees nothing of Alice's friends (his code won c-elsewhere's purchase, but
    # the friend is Alice's referral).
    bob_token = await session_token(client, admin, bob["id"])
    assert (await me_ok(client, bob_token, "/referrals"))["data"] == []


async def test_a_purchase_that_no_rule_pays_reads_purchased(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    await add_rule(
        client,
        w["admin"],
        w["program"]["id"],
        recipient="referrer",
        kind="fixed",
        amount="5.00",
        min_order_amount="50.00",
    )
    await purchase(client, w["admin"], w["program"], "e1", "c1", "20.00", code=code_of(w["alice"]))
    (row,) = (await me_ok(client, w["token"], "/referrals"))["data"]
    assert (row["status"], row["reason"]) == ("purchased", None)
    single = await me_ok(client, w["token"], f"/referrals/{row['id']}")
    assert single == row


async def test_friends_and_rewards_are_paginated(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    await add_rule(
        client,
        w["admin"],
        w["program"]["id"],
        recipient="referrer",
        kind="fixed",
        amount="1.00",
        trigger="every_purchase",
    )
    for n in range(5):
        await purchase(
            client, w["admin"], w["program"], f"e{n}", f"c{n}", "9.00", code=code_of(w["alice"])
        )
    for path in ("/referrals", "/rewards"):
        seen: list[str] = []
        sizes: list[int] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = await me_ok(client, w["token"], path, **params)
            sizes.append(len(page["data"]))
            seen.extend(row["id"] for row in page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sizes == [2, 2, 1], path
        assert len(set(seen)) == 5
    assert_problem(await me(client, w["token"], "/rewards", limit=1000), 422, "invalid_limit")
    assert_problem(await me(client, w["token"], "/rewards", cursor="nope"), 422, "invalid_cursor")


# --- rewards and balance -----------------------------------------------------------------------


async def test_rewards_say_what_why_and_when(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    admin, prog, code = w["admin"], w["program"], code_of(w["alice"])
    rule = await add_rule(
        client,
        admin,
        prog["id"],
        name="Spring bonus",
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        hold_days=14,
        trigger="every_purchase",
    )
    await add_rule(client, admin, prog["id"], recipient="referee", kind="fixed", amount="3.00")
    first = await purchase(client, admin, prog, "e1", "friend-1", "40.00", code=code)
    await patch_rule(client, admin, rule["id"], amount="12.00")
    await purchase(client, admin, prog, "e2", "friend-2", "40.00", code=code)

    rows = (await me_ok(client, w["token"], "/rewards"))["data"]
    assert [(r["amount"], r["rule"]["version"]) for r in rows] == [("10.00", 1), ("12.00", 2)]
    one = rows[0]
    assert one["status"] == "pending"
    assert one["approves_at"] == one["hold_until"]
    assert one["why"] == "“Spring bonus” (version 1), for a referred friend's purchase."
    assert one["rule"] == {"id": rule["id"], "name": "Spring bonus", "version": 1}
    assert one["referral_id"] is not None
    assert "friend-1" not in str(rows) and "3.00" not in str(rows)  # the friend's reward is theirs

    # Past its hold, a pending reward reads approved, and reading stores nothing.
    reward_id = UUID(one["id"])
    async with app.state.sessionmaker() as db:
        past = datetime.now(UTC) - timedelta(minutes=1)
        await db.execute(update(Reward).where(Reward.id == reward_id).values(hold_until=past))
        await db.commit()
    shown = await me_ok(client, w["token"], f"/rewards/{reward_id}")
    assert (shown["status"], shown["approves_at"]) == ("approved", None)
    assert shown["approved_at"] == shown["hold_until"]
    (stored,) = await db_all(app, select(Reward.status).where(Reward.id == reward_id))
    assert stored == "pending"

    # Reversed by the merchant: the merchant's note stays the merchant's.
    second = rows[1]["id"]
    reversed_ = await client.post(
        f"/v1/rewards/{second}/reverse",
        json={"reason": "suspected ring of fakes"},
        headers=auth(admin),
    )
    assert reversed_.status_code == 200
    shown = await me_ok(client, w["token"], f"/rewards/{second}")
    assert (shown["status"], shown["reversed_because"]) == ("reversed", "merchant")
    assert "suspected" not in str(shown)

    # Paid, then refunded: the clawback says why.
    assert (await client.post(f"/v1/rewards/{reward_id}/mark-paid", headers=auth(admin))).is_success
    assert (await post_refund(client, admin, first["id"])).status_code == 201
    rows = (await me_ok(client, w["token"], "/rewards"))["data"]
    clawback = next(r for r in rows if r["entry_type"] == "clawback")
    assert clawback["amount"] == "-10.00"
    assert clawback["why"].startswith("Taken back after a refund: “Spring bonus” (version 1)")

    balance = await me_ok(client, w["token"], "/balance")
    merchant_view = await client.get(
        f"/v1/referrers/{w['alice']['id']}/balance", headers=auth(admin)
    )
    assert balance == merchant_view.json()
    assert balance["balances"][0]["paid"] == "10.00"


# --- isolation ---------------------------------------------------------------------------------


async def test_a_session_never_sees_another_referrers_data(client: AsyncClient, app: Any) -> None:
    """Two referrers in one program and one in another, each with friends, rewards and codes."""
    admin = await make_key(app)
    programs = [await make_program(client, admin, name=f"P{n}") for n in range(2)]
    for program in programs:
        await add_rule(
            client, admin, program["id"], recipient="referrer", kind="fixed", amount="2.00"
        )
    people: dict[str, dict[str, Any]] = {}
    for who, program in (("ann", programs[0]), ("ben", programs[0]), ("cid", programs[1])):
        referrer = await make_referrer(
            client,
            admin,
            program["id"],
            f"{who}-ext-{uuid4().hex[:6]}",
            name=f"{who}-name",
        )
        converted = await purchase(
            client, admin, program, f"{who}-e", f"{who}-cust", "9.00", code=code_of(referrer)
        )
        people[who] = {
            "referrer": referrer,
            "token": await session_token(client, admin, referrer["id"]),
            "markers": {
                referrer["id"],
                referrer["external_id"],
                f"{who}-name",
                code_of(referrer),
                converted["id"],
                converted["referral_id"],
                *(r["id"] for r in converted["rewards"]),
            },
            "reward": converted["rewards"][0]["id"],
            "referral": converted["referral_id"],
        }
    for who, mine in people.items():
        others = set().union(*(p["markers"] for o, p in people.items() if o != who))
        for path in ME_PATHS:
            text = (await me(client, mine["token"], path)).text
            leaked = sorted(marker for marker in others if marker in text)
            assert not leaked, (who, path, leaked)
        for other, theirs in people.items():
            if other == who:
                continue
            for path, code in (
                (f"/rewards/{theirs['reward']}", "reward_not_found"),
                (f"/referrals/{theirs['referral']}", "referral_not_found"),
            ):
                response = await me(client, mine["token"], path)
                missing = await me(client, mine["token"], path.rsplit("/", 1)[0] + f"/{uuid4()}")
                assert_problem(response, 404, code)
                assert response.json() == missing.json()
        own = await me_ok(client, mine["token"], f"/referrals/{mine['referral']}")
        assert own["status"] == "rewarded"

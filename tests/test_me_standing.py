"""/v1/me/progress and /v1/me/leaderboard: where a referrer stands, as the ledger counts."""

from typing import Any

from httpx import AsyncClient

from tests.factories import assert_problem, auth, make_program, make_referrer
from tests.money_factories import add_rule, patch_rule, purchase
from tests.session_factories import code_of, me, me_ok, referrer_with_session, session_token

# --- progress ----------------------------------------------------------------------------------


async def test_progress_across_tier_boundaries_matches_what_the_ledger_pays(
    client: AsyncClient, app: Any
) -> None:
    w = await referrer_with_session(client, app)
    admin, prog, code = w["admin"], w["program"], code_of(w["alice"])
    await add_rule(
        client,
        admin,
        prog["id"],
        name="Tiered",
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        tiers=[{"from_referral": 3, "amount": "15.00"}, {"from_referral": 5, "amount": "20.00"}],
    )
    untiered = await add_rule(
        client, admin, prog["id"], recipient="referrer", kind="points", points=5
    )
    expected = [
        (
            "$10.00",
            "$15.00",
            3,
            "3 more successful referrals until $15.00 per referral (from your 3rd on).",
        ),
        (
            "$10.00",
            "$15.00",
            2,
            "2 more successful referrals until $15.00 per referral (from your 3rd on).",
        ),
        (
            "$10.00",
            "$15.00",
            1,
            "1 more successful referral until $15.00 per referral (from your 3rd on).",
        ),
        (
            "$15.00",
            "$20.00",
            2,
            "2 more successful referrals until $20.00 per referral (from your 5th on).",
        ),
        (
            "$15.00",
            "$20.00",
            1,
            "1 more successful referral until $20.00 per referral (from your 5th on).",
        ),
        ("$20.00", None, None, "You are at the top tier: $20.00 per referral."),
    ]
    for n, (current, following, needed, sentence) in enumerate(expected):
        body = await me_ok(client, w["token"], "/progress")
        assert body["successful_referrals"] == n
        (rule,) = body["rules"]  # the untiered rule has no progress to show
        assert rule["rule_id"] != untiered["id"]
        assert (rule["current"]["reward"], rule["referrals_needed"], rule["sentence"]) == (
            current,
            needed,
            sentence,
        )
        assert (rule["next"] or {}).get("reward") == following
        if n < len(expected) - 1:
            await purchase(client, admin, prog, f"e{n}", f"friend-{n}", "50.00", code=code)
    # The ledger paid exactly what progress announced: the 3rd at $15, the 5th at $20.
    paid = [
        r["amount"]
        for r in (await me_ok(client, w["token"], "/rewards"))["data"]
        if r["unit"] == "USD"
    ]
    assert paid == ["10.00", "10.00", "15.00", "15.00", "20.00"]
    # A second purchase of a friend is not a new successful referral.
    await purchase(client, admin, prog, "again", "friend-0", "50.00")
    assert (await me_ok(client, w["token"], "/progress"))["successful_referrals"] == 5


async def test_progress_speaks_each_kind_of_reward(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app, currency="JPY")
    admin, prog = w["admin"], w["program"]
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="1000",
        tiers=[{"from_referral": 2, "amount": "1500"}],
    )
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="percent",
        percent="10",
        tiers=[{"from_referral": 2, "percent": "12.5"}],
    )
    points = await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="points",
        points=1,
        tiers=[{"from_referral": 4, "points": 50}],
    )
    inactive = await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="points",
        points=1,
        tiers=[{"from_referral": 9, "points": 9}],
    )
    await patch_rule(client, admin, inactive["id"], active=False)
    rules = (await me_ok(client, w["token"], "/progress"))["rules"]
    assert [(r["current"]["reward"], r["next"]["reward"]) for r in rules] == [
        ("¥1,000", "¥1,500"),
        ("10% of the order", "12.5% of the order"),
        ("1 point", "50 points"),
    ]
    assert rules[0]["next"]["amount"] == "1500"
    assert rules[2]["rule_id"] == points["id"]
    assert (
        rules[2]["sentence"] == "4 more successful referrals until 50 points per referral "
        "(from your 4th on)."
    )


# --- leaderboard -------------------------------------------------------------------------------


async def test_leaderboard_ranks_by_successful_referrals_and_shows_names_only_by_choice(
    client: AsyncClient, app: Any
) -> None:
    w = await referrer_with_session(client, app)
    admin, prog = w["admin"], w["program"]
    people = {"alice": w["alice"]}
    for name in ("bob", "carol", "dave"):
        people[name] = await make_referrer(
            client, admin, prog["id"], f"{name}-ext", name=name.title(), email=f"{name}@x.io"
        )
    elsewhere = await make_program(client, admin, name="Elsewhere")
    outsider = await make_referrer(client, admin, elsewhere["id"], "outsider")
    for who, friends in (("alice", 3), ("bob", 1), ("carol", 1)):
        for f in range(friends):
            code = code_of(people[who])
            await purchase(
                client, admin, prog, f"{who}-{f}", f"{who}-friend-{f}", "9.00", code=code
            )
    for f in range(5):
        await purchase(
            client, admin, elsewhere, f"out-{f}", f"o-{f}", "9.00", code=code_of(outsider)
        )
    tokens = {who: await session_token(client, admin, p["id"]) for who, p in people.items()}
    opted = await client.patch(
        "/v1/me", json={"leaderboard_name": "Ally"}, headers=auth(tokens["alice"])
    )
    assert opted.status_code == 200

    board = await me_ok(client, tokens["dave"], "/leaderboard")
    assert board["ranked_by"] == "successful_referrals"
    top = [(e["rank"], e["name"], e["successful_referrals"], e["is_you"]) for e in board["top"]]
    assert top[0] == (1, "Ally", 3, False)
    assert [(rank, count) for rank, _, count, _ in top[1:]] == [(2, 1), (2, 1)]
    anonymous = [name for _, name, _, _ in top[1:]]
    assert all(name.startswith("Referrer #") for name in anonymous)
    assert len(set(anonymous)) == 2
    assert board["you"]["rank"] == 4 and board["you"]["successful_referrals"] == 0
    assert board["you"]["is_you"] and board["you"]["name"].startswith("Referrer #")
    text = str(board)
    for secret in ("Bob", "Carol", "bob-ext", "@x.io", "outsider", people["bob"]["id"]):
        assert secret not in text
    # Stable: the same label for the same referrer, whoever looks.
    bobs = await me_ok(client, tokens["bob"], "/leaderboard")
    assert bobs["you"]["name"] in anonymous
    assert (await me_ok(client, tokens["bob"], "/leaderboard"))["you"] == bobs["you"]

    one = await me_ok(client, tokens["carol"], "/leaderboard", limit=1)
    assert [e["name"] for e in one["top"]] == ["Ally"]
    assert one["you"]["rank"] == 2 and one["you"]["successful_referrals"] == 1
    mine = await me_ok(client, tokens["alice"], "/leaderboard")
    assert mine["you"] == {"rank": 1, "name": "Ally", "successful_referrals": 3, "is_you": True}
    assert mine["top"][0]["is_you"]

    await client.patch("/v1/me", json={"leaderboard_name": None}, headers=auth(tokens["alice"]))
    again = await me_ok(client, tokens["dave"], "/leaderboard")
    assert again["top"][0]["name"].startswith("Referrer #")
    for limit in (0, 101, "x"):
        response = await me(client, tokens["dave"], "/leaderboard", limit=limit)
        assert_problem(response, 422, "validation_error")


async def test_an_empty_leaderboard(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    board = await me_ok(client, w["token"], "/leaderboard")
    assert board["top"] == []
    assert board["you"]["rank"] == 1 and board["you"]["successful_referrals"] == 0


async def test_progress_stops_at_the_rules_cap(client: AsyncClient, app: Any) -> None:
    w = await referrer_with_session(client, app)
    admin, prog, code = w["admin"], w["program"], code_of(w["alice"])
    await add_rule(
        client,
        admin,
        prog["id"],
        recipient="referrer",
        kind="fixed",
        amount="10.00",
        max_rewards_per_referrer=2,
        tiers=[{"from_referral": 3, "amount": "15.00"}],
    )
    lefts = []
    for n in range(3):
        (rule,) = (await me_ok(client, w["token"], "/progress"))["rules"]
        lefts.append(rule["rewards_left"])
        await purchase(client, admin, prog, f"e{n}", f"friend-{n}", "50.00", code=code)
    (rule,) = (await me_ok(client, w["token"], "/progress"))["rules"]
    assert lefts == [2, 1, 0]
    assert rule["rewards_left"] == 0 and rule["next"] is None
    assert rule["sentence"] == "You have earned all 2 rewards this offer pays."
    # The ledger agrees: the third purchase paid nothing.
    assert len((await me_ok(client, w["token"], "/rewards"))["data"]) == 2

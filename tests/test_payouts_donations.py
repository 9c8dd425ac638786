"""Donation rewards: the program's charities, the referrer's choice (API and /v1/me), donation
batches per charity with a receipt line per referrer, and the referrer's own payout details."""

from typing import Any

from httpx import AsyncClient

from tests.factories import assert_problem, auth
from tests.money_factories import Shop, make_shop
from tests.payout_factories import (
    add_charity,
    batch_call,
    create_batch,
    csv_rows,
    earn,
    new_batch,
    read_batch,
    referrer_of,
    settings,
)
from tests.session_factories import session_token

DONATION = {
    "recipient": "referrer",
    "kind": "fixed",
    "amount": "5.00",
    "fulfilment": "donation",
    "trigger": "every_purchase",
}


async def me_patch(client: AsyncClient, token: str, **body: Any) -> Any:
    return await client.patch("/v1/me", json=body, headers=auth(token))


async def test_a_donation_rule_needs_the_programs_charities(shop: Shop) -> None:
    path = f"/v1/programs/{shop.pid}/reward-rules"
    response = await shop.client.post(path, json=DONATION, headers=auth(shop.admin))
    body = assert_problem(response, 422, "program_has_no_charities")
    assert f"/v1/programs/{shop.pid}/charities" in body["detail"]
    charity = await add_charity(shop.client, shop.admin, shop.pid, registration_number="EIN-1")
    assert (charity["name"], charity["active"]) == ("Trees for All", True)
    rule = await shop.rule(**DONATION)
    assert rule["fulfilment"] == "donation"
    # Retired, the last charity no longer backs a new donation rule.
    retired = await shop.client.patch(
        f"/v1/charities/{charity['id']}", json={"active": False}, headers=auth(shop.admin)
    )
    assert retired.status_code == 200 and retired.json()["active"] is False
    response = await shop.client.post(path, json=DONATION, headers=auth(shop.admin))
    assert_problem(response, 422, "program_has_no_charities")


async def test_charities_belong_to_their_program(client: AsyncClient, app: Any) -> None:
    one = await make_shop(client, app)
    other = await make_shop(client, app, name="Other")
    theirs = await add_charity(client, other.admin, other.pid, name="Theirs")
    await add_charity(client, one.admin, one.pid, name="Ours")
    listed = await client.get(f"/v1/programs/{one.pid}/charities", headers=auth(one.admin))
    assert [c["name"] for c in listed.json()] == ["Ours"]
    # Another program's charity cannot be chosen.
    response = await settings(client, one.admin, one.alice["id"], charity_id=theirs["id"])
    assert_problem(response, 422, "unknown_charity")
    response = await client.patch(
        "/v1/charities/00000000-0000-0000-0000-000000000000",
        json={"name": "x"},
        headers=auth(one.admin),
    )
    assert_problem(response, 404, "charity_not_found")


async def test_the_referrer_chooses_a_charity_and_payout_details_in_me(shop: Shop) -> None:
    trees = await add_charity(shop.client, shop.admin, shop.pid)
    await add_charity(shop.client, shop.admin, shop.pid, name="Clean Seas")
    token = await session_token(shop.client, shop.admin, shop.alice["id"])
    me = (await shop.client.get("/v1/me", headers=auth(token))).json()
    assert [c["name"] for c in me["charities"]] == ["Trees for All", "Clean Seas"]
    assert me["payout"] == {"payout_method": None, "payout_recipient": None, "charity": None}

    response = await me_patch(
        shop.client,
        token,
        charity_id=trees["id"],
        payout_method="paypal",
        payout_recipient="alice@example.com",
    )
    assert response.status_code == 200, response.text
    payout = response.json()["payout"]
    assert (payout["payout_recipient"], payout["charity"]["id"]) == ("a***@e***.com", trees["id"])
    # The leaderboard name is untouched by a payout change, and the other way round.
    response = await me_patch(shop.client, token, leaderboard_name="Alice")
    assert response.json()["payout"]["charity"]["id"] == trees["id"]

    response = await me_patch(shop.client, token, charity_id=shop.pid)
    assert_problem(response, 422, "unknown_charity")
    response = await me_patch(shop.client, token, payout_method="paypal")
    assert_problem(response, 422, "invalid_payout_details")
    response = await me_patch(shop.client, token, charity_id=None)
    assert response.json()["payout"]["charity"] is None


async def test_donation_batches_total_per_charity_with_a_receipt_per_referrer(shop: Shop) -> None:
    trees = await add_charity(shop.client, shop.admin, shop.pid, registration_number="EIN-1")
    seas = await add_charity(shop.client, shop.admin, shop.pid, name="Clean Seas")
    await shop.rule(**DONATION)
    bob = await referrer_of(shop, "bob", name="Bob Donor", email="bob@example.com")
    carol = await referrer_of(shop, "carol")
    dave = await referrer_of(shop, "dave")
    for referrer, charity in ((bob, trees), (carol, trees), (dave, seas)):
        response = await settings(shop.client, shop.admin, referrer["id"], charity_id=charity["id"])
        assert response.status_code == 200, response.text
    await earn(shop, bob, "c1")
    await earn(shop, bob, "c2")
    await earn(shop, carol, "c3")
    await earn(shop, dave, "c4")
    await earn(shop, shop.alice, "c5")  # alice chose no charity
    # A payout batch does not take donations.
    assert_problem(await create_batch(shop), 409, "empty_batch")
    # Donations accumulate per charity until a batch takes them.
    charities = f"/v1/programs/{shop.pid}/charities"
    listed = (await shop.client.get(charities, headers=auth(shop.admin))).json()
    assert [(c["name"], c["accumulated"], c["donors"]) for c in listed] == [
        ("Trees for All", "15.00", 2),
        ("Clean Seas", "5.00", 1),
    ]

    batch = await new_batch(shop, "donation")
    listed = (await shop.client.get(charities, headers=auth(shop.admin))).json()
    assert [(c["accumulated"], c["donors"]) for c in listed] == [("0.00", 0), ("0.00", 0)]
    assert (batch["kind"], batch["total"], batch["reward_count"]) == ("donation", "20.00", 4)
    totals = {t["charity"]["name"]: (t["amount"], t["donors"]) for t in batch["charities"]}
    assert totals == {"Trees for All": ("15.00", 2), "Clean Seas": ("5.00", 1)}
    assert [(line["external_id"], line["charity_id"]) for line in batch["lines"]] == [
        ("bob", trees["id"]),
        ("carol", trees["id"]),
        ("dave", seas["id"]),
    ]
    (alice,) = batch["left_out"]
    assert (alice["external_id"], alice["status"], alice["amount"]) == (
        "alice",
        "no_charity",
        "5.00",
    )

    paid = await batch_call(shop, batch, "mark-paid", {"reference": "DON-2026-12"})
    assert paid.status_code == 200, paid.text
    header, *rows = csv_rows(await read_batch(shop, batch, format="csv"))
    receipts = [dict(zip(header, row, strict=True)) for row in rows]
    assert [
        (r["charity_name"], r["external_id"], r["donor_name"], r["amount"], r["status"])
        for r in receipts
    ] == [
        ("Trees for All", "bob", "Bob Donor", "10.00", "included"),
        ("Trees for All", "carol", "", "5.00", "included"),
        ("Clean Seas", "dave", "", "5.00", "included"),
        ("", "alice", "", "5.00", "no_charity"),
    ]
    assert {r["reference"] for r in receipts} == {"DON-2026-12"}
    assert receipts[0]["charity_registration_number"] == "EIN-1"
    ledger = await shop.ledger()
    assert sorted(r["status"] for r in ledger) == ["approved", "paid", "paid", "paid", "paid"]
    # No PayPal file for a donation batch.
    response = await shop.client.get(
        f"/v1/programs/{shop.pid}/payout-batches/{batch['id']}/paypal.csv",
        headers=auth(shop.admin),
    )
    assert_problem(response, 404, "payout_batch_not_found")

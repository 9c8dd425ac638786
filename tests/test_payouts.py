"""Cash rewards and payout batches, through HTTP: balances net of clawbacks, details listed
or left out, the CSV and PayPal exports, mark-paid through the ledger, cancel, bad input."""

from decimal import Decimal
from typing import Any

from httpx import AsyncClient
from sqlalchemy import select

from app.rewards.models import Reward
from app.webhooks.models import WebhookEvent
from tests.factories import assert_problem, auth, db_all
from tests.money_factories import Shop, transition
from tests.payout_factories import (
    batch_call,
    create_batch,
    csv_rows,
    earn,
    lines_by_external_id,
    new_batch,
    pay_to,
    read_batch,
    referrer_of,
    settings,
)
from tests.test_erasure import everything_stored

CASH = {"recipient": "referrer", "kind": "fixed", "amount": "10.00", "fulfilment": "cash"}
EVERY = {"trigger": "every_purchase"}


async def cash_rewards(shop: Shop, conversion: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in conversion["rewards"] if r["fulfilment_method"] == "cash"]


async def test_a_cash_rule_needs_no_provider_and_pays_referrers_only(shop: Shop) -> None:
    rule = await shop.rule(**CASH)
    assert (rule["fulfilment"], rule["fulfilment_provider"]) == ("cash", None)
    path = f"/v1/programs/{shop.pid}/reward-rules"
    with_provider = CASH | {"fulfilment_provider": "stripe"}
    response = await shop.client.post(path, json=with_provider, headers=auth(shop.admin))
    assert_problem(response, 422, "invalid_fulfilment")
    to_referee = CASH | {"recipient": "referee"}
    response = await shop.client.post(path, json=to_referee, headers=auth(shop.admin))
    assert_problem(response, 422, "invalid_fulfilment")

    conversion = await shop.buy("cust_1", "50.00")
    (reward,) = await cash_rewards(shop, conversion)
    # Approved at once (no hold), with nothing to issue: it waits for a payout batch.
    assert (reward["status"], reward["fulfilment"], reward["payout_batch_id"]) == (
        "approved",
        None,
        None,
    )


async def test_payout_details_are_validated_and_answered_masked(shop: Shop) -> None:
    rid = shop.alice["id"]
    shown = await pay_to(shop.client, shop.admin, rid, "paypal", "Alice.Pays@Example.com")
    assert shown == {
        "referrer_id": rid,
        "payout_method": "paypal",
        "payout_recipient": "a***@e***.com",
        "charity": None,
    }
    read = await shop.client.get(f"/v1/referrers/{rid}/payout-settings", headers=auth(shop.admin))
    assert read.json() == shown
    other = await pay_to(shop.client, shop.admin, rid, "other", "DE89370400440532013000")
    assert other["payout_recipient"] == "****3000"

    for body in (
        {"payout_method": "paypal", "payout_recipient": "not an address"},
        {"payout_method": "paypal", "payout_recipient": "=HYPERLINK(1)@x.com"},
        {"payout_method": "paypal"},
        {"payout_recipient": "alice@example.com"},
    ):
        response = await settings(shop.client, shop.admin, rid, **body)
        assert_problem(response, 422, "invalid_payout_details")
    response = await settings(shop.client, shop.admin, rid, payout_method="wire")
    assert_problem(response, 422, "validation_error")
    # Refused input changed nothing; both null clears.
    read = await shop.client.get(f"/v1/referrers/{rid}/payout-settings", headers=auth(shop.admin))
    assert read.json()["payout_recipient"] == "****3000"
    cleared = await settings(
        shop.client, shop.admin, rid, payout_method=None, payout_recipient=None
    )
    assert (cleared.json()["payout_method"], cleared.json()["payout_recipient"]) == (None, None)


async def test_a_batch_collects_net_balances_and_lists_referrers_without_details(
    shop: Shop,
) -> None:
    await shop.rule(**CASH, **EVERY)
    bob = await referrer_of(shop, "bob")
    carol = await referrer_of(shop, "carol")
    await pay_to(shop.client, shop.admin, bob["id"], "paypal", "bob@example.com")
    await pay_to(shop.client, shop.admin, carol["id"], "other", "NL91ABNA0417164300")
    await earn(shop, bob, "c1")
    await earn(shop, bob, "c2")
    refunded = await earn(shop, bob, "c3")
    await earn(shop, carol, "c4")
    await earn(shop, shop.alice, "c5")
    # Refunded before any batch: the unpaid reward is reversed in place, nothing to net.
    assert (await shop.refund(refunded)).status_code == 201

    batch = await new_batch(shop)
    assert (batch["kind"], batch["status"], batch["currency"]) == ("payout", "open", "USD")
    assert (batch["total"], batch["reward_count"]) == ("30.00", 3)
    lines = lines_by_external_id(batch)
    assert {name: (line["amount"], line["reward_count"]) for name, line in lines.items()} == {
        "bob": ("20.00", 2),
        "carol": ("10.00", 1),
    }
    assert lines["bob"]["payout_recipient"] == "b***@e***.com"  # masked in JSON
    (alice,) = batch["left_out"]
    assert (alice["external_id"], alice["status"], alice["amount"]) == (
        "alice",
        "no_payout_details",
        "10.00",
    )
    # Alice's reward waits, unbatched; the others point at the batch.
    in_batch = await shop.ledger(referrer_id=bob["id"], status="approved")
    assert {r["payout_batch_id"] for r in in_batch} == {batch["id"]}
    alice_rewards = await shop.ledger(referrer_id=shop.alice["id"])
    assert [r["payout_batch_id"] for r in alice_rewards] == [None]

    read = await read_batch(shop, batch)
    assert read.status_code == 200 and read.json() == batch

    # Everything due is in a batch now: the next one is empty (alice still has no details).
    response = await create_batch(shop)
    body = assert_problem(response, 409, "empty_batch")
    assert "1 referrers are owed but have no payout details" in body["detail"]


async def test_exports_write_the_details_whole_and_paypal_rows_in_its_format(
    shop: Shop,
) -> None:
    await shop.rule(**CASH, **EVERY)
    bob = await referrer_of(shop, "bob")
    carol = await referrer_of(shop, "carol")
    await pay_to(shop.client, shop.admin, bob["id"], "paypal", "bob@example.com")
    await pay_to(shop.client, shop.admin, carol["id"], "other", "NL91ABNA0417164300")
    await earn(shop, bob, "c1")
    await earn(shop, bob, "c2")
    await earn(shop, carol, "c3")
    await earn(shop, shop.alice, "c4")
    batch = await new_batch(shop)

    rows = csv_rows(await read_batch(shop, batch, format="csv"))
    header, *data = rows
    assert header[:10] == [
        "batch_id",
        "line",
        "status",
        "referrer_id",
        "external_id",
        "amount",
        "currency",
        "reward_count",
        "payout_method",
        "payout_recipient",
    ]
    assert [row[2:3] + row[4:10] for row in data] == [
        ["included", "bob", "20.00", "USD", "2", "paypal", "bob@example.com"],
        ["included", "carol", "10.00", "USD", "1", "other", "NL91ABNA0417164300"],
        ["no_payout_details", "alice", "10.00", "USD", "1", "", ""],
    ]

    paypal = await shop.client.get(
        f"/v1/programs/{shop.pid}/payout-batches/{batch['id']}/paypal.csv",
        headers=auth(shop.admin),
    )
    (row,) = csv_rows(paypal)  # no header row; only the PayPal line
    assert paypal.headers["x-paypal-parts"] == "1"
    assert row == [
        "bob@example.com",
        "20.00",
        "USD",
        f"{batch['id'].replace('-', '')[:12]}-1",
        "Spring referrals: referral rewards",
        "PAYPAL",
    ]
    assert len(row[3]) <= 30 and " " not in row[3]


async def test_mark_paid_settles_every_reward_once_with_the_reference(
    shop: Shop, client: AsyncClient, app: Any
) -> None:
    endpoint = {"url": "http://127.0.0.1:9/hook", "event_types": ["reward.paid"]}
    created = await client.post("/v1/webhook-endpoints", json=endpoint, headers=auth(shop.admin))
    assert created.status_code == 201, created.text
    await shop.rule(**CASH, **EVERY)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    await shop.buy("c1", "10.00")
    await shop.buy("c2", "10.00")
    batch = await new_batch(shop)
    (reward, *_) = await shop.ledger()
    # A reward of an open batch is settled by the batch, not by itself.
    for action, body in (("mark-paid", None), ("reverse", {"reason": "fraud"})):
        response = await transition(client, shop.admin, reward["id"], action, body)
        assert_problem(response, 409, "reward_in_batch")

    paid = await batch_call(shop, batch, "mark-paid", {"reference": "PAYPAL-BATCH-7"})
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["reference"]) == ("paid", "PAYPAL-BATCH-7")
    ledger = await shop.ledger()
    assert {(r["status"], r["payout_reference"], r["payout_batch_id"]) for r in ledger} == {
        ("paid", "PAYPAL-BATCH-7", batch["id"])
    }
    events = await db_all(app, select(WebhookEvent).where(WebhookEvent.event_type == "reward.paid"))
    assert sorted(e.object_id for e in events) == sorted(r["id"] for r in ledger)
    assert all("alice@example.com" not in str(e.payload) for e in events)

    for action, body in (("mark-paid", {"reference": "again"}), ("cancel", None)):
        response = await batch_call(shop, batch, action, body)
        assert_problem(response, 409, "batch_not_open")
    response = await batch_call(shop, batch, "mark-paid", {})
    assert_problem(response, 422, "validation_error")


async def test_cancel_releases_the_rewards_for_the_next_batch(shop: Shop) -> None:
    await shop.rule(**CASH, **EVERY)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    await shop.buy("c1", "10.00")
    first = await new_batch(shop)
    cancelled = await batch_call(shop, first, "cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_at"]
    assert [r["payout_batch_id"] for r in await shop.ledger()] == [None]
    second = await new_batch(shop)
    assert (second["total"], second["reward_count"]) == ("10.00", 1)
    response = await batch_call(shop, first, "mark-paid", {"reference": "late"})
    assert_problem(response, 409, "batch_not_open")


async def test_a_clawback_nets_out_of_the_next_batch(shop: Shop) -> None:
    await shop.rule(**CASH, **EVERY)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    first_sale = await shop.buy("c1", "10.00")
    second_sale = await shop.buy("c2", "10.00")
    first = await new_batch(shop)
    # Refunded while its reward is in an open batch: clawed back with a negative entry.
    assert (await shop.refund(second_sale)).status_code == 201
    assert (await batch_call(shop, first, "mark-paid", {"reference": "P1"})).status_code == 200
    # Refunded after the payout: a clawback too.
    assert (await shop.refund(first_sale)).status_code == 201
    clawbacks = [r for r in await shop.ledger() if r["entry_type"] == "clawback"]
    assert sorted((r["amount"], r["status"]) for r in clawbacks) == [
        ("-10.00", "approved"),
        ("-10.00", "approved"),
    ]
    for customer in ("c3", "c4", "c5"):
        await shop.buy(customer, "10.00")
    # 30.00 earned, 20.00 owed back: 10.00 to pay; below a 15.00 minimum it waits.
    response = await create_batch(shop, minimum_amount="15.00")
    assert_problem(response, 409, "empty_batch")
    second = await new_batch(shop, minimum_amount="10.00")
    assert (second["total"], second["reward_count"]) == ("10.00", 5)
    assert (await batch_call(shop, second, "mark-paid", {"reference": "P2"})).status_code == 200
    balance = await shop.client.get(
        f"/v1/referrers/{shop.alice['id']}/balance", headers=auth(shop.admin)
    )
    (line,) = balance.json()["balances"]
    assert (line["approved"], line["paid"]) == ("0.00", "30.00")


async def test_the_cutoff_keeps_later_approvals_for_a_later_batch(shop: Shop, app: Any) -> None:
    await shop.rule(**CASH, **EVERY)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    await shop.buy("c1", "10.00")
    rows = await db_all(app, select(Reward))
    cutoff = rows[0].approved_at
    await shop.buy("c2", "10.00")
    batch = await new_batch(shop, cutoff=cutoff.isoformat())
    assert (batch["total"], batch["reward_count"]) == ("10.00", 1)
    assert batch["cutoff"] is not None
    rest = await new_batch(shop)
    assert (rest["total"], rest["reward_count"]) == ("10.00", 1)


async def test_bad_batch_requests_change_nothing(shop: Shop) -> None:
    await shop.rule(**CASH, **EVERY)
    await pay_to(shop.client, shop.admin, shop.alice["id"], "paypal", "alice@example.com")
    response = await create_batch(shop)
    assert_problem(response, 409, "empty_batch")
    await shop.buy("c1", "10.00")
    assert_problem(await create_batch(shop, currency="EUR"), 422, "currency_mismatch")
    assert_problem(await create_batch(shop, minimum_amount="1.001"), 422, "invalid_batch")
    assert_problem(await create_batch(shop, minimum_amount=5), 422, "validation_error")
    assert_problem(await create_batch(shop, cutoff="2026-01-01"), 422, "validation_error")
    assert [r["payout_batch_id"] for r in await shop.ledger()] == [None]
    missing = {"id": "00000000-0000-0000-0000-000000000000", "kind": "payout"}
    assert_problem(await read_batch(shop, missing), 404, "payout_batch_not_found")
    batch = await new_batch(shop)
    # A payout batch is not a donation batch.
    response = await read_batch(shop, batch | {"kind": "donation"})
    assert_problem(response, 404, "payout_batch_not_found")
    assert Decimal(batch["total"]) == Decimal("10.00")


async def test_erasure_clears_payout_details_and_leaves_no_copy(shop: Shop, app: Any) -> None:
    await shop.rule(**CASH, **EVERY)
    recipient = "alice.paid@example.com"
    response = await shop.client.patch(
        f"/v1/referrers/{shop.alice['id']}/payout-settings",
        json={"payout_method": "paypal", "payout_recipient": recipient},
        headers=auth(shop.admin) | {"Idempotency-Key": "payout-details-1"},
    )
    assert response.status_code == 200 and recipient not in response.text
    await shop.buy("c1", "10.00")
    batch = await new_batch(shop)
    assert recipient not in str(batch)
    assert (await batch_call(shop, batch, "mark-paid", {"reference": "P1"})).status_code == 200
    assert recipient in (await read_batch(shop, batch, format="csv")).text

    response = await shop.client.delete("/v1/customers/alice", headers=auth(shop.admin))
    assert response.status_code == 200, response.text
    read = await shop.client.get(
        f"/v1/referrers/{shop.alice['id']}/payout-settings", headers=auth(shop.admin)
    )
    assert read.json()["payout_method"] is None and read.json()["payout_recipient"] is None
    assert recipient not in await everything_stored(app)
    # The batch keeps its line (the amount paid), with no details left to export.
    exported = (await read_batch(shop, batch, format="csv")).text
    assert recipient not in exported and "10.00" in exported

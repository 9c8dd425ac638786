from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import func, select

from app.conversions.models import Conversion
from app.rewards.models import Reward
from tests.factories import assert_problem, auth, db_all, make_key, make_program, make_referrer
from tests.money_factories import (
    add_rule,
    get_conversion,
    list_all,
    post_conversion,
    post_refund,
    purchase,
    setup_program,
)


async def test_explicit_code_pays_double_sided_rules(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    code = referrer["default_code"]["code"]
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="10.00")
    await add_rule(client, admin, prog["id"], recipient="referee", kind="percent", percent="12.5")
    response = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="ord_1",
        customer_id="bob",
        amount="99.99",
        currency="USD",
        code=code.lower(),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "attributed"
    assert body["attribution_reason"] == "explicit_code"
    assert body["referrer_id"] == referrer["id"]
    amounts = sorted((r["recipient"], r["amount"], r["status"]) for r in body["rewards"])
    # 12.5% of 99.99 = 12.49875 → 12.50 (half-even to cents)
    assert amounts == [("referee", "12.50", "approved"), ("referrer", "10.00", "approved")]

    replay = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="ord_1",
        customer_id="bob",
        amount="99.99",
        currency="USD",
        code=code.lower(),
    )
    assert replay.status_code == 200
    assert replay.json() == body

    conflict = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="ord_1",
        customer_id="bob",
        amount="5.00",
        currency="USD",
    )
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "event_id_conflict"

    refund = await client.post(
        f"/v1/conversions/{body['id']}/refunds",
        json={"amount": "49.99", "refund_id": "rf_1"},
        headers=auth(admin),
    )
    assert refund.status_code == 201, refund.text
    after = (await client.get(f"/v1/conversions/{body['id']}", headers=auth(admin))).json()
    amounts = sorted((r["recipient"], r["amount"], r["status"]) for r in after["rewards"])
    # referee keeps 12.5 x 50/99.99 ≈ 6.2506 → 6.25; the fixed reward stays
    assert amounts == [("referee", "6.25", "approved"), ("referrer", "10.00", "approved")]
    attribution = await client.get(f"/v1/conversions/{body['id']}/attribution", headers=auth(admin))
    assert attribution.status_code == 200
    assert attribution.json()["winner"]["kind"] == "code"

    balance = await client.get(f"/v1/referrers/{referrer['id']}/balance", headers=auth(admin))
    assert balance.json()["balances"] == [
        {
            "unit": "USD",
            "pending": "0.00",
            "approved": "10.00",
            "paid": "0.00",
            "owed": "10.00",
            "payable": "10.00",
        }
    ]


async def test_self_referral_and_organic(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    code = referrer["default_code"]["code"]
    self_ref = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="e1",
        customer_id="alice",
        amount="10",
        currency="USD",
        code=code,
    )
    assert self_ref.json()["attribution_reason"] == "self_referral"
    organic = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="e2",
        customer_id="zed",
        amount="10",
        currency="USD",
    )
    assert organic.json()["status"] == "unattributed"
    assert organic.json()["attribution_reason"] == "organic"


async def test_redemption_window(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app, attribution_window_days=7)
    code = referrer["default_code"]["code"]
    redeem = await client.post(
        "/v1/redemptions", json={"code": code, "customer_id": "carol"}, headers=auth(admin)
    )
    assert redeem.status_code == 201
    later = (datetime.now(UTC) + timedelta(days=-0)).isoformat()
    inside = await post_conversion(
        client,
        admin,
        program_id=prog["id"],
        event_id="c1",
        customer_id="carol",
        amount="20.00",
        currency="USD",
        occurred_at=later,
    )
    assert inside.json()["attribution_reason"] == "last_touch", inside.text
    assert Decimal(inside.json()["amount"]) == Decimal("20")


async def count_rows(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def conversion_body(program: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "program_id": program["id"],
        "event_id": "ord_1",
        "customer_id": "bob",
        "amount": "25.00",
        "currency": program["currency"],
    } | overrides


# --- input that is refused, and changes nothing ---------------------------------------------


async def test_refused_conversions_store_nothing(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    jpy = await make_program(client, admin, name="Japan", currency="JPY")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases = [
        (conversion_body(prog, currency="EUR"), 422, "currency_mismatch"),
        (conversion_body(prog, amount="10.001"), 422, "invalid_amount"),
        (conversion_body(jpy, amount="10.5"), 422, "invalid_amount"),
        (conversion_body(prog, occurred_at=future), 422, "occurred_in_future"),
        (conversion_body(prog, amount="0"), 422, "validation_error"),
        (conversion_body(prog, amount="-5.00"), 422, "validation_error"),
        (conversion_body(prog, currency="XXY"), 422, "validation_error"),
        (conversion_body(prog, occurred_at="2026-01-01T10:00:00"), 422, "validation_error"),
        (conversion_body(prog, event_id=""), 422, "validation_error"),
        (conversion_body(prog, surprise=1), 422, "validation_error"),
        (
            conversion_body(prog, program_id="00000000-0000-4000-8000-000000000000"),
            404,
            "program_not_found",
        ),
    ]
    for body, status, code in cases:
        response = await client.post("/v1/conversions", json=body, headers=auth(admin))
        assert_problem(response, status, code)
    assert await count_rows(app, Conversion) == 0


async def test_occurred_at_a_little_ahead_is_tolerated(client: AsyncClient, app: Any) -> None:
    # merchant clocks drift: up to five minutes ahead is accepted as is
    admin, prog, _ = await setup_program(client, app)
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    bought = await purchase(client, admin, prog, "o1", "bob", "1.00", occurred_at=ahead.isoformat())
    assert datetime.fromisoformat(bought["occurred_at"]) == ahead


async def test_amount_is_answered_to_the_minor_unit(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    bought = await purchase(client, admin, prog, "o1", "bob", "7.5")
    assert bought["amount"] == "7.50"
    assert bought["refunded_amount"] == "0.00"
    assert bought["currency"] == "USD"
    jpy = await make_program(client, admin, name="Japan", currency="JPY")
    yen = await purchase(client, admin, jpy, "o1", "bob", "1200")
    assert yen["amount"] == "1200"


# --- idempotency on event_id ------------------------------------------------------------------


async def test_replay_without_occurred_at_returns_the_first_result(
    client: AsyncClient, app: Any
) -> None:
    admin, prog, referrer = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="3.00")
    body = conversion_body(prog, code=referrer["default_code"]["code"], metadata={"k": [1, 2]})
    first = await client.post("/v1/conversions", json=body, headers=auth(admin))
    assert first.status_code == 201, first.text
    again = await client.post("/v1/conversions", json=body, headers=auth(admin))
    assert again.status_code == 200
    # the same occurred_at (defaulted once), the same rewards: nothing recomputed
    assert again.json() == first.json()
    assert await count_rows(app, Conversion) == 1
    assert await count_rows(app, Reward) == 1


async def test_same_event_id_with_another_body_is_a_conflict(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    code = referrer["default_code"]["code"]
    await purchase(client, admin, prog, "ord_1", "bob", "25.00", code=code)
    for changed in (
        {"amount": "25.01"},
        {"customer_id": "bobby"},
        {"code": None},
        {"email": "bob@example.com"},
        {"occurred_at": datetime.now(UTC).isoformat()},
    ):
        body = conversion_body(prog, code=code) | changed
        body = {k: v for k, v in body.items() if v is not None}
        response = await client.post("/v1/conversions", json=body, headers=auth(admin))
        assert_problem(response, 409, "event_id_conflict")
    assert await count_rows(app, Conversion) == 1
    assert await count_rows(app, Reward) == 0  # no rule: nothing to pay, and nothing paid twice


async def test_event_id_is_unique_per_program(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    other = await make_program(client, admin, name="Other")
    a = await purchase(client, admin, prog, "ord_1", "bob", "25.00")
    b = await purchase(client, admin, other, "ord_1", "bob", "25.00")
    assert a["id"] != b["id"]


# --- reading ----------------------------------------------------------------------------------


async def test_get_conversion(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="points", points=50)
    bought = await purchase(
        client,
        admin,
        prog,
        "o1",
        "bob",
        "12.00",
        code=referrer["default_code"]["code"],
        metadata={"sku": "A-1"},
    )
    fetched = await get_conversion(client, admin, bought["id"])
    assert fetched == bought
    assert fetched["metadata"] == {"sku": "A-1"}
    assert [(r["unit"], r["amount"]) for r in fetched["rewards"]] == [("points", "50")]


async def test_unknown_conversion_is_404(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(
        await client.get(f"/v1/conversions/{missing}", headers=auth(admin)),
        404,
        "conversion_not_found",
    )
    assert_problem(
        await post_refund(client, admin, missing, amount="1.00"), 404, "conversion_not_found"
    )


async def test_key_of_another_program_sees_no_conversion(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="fixed", amount="3.00")
    bought = await purchase(
        client, admin, prog, "o1", "bob", "12.00", code=referrer["default_code"]["code"]
    )
    other = await make_program(client, admin, name="Other")
    limited = await make_key(app, "secret", [UUID(other["id"])])
    assert_problem(
        await client.get(f"/v1/conversions/{bought['id']}", headers=auth(limited)),
        404,
        "conversion_not_found",
    )
    assert_problem(
        await post_refund(client, limited, bought["id"], amount="1.00"),
        404,
        "conversion_not_found",
    )
    assert await list_all(client, limited, "/v1/conversions") == []
    assert await list_all(client, limited, "/v1/conversions", program_id=prog["id"]) == []
    assert await list_all(client, limited, "/v1/rewards") == []
    reward_id = bought["rewards"][0]["id"]
    for action in ("approve", "mark-paid"):
        response = await client.post(f"/v1/rewards/{reward_id}/{action}", headers=auth(limited))
        assert_problem(response, 404, "reward_not_found")
    # nor may it record a purchase in the other program
    response = await post_conversion(client, limited, **conversion_body(prog, event_id="o2"))
    assert_problem(response, 404, "program_not_found")
    # nothing was refunded on the way
    assert (await get_conversion(client, admin, bought["id"]))["refunded_amount"] == "0.00"

    own = await make_key(app, "secret", [UUID(prog["id"])])
    assert (
        await client.get(f"/v1/conversions/{bought['id']}", headers=auth(own))
    ).status_code == 200


async def test_list_conversions_filters(client: AsyncClient, app: Any) -> None:
    admin, prog, alice = await setup_program(client, app)
    bob = await make_referrer(client, admin, prog["id"], "bob")
    other = await make_program(client, admin, name="Other")
    now = datetime.now(UTC)
    c1 = await purchase(
        client,
        admin,
        prog,
        "c1",
        "carol",
        "10.00",
        code=alice["default_code"]["code"],
        occurred_at=(now - timedelta(days=10)).isoformat(),
    )
    c2 = await purchase(client, admin, prog, "c2", "zed", "11.00")
    c3 = await purchase(
        client, admin, prog, "c3", "dave", "12.00", code=bob["default_code"]["code"]
    )
    c4 = await purchase(client, admin, prog, "c4", "carol", "13.00")  # through c1's referral
    c5 = await purchase(client, admin, other, "c5", "carol", "14.00")

    def ids(rows: list[dict[str, Any]]) -> list[str]:
        return [row["event_id"] for row in rows]

    path = "/v1/conversions"
    assert ids(await list_all(client, admin, path)) == ["c1", "c2", "c3", "c4", "c5"]
    assert ids(await list_all(client, admin, path, program_id=prog["id"])) == [
        "c1",
        "c2",
        "c3",
        "c4",
    ]
    assert ids(await list_all(client, admin, path, program_id=other["id"])) == ["c5"]
    assert ids(await list_all(client, admin, path, referrer_id=alice["id"])) == ["c1", "c4"]
    assert ids(await list_all(client, admin, path, referrer_id=bob["id"])) == ["c3"]
    assert ids(await list_all(client, admin, path, customer_id="carol")) == ["c1", "c4", "c5"]
    assert ids(await list_all(client, admin, path, customer_id="carol", program_id=prog["id"])) == [
        "c1",
        "c4",
    ]
    assert ids(await list_all(client, admin, path, status="unattributed")) == ["c2", "c5"]
    assert ids(await list_all(client, admin, path, status="attributed")) == ["c1", "c3", "c4"]
    cut = (now - timedelta(days=5)).isoformat()
    assert ids(await list_all(client, admin, path, **{"from": cut})) == ["c2", "c3", "c4", "c5"]
    assert ids(await list_all(client, admin, path, to=cut)) == ["c1"]
    # from is inclusive, to exclusive
    exact = c1["occurred_at"]
    assert ids(await list_all(client, admin, path, **{"from": exact, "to": cut})) == ["c1"]
    assert ids(await list_all(client, admin, path, to=exact)) == []
    assert c4["referrer_id"] == alice["id"] and c2["referrer_id"] is None
    assert {c3["id"], c5["id"]} <= {row["id"] for row in await list_all(client, admin, path)}

    invalid = await client.get(path, params={"status": "paid"}, headers=auth(admin))
    assert_problem(invalid, 422, "validation_error")


async def test_list_conversions_pages(client: AsyncClient, app: Any) -> None:
    admin, prog, _ = await setup_program(client, app)
    for i in range(5):
        await purchase(client, admin, prog, f"p{i}", f"cust_{i}", "1.00")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/conversions", params=params, headers=auth(admin))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2
        seen.extend(row["event_id"] for row in page["data"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    assert pages == 3
    bad = await client.get("/v1/conversions", params={"cursor": "nonsense"}, headers=auth(admin))
    assert_problem(bad, 422, "invalid_cursor")


async def test_refused_refunds_change_nothing(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    await add_rule(client, admin, prog["id"], recipient="referrer", kind="percent", percent="10")
    bought = await purchase(
        client, admin, prog, "o1", "bob", "20.00", code=referrer["default_code"]["code"]
    )
    for body, code in (
        ({"amount": "20.01"}, "refund_exceeds_amount"),
        ({"amount": "0.001"}, "invalid_amount"),
        ({"amount": "0"}, "validation_error"),
        ({"amount": "-1"}, "validation_error"),
        ({"amount": "1.00", "extra": True}, "validation_error"),
    ):
        assert_problem(await post_refund(client, admin, bought["id"], **body), 422, code)
    after = await get_conversion(client, admin, bought["id"])
    assert after["refunded_amount"] == "0.00"
    assert [r["amount"] for r in after["rewards"]] == ["2.00"]
    rewards = await db_all(app, select(Reward))
    assert [r.amount for r in rewards] == [Decimal("2.00")]

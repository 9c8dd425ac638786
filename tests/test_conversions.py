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
        client, admin, program_id=prog["id"], event_id="ord_1", customer_id="bob",
        amount="99.99", currency="USD", code=code.lower(),
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
        client, admin, program_id=prog["id"], event_id="ord_1", customer_id="bob",
        amount="99.99", currency="USD", code=code.lower(),
    )
    assert replay.status_code == 200
    assert replay.json() == body

    conflict = await post_conversion(
        client, admin, program_id=prog["id"], event_id="ord_1", customer_id="bob",
        amount="5.00", currency="USD",
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
    # referee keeps 12.5 × 50/99.99 ≈ 6.2506 → 6.25; the fixed reward stays
    assert amounts == [("referee", "6.25", "approved"), ("referrer", "10.00", "approved")]
    attribution = await client.get(f"/v1/conversions/{body['id']}/attribution", headers=auth(admin))
    assert attribution.status_code == 200
    assert attribution.json()["winner"]["kind"] == "code"

    balance = await client.get(f"/v1/referrers/{referrer['id']}/balance", headers=auth(admin))
    assert balance.json()["balances"] == [
        {"unit": "USD", "pending": "0.00", "approved": "10.00", "paid": "0.00",
         "owed": "10.00", "payable": "10.00"}
    ]


async def test_self_referral_and_organic(client: AsyncClient, app: Any) -> None:
    admin, prog, referrer = await setup_program(client, app)
    code = referrer["default_code"]["code"]
    self_ref = await post_conversion(
        client, admin, program_id=prog["id"], event_id="e1", customer_id="alice",
        amount="10", currency="USD", code=code,
    )
    assert self_ref.json()["attribution_reason"] == "self_referral"
    organic = await post_conversion(
        client, admin, program_id=prog["id"], event_id="e2", customer_id="zed",
        amount="10", currency="USD",
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
        client, admin, program_id=prog["id"], event_id="c1", customer_id="carol",
        amount="20.00", currency="USD", occurred_at=later,
    )
    assert inside.json()["attribution_reason"] == "last_touch", inside.text
    assert Decimal(inside.json()["amount"]) == Decimal("20")

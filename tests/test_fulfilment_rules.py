"""Bad input for fulfilment: rules a provider could not issue, and the credentials API.

Every refusal is a 422 (or 404/409) problem with a stable code, and nothing is stored.
"""

from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import OPERATOR
from app.fulfilment import service
from app.fulfilment.schemas import WebhookCredentials
from tests.factories import assert_problem, auth, make_key, make_program
from tests.fulfilment_helpers import connect_shopify, connect_stripe
from tests.money_factories import add_rule, patch_rule
from tests.payout_factories import add_charity
from tests.settings import settings_for_tests

COUPON = {"recipient": "referee", "kind": "fixed", "amount": "10.00", "fulfilment": "coupon"}


async def _program(client: AsyncClient, app: Any, **extra: Any) -> tuple[str, str]:
    admin = await make_key(app)
    program = await make_program(client, admin, **extra)
    return admin, program["id"]


async def _refused(
    client: AsyncClient, admin: str, program_id: str, rule: dict[str, Any], code: str
) -> str:
    response = await client.post(
        f"/v1/programs/{program_id}/reward-rules", json=rule, headers=auth(admin)
    )
    body = assert_problem(response, 422, code)
    listed = await client.get(f"/v1/programs/{program_id}/reward-rules", headers=auth(admin))
    assert listed.json() == []
    return str(body["detail"])


async def test_a_provider_the_program_has_not_configured_is_refused(
    client: AsyncClient, app: Any
) -> None:
    admin, program_id = await _program(client, app)
    detail = await _refused(
        client,
        admin,
        program_id,
        COUPON | {"fulfilment_provider": "shopify"},
        "fulfilment_provider_not_configured",
    )
    assert "no shopify credentials" in detail and "fulfilment-providers" in detail
    await connect_shopify(client, admin, program_id)
    created = await add_rule(client, admin, program_id, **COUPON, fulfilment_provider="shopify")
    assert (created["fulfilment"], created["fulfilment_provider"]) == ("coupon", "shopify")


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        (COUPON, "needs a fulfilment_provider"),
        (COUPON | {"fulfilment": "gift_card", "fulfilment_provider": "stripe"}, "cannot issue"),
        (COUPON | {"fulfilment": "cash", "fulfilment_provider": "stripe"}, "take no"),
        (COUPON | {"fulfilment": "ledger", "fulfilment_provider": "stripe"}, "take no"),
        (
            COUPON
            | {
                "fulfilment": "store_credit",
                "fulfilment_provider": "stripe",
                "coupon_percent": "10",
            },
            "coupon rules only",
        ),
    ],
)
async def test_a_method_and_provider_that_do_not_go_together_are_refused(
    client: AsyncClient, app: Any, rule: dict[str, Any], why: str
) -> None:
    admin, program_id = await _program(client, app)
    await connect_stripe(client, admin, program_id)
    assert why in await _refused(client, admin, program_id, rule, "invalid_fulfilment")


@pytest.mark.parametrize(
    ("currency", "rule"),
    [
        ("USD", COUPON | {"amount": "0.001"}),
        ("USD", COUPON | {"amount": "5.125"}),
        ("JPY", COUPON | {"amount": "10.5"}),
        ("USD", COUPON | {"kind": "points", "points": 500, "amount": None}),
        ("USD", COUPON | {"fulfilment": "cash", "kind": "points", "points": 5, "amount": None}),
        ("USD", COUPON | {"coupon_percent": "0"}),
        ("USD", COUPON | {"coupon_percent": "-5"}),
        ("USD", COUPON | {"coupon_percent": "100.5"}),
        ("USD", COUPON | {"coupon_percent": "12.345"}),
        (
            "USD",
            COUPON | {"recipient": "referrer", "tiers": [{"from_referral": 3, "amount": "7.001"}]},
        ),
    ],
)
async def test_a_value_the_provider_cannot_express_is_refused(
    client: AsyncClient, app: Any, currency: str, rule: dict[str, Any]
) -> None:
    admin, program_id = await _program(client, app, currency=currency)
    await connect_stripe(client, admin, program_id)
    provider = {} if rule["fulfilment"] == "cash" else {"fulfilment_provider": "stripe"}
    body = {key: value for key, value in (rule | provider).items() if value is not None}
    await _refused(client, admin, program_id, body, "fulfilment_value_not_expressible")


async def test_cash_and_donation_rules_take_no_provider_and_stay_in_the_ledger(
    client: AsyncClient, app: Any
) -> None:
    admin, program_id = await _program(client, app)
    # Donations go to a charity of the program's list (tests/test_payouts_donations.py).
    await add_charity(client, admin, program_id)
    for method in ("cash", "donation"):
        rule = await add_rule(
            client, admin, program_id, **(COUPON | {"fulfilment": method, "recipient": "referrer"})
        )
        assert (rule["fulfilment"], rule["fulfilment_provider"]) == (method, None)


async def test_patching_a_rule_checks_its_fulfilment_and_resets_the_provider(
    client: AsyncClient, app: Any
) -> None:
    admin, program_id = await _program(client, app)
    rule = await add_rule(client, admin, program_id, **(COUPON | {"fulfilment": "ledger"}))
    response = await client.patch(
        f"/v1/reward-rules/{rule['id']}",
        json={"fulfilment": "coupon", "fulfilment_provider": "stripe"},
        headers=auth(admin),
    )
    assert_problem(response, 422, "fulfilment_provider_not_configured")
    await connect_stripe(client, admin, program_id)
    changed = await patch_rule(
        client,
        admin,
        rule["id"],
        fulfilment="coupon",
        fulfilment_provider="stripe",
        coupon_percent="15",
    )
    assert (changed["version"], changed["coupon_percent"]) == (2, "15")
    # Back to the ledger: the provider and the coupon percent go with the method.
    back = await patch_rule(client, admin, rule["id"], fulfilment="ledger")
    assert (back["fulfilment_provider"], back["coupon_percent"], back["version"]) == (
        None,
        None,
        3,
    )
    null = await client.patch(
        f"/v1/reward-rules/{rule['id']}", json={"fulfilment": None}, headers=auth(admin)
    )
    assert_problem(null, 422, "invalid_request")


async def test_credentials_are_shown_by_prefix_only_replaced_and_deleted(
    client: AsyncClient, app: Any
) -> None:
    admin, program_id = await _program(client, app)
    path = f"/v1/programs/{program_id}/fulfilment-providers"
    shopify = await connect_shopify(client, admin, program_id)
    stripe = await connect_stripe(client, admin, program_id)
    assert shopify["prefix"] == "shpat_test" and shopify["signing_secret"] is None
    assert stripe["prefix"] == "sk_test_fulf"
    listed = await client.get(path, headers=auth(admin))
    text = listed.text
    assert "shpat_test_0123" not in text and "sk_test_fulfilment" not in text
    assert [row["provider"] for row in listed.json()] == ["shopify", "stripe"]

    again = await client.post(
        path,
        json={
            "provider": "stripe",
            "secret_key": "rk_live_0123456789abcdefXYZ",
        },
        headers=auth(admin),
    )
    assert again.status_code == 201 and again.json()["id"] == stripe["id"]
    assert again.json()["prefix"] == "rk_live_0123"

    await add_rule(client, admin, program_id, **COUPON, fulfilment_provider="stripe")
    in_use = await client.delete(f"{path}/stripe", headers=auth(admin))
    assert_problem(in_use, 409, "fulfilment_provider_in_use")
    gone = await client.delete(f"{path}/shopify", headers=auth(admin))
    assert gone.status_code == 204
    missing = await client.delete(f"{path}/shopify", headers=auth(admin))
    assert_problem(missing, 404, "fulfilment_provider_not_found")
    assert [row["provider"] for row in (await client.get(path, headers=auth(admin))).json()] == [
        "stripe"
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "shopify", "shop_domain": "acme.example.com", "access_token": "x" * 20},
        {"provider": "shopify", "shop_domain": "acme.myshopify.com", "access_token": "short"},
        {"provider": "stripe", "secret_key": "pk_test_0123456789abcdef"},
        {"provider": "webhook", "url": "ftp://issuer.example.com/"},
        {"provider": "paypal", "secret_key": "sk_test_0123456789abcdef"},
    ],
)
async def test_malformed_credentials_are_refused(
    client: AsyncClient, app: Any, body: dict[str, Any]
) -> None:
    admin, program_id = await _program(client, app)
    response = await client.post(
        f"/v1/programs/{program_id}/fulfilment-providers", json=body, headers=auth(admin)
    )
    assert_problem(response, 422, "validation_error")


async def test_a_fulfilment_webhook_may_not_point_inside_the_network(
    client: AsyncClient, app: Any, session: AsyncSession
) -> None:
    """Checked like the outbound webhooks' URLs (app/webhooks/targets.py), by the service: the
    suite's own app allows loopback for its local fakes."""
    _, program_id = await _program(client, app)
    strict = settings_for_tests(webhook_allow_private_targets=False)
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.8/hook", "http://[::1]/hook"):
        with pytest.raises(service.InvalidFulfilmentUrl):
            await service.add_provider(
                session,
                OPERATOR,
                strict,
                UUID(program_id),
                WebhookCredentials(provider="webhook", url=url),
            )

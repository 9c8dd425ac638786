"""The call builders of the authorization matrix (tests/test_authorization_matrix.py): each
makes the request of one endpoint on program A's objects, or on missing ones."""

import base64
import hashlib
import hmac
import time
from typing import Any
from uuid import UUID, uuid4

from httpx import Request

from app.emails.tokens import address_hash, unsubscribe_token
from tests.authorization_world import MISSING_CODE, Builder, Call, World, pick
from tests.factories import BROWSER_UA, auth
from tests.settings import settings_for_tests


def call_builder(method: str, url: str, **kwargs: Any) -> Builder:
    """A call whose URL names A's objects: `{program_id}`, `{referrer_id}`, `{code}`, …."""

    async def build(w: World, missing: bool) -> Call:
        values = {
            "program_id": pick(w.pid, missing),
            "referrer_id": pick(w.referrer["id"], missing),
            "code": pick(w.referrer["default_code"]["code"], missing, MISSING_CODE),
            "conversion_id": pick(w.conversion["id"], missing),
            "rule_id": pick(w.rule["id"], missing),
            "reward_id": pick(w.conversion["rewards"][0]["id"], missing),
            "referral_id": pick(w.conversion["referral_id"], missing),
        }
        return Call(method, url.format(**values), **kwargs)

    return build


async def create_program(w: World, missing: bool) -> Call:
    body = {"name": "Program", "landing_url": "https://p.example.com/", "currency": "USD"}
    return Call("POST", "/v1/programs", json=body)


async def upsert_referrer(w: World, missing: bool) -> Call:
    return Call(
        "POST",
        f"/v1/programs/{pick(w.pid, missing)}/referrers",
        json={"external_id": f"new-{uuid4().hex}"},
    )


async def patch_code(w: World, missing: bool) -> Call:
    code = pick(await w.new_code(), missing, MISSING_CODE)
    return Call("PATCH", f"/v1/codes/{code}", json={"max_redemptions": 5})


async def click(w: World, missing: bool) -> Call:
    code = pick(w.referrer["default_code"]["code"], missing, MISSING_CODE)
    return Call("POST", "/v1/clicks", json={"code": code}, headers={"User-Agent": BROWSER_UA})


async def redeem(w: World, missing: bool) -> Call:
    code = pick(await w.new_code(), missing, MISSING_CODE)
    return Call("POST", "/v1/redemptions", json={"code": code, "customer_id": uuid4().hex})


async def conversion_builder(w: World, missing: bool) -> Call:
    body = {
        "program_id": pick(w.pid, missing),
        "event_id": uuid4().hex,
        "customer_id": uuid4().hex,
        "amount": "10.00",
        "currency": "EUR",
    }
    return Call("POST", "/v1/conversions", json=body)


async def refund(w: World, missing: bool) -> Call:
    conversion = await w.new_conversion()
    return Call("POST", f"/v1/conversions/{pick(conversion['id'], missing)}/refunds", json={})


async def create_rule(w: World, missing: bool) -> Call:
    return Call(
        "POST",
        f"/v1/programs/{pick(w.pid, missing)}/reward-rules",
        json={"recipient": "referee", "kind": "points", "points": 10},
    )


def reward_transition(action: str, body: Any = None) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        reward_id = await w.new_reward()
        if action == "mark-paid":
            await w.admin_post(f"/v1/rewards/{reward_id}/approve")
        reward = pick(reward_id, missing)
        return Call("POST", f"/v1/rewards/{reward}/{action}", json=body)

    return build


async def erase(w: World, missing: bool) -> Call:
    customer = pick(w.conversion["customer_id"], missing, f"nobody-{uuid4().hex}")
    return Call("DELETE", f"/v1/customers/{customer}")


async def create_key_builder(w: World, missing: bool) -> Call:
    return Call("POST", "/v1/api-keys", json={"kind": "publishable", "program_ids": [w.pid]})


async def revoke_key(w: World, missing: bool) -> Call:
    return Call("POST", f"/v1/api-keys/{pick(await w.new_key(), missing)}/revoke")


async def revoke_session(w: World, missing: bool) -> Call:
    created = await w.new_session(w.referrer["id"])
    return Call("POST", f"/v1/referrer-sessions/{pick(created['session_id'], missing)}/revoke")


async def revoke_all_sessions(w: World, missing: bool) -> Call:
    # A referrer of its own: revoking the world referrer's sessions would end the session caller.
    referrer = await w.new_referrer()
    await w.new_session(referrer["id"])
    return Call("POST", f"/v1/referrers/{pick(referrer['id'], missing)}/sessions/revoke")


async def sign_out(w: World, missing: bool) -> Call:
    return Call("DELETE", "/v1/me/session", fresh_session=True)


def me(method: str, path: str = "", **kwargs: Any) -> Builder:
    return call_builder(method, "/v1/me" + path, **kwargs)


def list_builder(url: str, **params: Any) -> Builder:
    """A list, filtered to program A where it can be: the filter must not open a door."""

    async def build(w: World, missing: bool) -> Call:
        filled = {name: value.format(program_id=w.pid) for name, value in params.items()}
        return Call("GET", url.format(program_id=w.pid), params=filled or None)

    return build


# --- integrations and outbound webhooks ---------------------------------------------------------

STRIPE_SECRET = "whsec_matrix_0123456789abcdef01234567"
SHOPIFY_SECRET = "shpss_matrix_0123456789abcdef01234567"


def _signed_body(url: str, body: Any) -> bytes:
    """The bytes the client will send for `json=body`: what the platform signs."""
    return Request("POST", f"http://testserver{url}", json=body).content


async def stripe_webhook(w: World, missing: bool) -> Call:
    await w.admin_post(
        f"/v1/programs/{w.pid}/integrations/stripe/secrets", {"secrets": [STRIPE_SECRET]}
    )
    url = f"/v1/integrations/stripe/{w.pid}/webhook"
    event = {
        "id": f"evt_{uuid4().hex}",
        "object": "event",
        "type": "customer.created",
        "created": int(time.time()),
        "data": {"object": {"id": "cus_matrix", "object": "customer"}},
    }
    timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + _signed_body(url, event)
    signature = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={timestamp},v1={signature}"}
    return Call("POST", url, json=event, headers=headers)


async def shopify_webhook(w: World, missing: bool) -> Call:
    await w.admin_post(
        f"/v1/programs/{w.pid}/integrations/shopify/secrets", {"secrets": [SHOPIFY_SECRET]}
    )
    url = f"/v1/integrations/shopify/{w.pid}/webhook"
    payload = {"id": 1, "domain": "matrix.myshopify.com"}
    digest = hmac.new(SHOPIFY_SECRET.encode(), _signed_body(url, payload), hashlib.sha256)
    headers = {
        "X-Shopify-Topic": "app/uninstalled",
        "X-Shopify-Webhook-Id": uuid4().hex,
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest.digest()).decode(),
    }
    return Call("POST", url, json=payload, headers=headers)


async def add_secret(w: World, missing: bool) -> Call:
    url = f"/v1/programs/{pick(w.pid, missing)}/integrations/stripe/secrets"
    return Call("POST", url, json={"secrets": [f"whsec_{uuid4().hex}"]})


async def delete_secret(w: World, missing: bool) -> Call:
    path = f"/v1/programs/{w.pid}/integrations/shopify/secrets"
    response = await w.client.post(
        path, json={"secrets": [f"shpss_{uuid4().hex}"]}, headers=auth(w.keys["admin"])
    )
    assert response.status_code == 201, response.text
    secret_id = response.json()[-1]["id"]
    program_id = pick(w.pid, missing)
    return Call("DELETE", f"/v1/programs/{program_id}/integrations/shopify/secrets/{secret_id}")


async def _fresh_token_secret(w: World) -> str:
    """A new customer token secret of A, after removing A's others (two at most)."""
    path = f"/v1/programs/{w.pid}/customer-token-secrets"
    listed = await w.client.get(path, headers=auth(w.keys["admin"]))
    for row in listed.json():
        removed = await w.client.delete(f"{path}/{row['id']}", headers=auth(w.keys["admin"]))
        assert removed.status_code == 204, removed.text
    created = await w.admin_post(path)
    return str(created["id"])


async def create_token_secret(w: World, missing: bool) -> Call:
    await _fresh_token_secret(w)
    return Call("POST", f"/v1/programs/{pick(w.pid, missing)}/customer-token-secrets")


async def delete_token_secret(w: World, missing: bool) -> Call:
    secret_id = await _fresh_token_secret(w)
    url = f"/v1/programs/{pick(w.pid, missing)}/customer-token-secrets/{secret_id}"
    return Call("DELETE", url)


async def _new_endpoint(w: World) -> str:
    endpoint = await w.admin_post(
        "/v1/webhook-endpoints",
        {
            "url": f"https://hooks-{w.tag}.example.com/in",
            "event_types": ["reward.created"],
            "program_id": w.pid,
            "description": w.unique("a-hook"),
        },
    )
    w.mark(endpoint["id"], f"hooks-{w.tag}.example.com")
    return str(endpoint["id"])


async def create_endpoint(w: World, missing: bool) -> Call:
    body = {
        "url": "https://hooks.example.com/in",
        "event_types": ["reward.created"],
        "program_id": pick(w.pid, missing),
    }
    return Call("POST", "/v1/webhook-endpoints", json=body)


def endpoint_call(method: str, suffix: str = "", **kwargs: Any) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        endpoint_id = pick(await _new_endpoint(w), missing)
        return Call(method, f"/v1/webhook-endpoints/{endpoint_id}{suffix}", **kwargs)

    return build


async def redeliver(w: World, missing: bool) -> Call:
    endpoint_id = await _new_endpoint(w)
    await w.new_conversion()  # its reward.created is queued for the endpoint
    response = await w.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=auth(w.keys["admin"])
    )
    assert response.status_code == 200, response.text
    delivery_id = response.json()["data"][0]["id"]
    return Call("POST", f"/v1/webhook-deliveries/{pick(delivery_id, missing)}/redeliver")


# --- fulfilment -------------------------------------------------------------------------------

STRIPE_KEY = "sk_test_matrix0123456789abcdef"


def _provider_body() -> dict[str, Any]:
    return {"provider": "stripe", "secret_key": STRIPE_KEY}


async def add_provider(w: World, missing: bool) -> Call:
    url = f"/v1/programs/{pick(w.pid, missing)}/fulfilment-providers"
    return Call("POST", url, json=_provider_body())


async def delete_provider(w: World, missing: bool) -> Call:
    await w.admin_post(f"/v1/programs/{w.pid}/fulfilment-providers", _provider_body())
    return Call("DELETE", f"/v1/programs/{pick(w.pid, missing)}/fulfilment-providers/stripe")


async def _new_fulfilment(w: World) -> str:
    """A pending fulfilment of program A: a Stripe coupon rule pays the referee at once."""
    if not w.fulfilment_rule:
        await w.admin_post(f"/v1/programs/{w.pid}/fulfilment-providers", _provider_body())
        rule = await w.admin_post(
            f"/v1/programs/{w.pid}/reward-rules",
            {
                "recipient": "referee",
                "kind": "fixed",
                "amount": "3.00",
                "fulfilment": "coupon",
                "fulfilment_provider": "stripe",
                "trigger": "every_purchase",
            },
        )
        w.fulfilment_rule = str(rule["id"])
        w.mark(rule["id"])
    conversion = await w.new_conversion()
    found = next(r for r in conversion["rewards"] if r["rule_id"] == w.fulfilment_rule)
    w.mark(found["fulfilment"]["id"])
    return str(found["fulfilment"]["id"])


def fulfilment_call(method: str, suffix: str = "") -> Builder:
    async def build(w: World, missing: bool) -> Call:
        fulfilment_id = pick(await _new_fulfilment(w), missing)
        return Call(method, f"/v1/fulfilments/{fulfilment_id}{suffix}")

    return build


# --- points catalogue -------------------------------------------------------------------------


async def _new_item(w: World) -> str:
    """An item of program A: 1 point for a reward delivered by hand."""
    item = await w.admin_post(
        f"/v1/programs/{w.pid}/points-items",
        {"name": w.unique("Item A"), "points": 1, "amount": "1.00", "fulfilment": "ledger"},
    )
    w.mark(item["id"])
    return str(item["id"])


def item_call(method: str, **kwargs: Any) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        return Call(method, f"/v1/points-items/{pick(await _new_item(w), missing)}", **kwargs)

    return build


async def _earn_points(w: World) -> None:
    """The world referrer earns points: a points rule of program A pays every purchase."""
    if not w.points_rule:
        rule = await w.admin_post(
            f"/v1/programs/{w.pid}/reward-rules",
            {
                "recipient": "referrer",
                "kind": "points",
                "points": 5,
                "trigger": "every_purchase",
            },
        )
        w.points_rule = str(rule["id"])
        w.mark(rule["id"])
    await w.new_conversion()


def spend(own: bool) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        await _earn_points(w)
        item = await _new_item(w)
        if own:  # the missing twin: an item that does not exist
            return Call("POST", "/v1/me/points/redemptions", json={"item_id": pick(item, missing)})
        referrer = pick(w.referrer["id"], missing)
        return Call("POST", f"/v1/referrers/{referrer}/points/redemptions", json={"item_id": item})

    return build


# --- payouts ----------------------------------------------------------------------------------


async def _payout_setup(w: World) -> None:
    """Once: a charity of A, cash and donation rules, and a referrer of A paid by PayPal and
    donating to the charity. Batches are made only when one is needed: every conversion sends
    its events to every endpoint the other calls made."""
    if w.charity:
        return
    charity = await w.admin_post(f"/v1/programs/{w.pid}/charities", {"name": w.unique("Char A")})
    w.charity = str(charity["id"])
    w.mark(w.charity)
    for method in ("cash", "donation"):
        body = {"recipient": "referrer", "kind": "fixed", "amount": "2.00", "fulfilment": method}
        rule = await w.admin_post(
            f"/v1/programs/{w.pid}/reward-rules", body | {"trigger": "every_purchase"}
        )
        w.mark(rule["id"])
    w.payee = await w.new_referrer()
    details = {
        "payout_method": "paypal",
        "payout_recipient": f"{w.unique('pay')}@example.com",
        "charity_id": w.charity,
    }
    response = await w.client.patch(
        f"/v1/referrers/{w.payee['id']}/payout-settings",
        json=details,
        headers=auth(w.keys["admin"]),
    )
    assert response.status_code == 200, response.text


METHOD_OF_BATCH = {"payout": "cash", "donation": "donation"}


async def _due(w: World, kind: str) -> None:
    """Something for a batch of `kind`: the payee's unbatched reward, or a purchase paying one."""
    await _payout_setup(w)
    listed = await w.client.get(
        "/v1/rewards",
        params={"referrer_id": w.payee["id"], "status": "approved", "limit": 200},
        headers=auth(w.keys["admin"]),
    )
    due = [
        r
        for r in listed.json()["data"]
        if r["fulfilment_method"] == METHOD_OF_BATCH[kind] and r["payout_batch_id"] is None
    ]
    if not due:
        await w.admin_post(
            "/v1/conversions",
            {
                "program_id": w.pid,
                "event_id": w.unique("a-event"),
                "customer_id": w.unique("a-cust"),
                "amount": "10.00",
                "currency": "EUR",
                "code": w.payee["default_code"]["code"],
            },
        )


async def _open_batch(w: World, kind: str) -> str:
    """An open batch of A of `kind`: the last one made, or a new one."""
    cached = w.batches.get(kind)
    if cached:
        read = await w.client.get(
            f"/v1/programs/{w.pid}/{kind}-batches/{cached}", headers=auth(w.keys["admin"])
        )
        if read.json()["status"] == "open":
            return cached
    await _due(w, kind)
    batch = await w.admin_post(f"/v1/programs/{w.pid}/{kind}-batches", {"currency": "EUR"})
    w.mark(batch["id"])
    w.batches[kind] = str(batch["id"])
    return str(batch["id"])


def create_batch(kind: str) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        await _due(w, kind)
        url = f"/v1/programs/{pick(w.pid, missing)}/{kind}-batches"
        return Call("POST", url, json={"currency": "EUR"})

    return build


def batch_builder(kind: str, method: str, suffix: str = "", body: Any = None) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        batch = pick(await _open_batch(w, kind), missing)
        url = f"/v1/programs/{pick(w.pid, missing)}/{kind}-batches/{batch}{suffix}"
        return Call(method, url, json=body)

    return build


async def patch_charity(w: World, missing: bool) -> Call:
    await _payout_setup(w)
    return Call("PATCH", f"/v1/charities/{pick(w.charity, missing)}", json={"name": "Renamed"})


PAYOUT_SETTINGS = "/v1/referrers/{referrer_id}/payout-settings"
PAYOUT_BATCH = "/v1/programs/{program_id}/payout-batches/{batch_id}"
DONATION_BATCH = "/v1/programs/{program_id}/donation-batches/{batch_id}"


def unsubscribe(method: str) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        secret = settings_for_tests().email_secret.get_secret_value()
        digest = address_hash(str(w.referrer["email"]))
        token = unsubscribe_token(secret, UUID(w.pid), digest)
        return Call(method, "/unsubscribe", params={"token": token})

    return build


EMAIL_TEMPLATE = "/v1/programs/{program_id}/email-templates/enrolled"

"""Every endpoint of the OpenAPI schema, for every kind of caller, → the documented answer.

Callers: no key, a bad key, a publishable key (limited to program A, as a widget's is), a secret
key, an admin key, a secret key limited to another program (B), a referrer session of A's
referrer, and a referrer session of a referrer of program B. The objects named are program A's.
Expected (OWASP API1/API5):

- no key or a bad key: 401 `unauthorized`;
- a key kind the endpoint does not admit: 403 `forbidden`;
- a referrer session on any endpoint but `/v1/me…`: 403 `referrer_session_not_allowed`; an API
  key on `/v1/me…`: 403 `referrer_session_required`;
- the referrer session of program B on `/v1/me…`: its own data only (a 2xx without any of A's),
  and for one of A's objects the same 404 as for an object that does not exist;
- the key limited to program B: for an endpoint naming one of A's objects, the same 404 as for an
  object that does not exist (same status, code, title and detail); for a list, a 2xx without
  any of A's rows; for an endpoint its kind may not call, 403;
- a kind the endpoint admits: its success status.

A refused request (and any answer to the key of program B) never contains program A's data.

The endpoints are read from the schema, so a new endpoint fails here until it has an
expectation in `MATRIX`. docs/authorization.md shows the same table
(`python -m tests.test_authorization_matrix` prints it).
"""

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

import pytest
from httpx import ASGITransport, AsyncClient, Request, Response

from app.emails.tokens import address_hash, unsubscribe_token
from app.http.openapi import build_schema
from app.keys.service import create_key
from tests.database import empty_tables
from tests.factories import BROWSER_UA, assert_problem, auth
from tests.settings import settings_for_tests

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
CALLERS = (
    "none",
    "bad",
    "publishable",
    "secret",
    "admin",
    "other_program",
    "referrer_session",
    "other_referrer",
)
SESSIONS = frozenset({"referrer_session", "other_referrer"})
PUBLIC = frozenset({"none"})
WIDGET = frozenset({"publishable", "secret", "admin"})
SECRET = frozenset({"secret", "admin"})
ADMIN = frozenset({"admin"})
REFERRER = frozenset({"referrer_session"})
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "authorization.md"
DOC_START = "<!-- matrix:start -->"
DOC_END = "<!-- matrix:end -->"


@dataclass
class Call:
    method: str
    url: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A referrer session caller sends a session minted for this call (the call ends it).
    fresh_session: bool = False

    def text(self) -> str:
        return " ".join([self.url, json.dumps(self.json), json.dumps(self.params)])


class World:
    """Program A with a referrer, code, rule, conversion and reward; program B; the keys.

    Helpers make fresh objects of program A (with the unrestricted admin key), so that a call
    that changes an object (approve, revoke, delete) never depends on another call.
    """

    def __init__(self, client: AsyncClient, keys: dict[str, str]) -> None:
        self.client = client
        self.keys = keys
        self.tag = uuid4().hex[:10]
        self.count = 0
        # Strings that only program A's data contains: none may reach another program's key.
        self.markers: set[str] = set()
        self.program: dict[str, Any] = {}
        self.referrer: dict[str, Any] = {}
        self.conversion: dict[str, Any] = {}
        self.rule: dict[str, Any] = {}
        # The referrer of program B that the "other_referrer" session belongs to.
        self.other_referrer_id = ""
        self.fulfilment_rule = ""
        self.points_rule = ""
        self.charity = ""
        self.payee: dict[str, Any] = {}
        self.batches: dict[str, str] = {}

    def unique(self, prefix: str) -> str:
        self.count += 1
        value = f"{prefix}-{self.tag}-{self.count}"
        self.markers.add(value)
        return value

    def mark(self, *values: Any) -> None:
        self.markers.update(str(value) for value in values if value)

    async def admin_post(self, url: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.post(url, json=body, headers=auth(self.keys["admin"]))
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    async def setup(self) -> None:
        self.program = await self.admin_post(
            "/v1/programs",
            {
                "name": self.unique("Program A"),
                "landing_url": f"https://a-{self.tag}.example.com/welcome",
                "currency": "EUR",
                "referee_offer": self.unique("Offer A"),
            },
        )
        self.mark(self.program["id"], f"a-{self.tag}.example.com")
        self.rule = await self.admin_post(
            f"/v1/programs/{self.pid}/reward-rules",
            {
                "name": self.unique("Rule A"),
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "7.00",
                # Rewards wait pending, so that approve has something to do.
                "hold_days": 30,
            },
        )
        self.mark(self.rule["id"])
        self.referrer = await self.new_referrer()
        self.conversion = await self.new_conversion()

    @property
    def pid(self) -> str:
        return str(self.program["id"])

    async def new_referrer(self) -> dict[str, Any]:
        referrer = await self.admin_post(
            f"/v1/programs/{self.pid}/referrers",
            {
                "external_id": self.unique("a-ref"),
                "email": f"{self.unique('a-mail')}@example.com",
                "name": self.unique("A Name"),
                "metadata": {"tier": self.unique("a-meta")},
            },
        )
        self.mark(referrer["id"], referrer["default_code"]["code"])
        return referrer

    async def new_code(self) -> str:
        code = await self.admin_post(f"/v1/referrers/{self.referrer['id']}/codes", {})
        self.mark(code["code"])
        return str(code["code"])

    async def new_conversion(self) -> dict[str, Any]:
        conversion = await self.admin_post(
            "/v1/conversions",
            {
                "program_id": self.pid,
                "event_id": self.unique("a-event"),
                "customer_id": self.unique("a-cust"),
                "amount": "123.45",
                "currency": "EUR",
                "code": self.referrer["default_code"]["code"],
                "metadata": {"order": self.unique("a-order")},
            },
        )
        self.mark(conversion["id"], *(reward["id"] for reward in conversion["rewards"]))
        assert conversion["rewards"], conversion
        return conversion

    async def new_reward(self) -> str:
        conversion = await self.new_conversion()
        # The world rule's reward (pending); rules made by other calls may pay at once.
        return next(r["id"] for r in conversion["rewards"] if r["rule_id"] == self.rule["id"])

    async def new_session(self, referrer_id: str) -> dict[str, Any]:
        return await self.admin_post(f"/v1/referrers/{referrer_id}/sessions")

    async def new_key(self) -> str:
        created = await self.admin_post("/v1/api-keys", {"kind": "publishable"})
        return str(created["id"])


def _pick(value: Any, missing: bool, unknown: str | None = None) -> str:
    """`value`, or for the missing-object twin of a call a value that names nothing."""
    if not missing:
        return str(value)
    return unknown if unknown is not None else str(uuid4())


MISSING_CODE = "ZZZZZZZZZZZZ"
Builder = Callable[[World, bool], Awaitable[Call]]
Scope = Literal["object", "list", "self"]


@dataclass(frozen=True)
class Expectation:
    """Who may call an endpoint, its success status, and how to build a call on A's objects."""

    kinds: frozenset[str]
    ok: int
    build: Builder
    # How the key limited to program B (or program B's referrer session) is answered when its
    # kind is admitted: "object": 404 as for a missing object; "list": the success status,
    # without A's rows; "self" (/v1/me…): the success status, with its own referrer's data.
    scope: Scope = "object"
    note: str = ""


def _call(method: str, url: str, **kwargs: Any) -> Builder:
    """A call whose URL names A's objects: `{program_id}`, `{referrer_id}`, `{code}`, …."""

    async def build(w: World, missing: bool) -> Call:
        values = {
            "program_id": _pick(w.pid, missing),
            "referrer_id": _pick(w.referrer["id"], missing),
            "code": _pick(w.referrer["default_code"]["code"], missing, MISSING_CODE),
            "conversion_id": _pick(w.conversion["id"], missing),
            "rule_id": _pick(w.rule["id"], missing),
            "reward_id": _pick(w.conversion["rewards"][0]["id"], missing),
            "referral_id": _pick(w.conversion["referral_id"], missing),
        }
        return Call(method, url.format(**values), **kwargs)

    return build


async def _create_program(w: World, missing: bool) -> Call:
    body = {"name": "Program", "landing_url": "https://p.example.com/", "currency": "USD"}
    return Call("POST", "/v1/programs", json=body)


async def _upsert_referrer(w: World, missing: bool) -> Call:
    return Call(
        "POST",
        f"/v1/programs/{_pick(w.pid, missing)}/referrers",
        json={"external_id": f"new-{uuid4().hex}"},
    )


async def _patch_code(w: World, missing: bool) -> Call:
    code = _pick(await w.new_code(), missing, MISSING_CODE)
    return Call("PATCH", f"/v1/codes/{code}", json={"max_redemptions": 5})


async def _click(w: World, missing: bool) -> Call:
    code = _pick(w.referrer["default_code"]["code"], missing, MISSING_CODE)
    return Call("POST", "/v1/clicks", json={"code": code}, headers={"User-Agent": BROWSER_UA})


async def _redeem(w: World, missing: bool) -> Call:
    code = _pick(await w.new_code(), missing, MISSING_CODE)
    return Call("POST", "/v1/redemptions", json={"code": code, "customer_id": uuid4().hex})


async def _conversion(w: World, missing: bool) -> Call:
    body = {
        "program_id": _pick(w.pid, missing),
        "event_id": uuid4().hex,
        "customer_id": uuid4().hex,
        "amount": "10.00",
        "currency": "EUR",
    }
    return Call("POST", "/v1/conversions", json=body)


async def _refund(w: World, missing: bool) -> Call:
    conversion = await w.new_conversion()
    return Call("POST", f"/v1/conversions/{_pick(conversion['id'], missing)}/refunds", json={})


async def _create_rule(w: World, missing: bool) -> Call:
    return Call(
        "POST",
        f"/v1/programs/{_pick(w.pid, missing)}/reward-rules",
        json={"recipient": "referee", "kind": "points", "points": 10},
    )


def _reward_transition(action: str, body: Any = None) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        reward_id = await w.new_reward()
        if action == "mark-paid":
            await w.admin_post(f"/v1/rewards/{reward_id}/approve")
        reward = _pick(reward_id, missing)
        return Call("POST", f"/v1/rewards/{reward}/{action}", json=body)

    return build


async def _erase(w: World, missing: bool) -> Call:
    customer = _pick(w.conversion["customer_id"], missing, f"nobody-{uuid4().hex}")
    return Call("DELETE", f"/v1/customers/{customer}")


async def _create_key(w: World, missing: bool) -> Call:
    return Call("POST", "/v1/api-keys", json={"kind": "publishable", "program_ids": [w.pid]})


async def _revoke_key(w: World, missing: bool) -> Call:
    return Call("POST", f"/v1/api-keys/{_pick(await w.new_key(), missing)}/revoke")


async def _revoke_session(w: World, missing: bool) -> Call:
    created = await w.new_session(w.referrer["id"])
    return Call("POST", f"/v1/referrer-sessions/{_pick(created['session_id'], missing)}/revoke")


async def _revoke_all_sessions(w: World, missing: bool) -> Call:
    # A referrer of its own: revoking the world referrer's sessions would end the session caller.
    referrer = await w.new_referrer()
    await w.new_session(referrer["id"])
    return Call("POST", f"/v1/referrers/{_pick(referrer['id'], missing)}/sessions/revoke")


async def _sign_out(w: World, missing: bool) -> Call:
    return Call("DELETE", "/v1/me/session", fresh_session=True)


def _me(method: str, path: str = "", **kwargs: Any) -> Builder:
    return _call(method, "/v1/me" + path, **kwargs)


def _list(url: str, **params: Any) -> Builder:
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


async def _stripe_webhook(w: World, missing: bool) -> Call:
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


async def _shopify_webhook(w: World, missing: bool) -> Call:
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


async def _add_secret(w: World, missing: bool) -> Call:
    url = f"/v1/programs/{_pick(w.pid, missing)}/integrations/stripe/secrets"
    return Call("POST", url, json={"secrets": [f"whsec_{uuid4().hex}"]})


async def _delete_secret(w: World, missing: bool) -> Call:
    path = f"/v1/programs/{w.pid}/integrations/shopify/secrets"
    response = await w.client.post(
        path, json={"secrets": [f"shpss_{uuid4().hex}"]}, headers=auth(w.keys["admin"])
    )
    assert response.status_code == 201, response.text
    secret_id = response.json()[-1]["id"]
    program_id = _pick(w.pid, missing)
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


async def _create_token_secret(w: World, missing: bool) -> Call:
    await _fresh_token_secret(w)
    return Call("POST", f"/v1/programs/{_pick(w.pid, missing)}/customer-token-secrets")


async def _delete_token_secret(w: World, missing: bool) -> Call:
    secret_id = await _fresh_token_secret(w)
    url = f"/v1/programs/{_pick(w.pid, missing)}/customer-token-secrets/{secret_id}"
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


async def _create_endpoint(w: World, missing: bool) -> Call:
    body = {
        "url": "https://hooks.example.com/in",
        "event_types": ["reward.created"],
        "program_id": _pick(w.pid, missing),
    }
    return Call("POST", "/v1/webhook-endpoints", json=body)


def _endpoint_call(method: str, suffix: str = "", **kwargs: Any) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        endpoint_id = _pick(await _new_endpoint(w), missing)
        return Call(method, f"/v1/webhook-endpoints/{endpoint_id}{suffix}", **kwargs)

    return build


async def _redeliver(w: World, missing: bool) -> Call:
    endpoint_id = await _new_endpoint(w)
    await w.new_conversion()  # its reward.created is queued for the endpoint
    response = await w.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=auth(w.keys["admin"])
    )
    assert response.status_code == 200, response.text
    delivery_id = response.json()["data"][0]["id"]
    return Call("POST", f"/v1/webhook-deliveries/{_pick(delivery_id, missing)}/redeliver")


# --- fulfilment -------------------------------------------------------------------------------

STRIPE_KEY = "sk_test_matrix0123456789abcdef"


def _provider_body() -> dict[str, Any]:
    return {"provider": "stripe", "secret_key": STRIPE_KEY}


async def _add_provider(w: World, missing: bool) -> Call:
    url = f"/v1/programs/{_pick(w.pid, missing)}/fulfilment-providers"
    return Call("POST", url, json=_provider_body())


async def _delete_provider(w: World, missing: bool) -> Call:
    await w.admin_post(f"/v1/programs/{w.pid}/fulfilment-providers", _provider_body())
    return Call("DELETE", f"/v1/programs/{_pick(w.pid, missing)}/fulfilment-providers/stripe")


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


def _fulfilment_call(method: str, suffix: str = "") -> Builder:
    async def build(w: World, missing: bool) -> Call:
        fulfilment_id = _pick(await _new_fulfilment(w), missing)
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


def _item_call(method: str, **kwargs: Any) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        return Call(method, f"/v1/points-items/{_pick(await _new_item(w), missing)}", **kwargs)

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


def _spend(own: bool) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        await _earn_points(w)
        item = await _new_item(w)
        if own:  # the missing twin: an item that does not exist
            return Call("POST", "/v1/me/points/redemptions", json={"item_id": _pick(item, missing)})
        referrer = _pick(w.referrer["id"], missing)
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


def _create_batch(kind: str) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        await _due(w, kind)
        url = f"/v1/programs/{_pick(w.pid, missing)}/{kind}-batches"
        return Call("POST", url, json={"currency": "EUR"})

    return build


def _batch(kind: str, method: str, suffix: str = "", body: Any = None) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        batch = _pick(await _open_batch(w, kind), missing)
        url = f"/v1/programs/{_pick(w.pid, missing)}/{kind}-batches/{batch}{suffix}"
        return Call(method, url, json=body)

    return build


async def _patch_charity(w: World, missing: bool) -> Call:
    await _payout_setup(w)
    return Call("PATCH", f"/v1/charities/{_pick(w.charity, missing)}", json={"name": "Renamed"})


PAYOUT_SETTINGS = "/v1/referrers/{referrer_id}/payout-settings"
PAYOUT_BATCH = "/v1/programs/{program_id}/payout-batches/{batch_id}"
DONATION_BATCH = "/v1/programs/{program_id}/donation-batches/{batch_id}"


def _unsubscribe(method: str) -> Builder:
    async def build(w: World, missing: bool) -> Call:
        secret = settings_for_tests().email_secret.get_secret_value()
        digest = address_hash(str(w.referrer["email"]))
        token = unsubscribe_token(secret, UUID(w.pid), digest)
        return Call(method, "/unsubscribe", params={"token": token})

    return build


EMAIL_TEMPLATE = "/v1/programs/{program_id}/email-templates/enrolled"

MATRIX: dict[str, Expectation] = {
    # programs
    "POST /v1/programs": Expectation(
        ADMIN, 201, _create_program, note="admin keys for every program"
    ),
    "GET /v1/programs": Expectation(SECRET, 200, _list("/v1/programs"), "list"),
    "GET /v1/programs/{program_id}": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}")
    ),
    "PATCH /v1/programs/{program_id}": Expectation(
        SECRET,
        200,
        _call("PATCH", "/v1/programs/{program_id}", json={"attribution_window_days": 30}),
    ),
    "POST /v1/programs/{program_id}/customer-token-secrets": Expectation(
        SECRET, 201, _create_token_secret, note="the secret is shown once"
    ),
    "GET /v1/programs/{program_id}/customer-token-secrets": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/customer-token-secrets")
    ),
    "DELETE /v1/programs/{program_id}/customer-token-secrets/{secret_id}": Expectation(
        SECRET, 204, _delete_token_secret
    ),
    # referrers and codes
    "POST /v1/programs/{program_id}/referrers": Expectation(SECRET, 201, _upsert_referrer),
    "GET /v1/programs/{program_id}/referrers": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/referrers")
    ),
    "GET /v1/referrers/{referrer_id}": Expectation(
        SECRET, 200, _call("GET", "/v1/referrers/{referrer_id}")
    ),
    "POST /v1/referrers/{referrer_id}/codes": Expectation(
        SECRET, 201, _call("POST", "/v1/referrers/{referrer_id}/codes", json={})
    ),
    "GET /v1/referrers/{referrer_id}/codes": Expectation(
        SECRET, 200, _call("GET", "/v1/referrers/{referrer_id}/codes")
    ),
    "GET /v1/codes/{code}": Expectation(WIDGET, 200, _call("GET", "/v1/codes/{code}")),
    "PATCH /v1/codes/{code}": Expectation(SECRET, 200, _patch_code),
    "GET /v1/codes/{code}/qr.svg": Expectation(
        PUBLIC, 200, _call("GET", "/v1/codes/{code}/qr.svg"), note="public, like the link"
    ),
    "GET /v1/codes/{code}/qr.png": Expectation(
        PUBLIC, 200, _call("GET", "/v1/codes/{code}/qr.png"), note="public, like the link"
    ),
    # tracking
    "POST /v1/clicks": Expectation(WIDGET, 201, _click),
    "POST /v1/redemptions": Expectation(WIDGET, 201, _redeem),
    "GET /r/{code}": Expectation(PUBLIC, 302, _call("GET", "/r/{code}"), note="public link"),
    # conversions
    "POST /v1/conversions": Expectation(SECRET, 201, _conversion),
    "GET /v1/conversions": Expectation(
        SECRET, 200, _list("/v1/conversions", program_id="{program_id}"), "list"
    ),
    "GET /v1/conversions/{conversion_id}": Expectation(
        SECRET, 200, _call("GET", "/v1/conversions/{conversion_id}")
    ),
    "GET /v1/conversions/{conversion_id}/attribution": Expectation(
        SECRET, 200, _call("GET", "/v1/conversions/{conversion_id}/attribution")
    ),
    "POST /v1/conversions/{conversion_id}/refunds": Expectation(SECRET, 201, _refund),
    # reward rules and rewards
    "POST /v1/programs/{program_id}/reward-rules": Expectation(SECRET, 201, _create_rule),
    "GET /v1/programs/{program_id}/reward-rules": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/reward-rules")
    ),
    "GET /v1/reward-rules/{rule_id}": Expectation(
        SECRET, 200, _call("GET", "/v1/reward-rules/{rule_id}")
    ),
    "PATCH /v1/reward-rules/{rule_id}": Expectation(
        SECRET, 200, _call("PATCH", "/v1/reward-rules/{rule_id}", json={"hold_days": 30})
    ),
    "GET /v1/rewards": Expectation(
        SECRET, 200, _list("/v1/rewards", program_id="{program_id}"), "list"
    ),
    "POST /v1/rewards/{reward_id}/approve": Expectation(SECRET, 200, _reward_transition("approve")),
    "POST /v1/rewards/{reward_id}/mark-paid": Expectation(
        SECRET, 200, _reward_transition("mark-paid")
    ),
    "POST /v1/rewards/{reward_id}/reverse": Expectation(
        SECRET, 200, _reward_transition("reverse", {"reason": "test"})
    ),
    "GET /v1/referrers/{referrer_id}/balance": Expectation(
        SECRET, 200, _call("GET", "/v1/referrers/{referrer_id}/balance")
    ),
    # personal data
    "DELETE /v1/customers/{customer_id}": Expectation(
        SECRET, 200, _erase, "list", note="erases only inside the key's programs"
    ),
    # API keys
    "GET /v1/api-keys": Expectation(ADMIN, 200, _list("/v1/api-keys")),
    "POST /v1/api-keys": Expectation(ADMIN, 201, _create_key),
    "POST /v1/api-keys/{key_id}/revoke": Expectation(
        ADMIN, 200, _revoke_key, note="admin keys for every program"
    ),
    # metrics
    "GET /v1/programs/{program_id}/metrics/summary": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/metrics/summary")
    ),
    "GET /v1/programs/{program_id}/metrics/timeseries": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/metrics/timeseries")
    ),
    "GET /v1/programs/{program_id}/metrics/referrers": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/metrics/referrers")
    ),
    "GET /v1/programs/{program_id}/metrics/channels": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/metrics/channels")
    ),
    "GET /v1/programs/{program_id}/metrics/cohorts": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/metrics/cohorts")
    ),
    "GET /v1/referrers/{referrer_id}/metrics": Expectation(
        SECRET, 200, _call("GET", "/v1/referrers/{referrer_id}/metrics")
    ),
    # integrations: the platforms sign their webhooks; keys manage the secrets
    "POST /v1/integrations/stripe/{program_id}/webhook": Expectation(
        PUBLIC, 200, _stripe_webhook, note="Stripe-Signature, no key"
    ),
    "POST /v1/integrations/shopify/{program_id}/webhook": Expectation(
        PUBLIC, 200, _shopify_webhook, note="X-Shopify-Hmac-Sha256, no key"
    ),
    "POST /v1/programs/{program_id}/integrations/{provider}/secrets": Expectation(
        SECRET, 201, _add_secret
    ),
    "GET /v1/programs/{program_id}/integrations/{provider}/secrets": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/integrations/stripe/secrets")
    ),
    "DELETE /v1/programs/{program_id}/integrations/{provider}/secrets/{secret_id}": Expectation(
        SECRET, 204, _delete_secret
    ),
    "GET /v1/programs/{program_id}/integrations/{provider}/events": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/integrations/stripe/events")
    ),
    # fulfilment
    "POST /v1/programs/{program_id}/fulfilment-providers": Expectation(SECRET, 201, _add_provider),
    "GET /v1/programs/{program_id}/fulfilment-providers": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/fulfilment-providers")
    ),
    "DELETE /v1/programs/{program_id}/fulfilment-providers/{provider}": Expectation(
        SECRET, 204, _delete_provider
    ),
    "GET /v1/fulfilments": Expectation(
        SECRET, 200, _list("/v1/fulfilments", program_id="{program_id}"), "list"
    ),
    "GET /v1/fulfilments/{fulfilment_id}": Expectation(SECRET, 200, _fulfilment_call("GET")),
    "POST /v1/fulfilments/{fulfilment_id}/retry": Expectation(
        SECRET, 200, _fulfilment_call("POST", "/retry")
    ),
    # payouts: charities, payout details, payout and donation batches
    "POST /v1/programs/{program_id}/charities": Expectation(
        SECRET, 201, _call("POST", "/v1/programs/{program_id}/charities", json={"name": "C"})
    ),
    "GET /v1/programs/{program_id}/charities": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/charities")
    ),
    "PATCH /v1/charities/{charity_id}": Expectation(SECRET, 200, _patch_charity),
    "GET " + PAYOUT_SETTINGS: Expectation(SECRET, 200, _call("GET", PAYOUT_SETTINGS)),
    "PATCH " + PAYOUT_SETTINGS: Expectation(
        SECRET,
        200,
        _call("PATCH", PAYOUT_SETTINGS, json={"payout_method": "other", "payout_recipient": "X1"}),
        note="details answered masked",
    ),
    "POST /v1/programs/{program_id}/payout-batches": Expectation(
        SECRET, 201, _create_batch("payout")
    ),
    "GET /v1/programs/{program_id}/payout-batches": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/payout-batches")
    ),
    "GET " + PAYOUT_BATCH: Expectation(SECRET, 200, _batch("payout", "GET")),
    "GET " + PAYOUT_BATCH + "/paypal.csv": Expectation(
        SECRET, 200, _batch("payout", "GET", "/paypal.csv"), note="payout details whole"
    ),
    "POST " + PAYOUT_BATCH + "/mark-paid": Expectation(
        SECRET, 200, _batch("payout", "POST", "/mark-paid", {"reference": "REF-1"})
    ),
    "POST " + PAYOUT_BATCH + "/cancel": Expectation(
        SECRET, 200, _batch("payout", "POST", "/cancel")
    ),
    "POST /v1/programs/{program_id}/donation-batches": Expectation(
        SECRET, 201, _create_batch("donation")
    ),
    "GET /v1/programs/{program_id}/donation-batches": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/donation-batches")
    ),
    "GET " + DONATION_BATCH: Expectation(SECRET, 200, _batch("donation", "GET")),
    "POST " + DONATION_BATCH + "/mark-paid": Expectation(
        SECRET, 200, _batch("donation", "POST", "/mark-paid", {"reference": "REF-1"})
    ),
    "POST " + DONATION_BATCH + "/cancel": Expectation(
        SECRET, 200, _batch("donation", "POST", "/cancel")
    ),
    # outbound webhooks
    "POST /v1/webhook-endpoints": Expectation(SECRET, 201, _create_endpoint),
    "GET /v1/webhook-endpoints": Expectation(SECRET, 200, _list("/v1/webhook-endpoints"), "list"),
    "GET /v1/webhook-endpoints/{endpoint_id}": Expectation(SECRET, 200, _endpoint_call("GET")),
    "PATCH /v1/webhook-endpoints/{endpoint_id}": Expectation(
        SECRET, 200, _endpoint_call("PATCH", json={"description": "changed"})
    ),
    "DELETE /v1/webhook-endpoints/{endpoint_id}": Expectation(
        SECRET, 204, _endpoint_call("DELETE")
    ),
    "GET /v1/webhook-endpoints/{endpoint_id}/deliveries": Expectation(
        SECRET, 200, _endpoint_call("GET", "/deliveries")
    ),
    "POST /v1/webhook-deliveries/{delivery_id}/redeliver": Expectation(SECRET, 202, _redeliver),
    # referrer sessions: minted and revoked by the merchant's backend
    "POST /v1/referrers/{referrer_id}/sessions": Expectation(
        SECRET, 201, _call("POST", "/v1/referrers/{referrer_id}/sessions")
    ),
    "POST /v1/referrers/{referrer_id}/portal-links": Expectation(
        SECRET, 201, _call("POST", "/v1/referrers/{referrer_id}/portal-links", json={})
    ),
    "POST /v1/referrers/{referrer_id}/sessions/revoke": Expectation(
        SECRET, 200, _revoke_all_sessions
    ),
    "POST /v1/referrer-sessions/{session_id}/revoke": Expectation(SECRET, 200, _revoke_session),
    # points catalogue
    "POST /v1/programs/{program_id}/points-items": Expectation(
        SECRET,
        201,
        _call(
            "POST",
            "/v1/programs/{program_id}/points-items",
            json={"name": "Mug", "points": 500, "amount": "5.00", "fulfilment": "ledger"},
        ),
    ),
    "GET /v1/programs/{program_id}/points-items": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/points-items")
    ),
    "GET /v1/points-items/{item_id}": Expectation(SECRET, 200, _item_call("GET")),
    "PATCH /v1/points-items/{item_id}": Expectation(
        SECRET, 200, _item_call("PATCH", json={"points": 2})
    ),
    "DELETE /v1/points-items/{item_id}": Expectation(SECRET, 204, _item_call("DELETE")),
    "POST /v1/referrers/{referrer_id}/points/redemptions": Expectation(
        SECRET, 201, _spend(own=False), note="spends points"
    ),
    # /v1/me…: the referrer session, and nothing else
    "GET /v1/me": Expectation(REFERRER, 200, _me("GET"), "self"),
    "PATCH /v1/me": Expectation(
        REFERRER, 200, _me("PATCH", json={"leaderboard_name": "Matrix"}), "self"
    ),
    "DELETE /v1/me/session": Expectation(REFERRER, 204, _sign_out, "self", note="signs out"),
    "GET /v1/me/referrals": Expectation(REFERRER, 200, _me("GET", "/referrals"), "self"),
    "GET /v1/me/referrals/{referral_id}": Expectation(
        REFERRER, 200, _me("GET", "/referrals/{referral_id}")
    ),
    "GET /v1/me/rewards": Expectation(REFERRER, 200, _me("GET", "/rewards"), "self"),
    "GET /v1/me/rewards/{reward_id}": Expectation(
        REFERRER, 200, _me("GET", "/rewards/{reward_id}")
    ),
    "GET /v1/me/balance": Expectation(REFERRER, 200, _me("GET", "/balance"), "self"),
    "GET /v1/me/progress": Expectation(REFERRER, 200, _me("GET", "/progress"), "self"),
    "GET /v1/me/leaderboard": Expectation(REFERRER, 200, _me("GET", "/leaderboard"), "self"),
    "GET /v1/me/points": Expectation(REFERRER, 200, _me("GET", "/points"), "self"),
    "POST /v1/me/points/redemptions": Expectation(
        REFERRER, 201, _spend(own=True), note="spends own points"
    ),
    # lifecycle emails
    "GET /v1/programs/{program_id}/email-templates": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/email-templates")
    ),
    "GET /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET, 200, _call("GET", EMAIL_TEMPLATE)
    ),
    "PUT /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET, 200, _call("PUT", EMAIL_TEMPLATE, json={"subject": "Hi {{ recipient.name }}"})
    ),
    "DELETE /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET, 204, _call("DELETE", EMAIL_TEMPLATE)
    ),
    "POST /v1/programs/{program_id}/email-templates/{event}/preview": Expectation(
        SECRET, 200, _call("POST", EMAIL_TEMPLATE + "/preview", json={})
    ),
    "GET /v1/programs/{program_id}/email-messages": Expectation(
        SECRET, 200, _call("GET", "/v1/programs/{program_id}/email-messages")
    ),
    "GET /unsubscribe": Expectation(
        PUBLIC, 200, _unsubscribe("GET"), note="a signed token; asks to confirm"
    ),
    "POST /unsubscribe": Expectation(
        PUBLIC, 200, _unsubscribe("POST"), note="a signed token (RFC 8058 one-click)"
    ),
    # ops
    "GET /healthz": Expectation(PUBLIC, 200, _call("GET", "/healthz"), note="probe"),
    "GET /readyz": Expectation(PUBLIC, 200, _call("GET", "/readyz"), note="probe"),
}


def schema_operations() -> list[str]:
    schema = build_schema()
    return sorted(
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    )


OPERATIONS = schema_operations()


def expected_status(expectation: Expectation, caller: str) -> int:
    if expectation.kinds == PUBLIC:
        return expectation.ok
    if caller in ("none", "bad"):
        return 401
    if caller in SESSIONS:
        if "referrer_session" not in expectation.kinds:
            return 403
        if caller == "other_referrer" and expectation.scope == "object":
            return 404
        return expectation.ok
    kind = "secret" if caller == "other_program" else caller
    if kind not in expectation.kinds:
        return 403
    if caller == "other_program" and expectation.scope == "object":
        return 404
    return expectation.ok


def _forbidden_code(expectation: Expectation, caller: str) -> str:
    if caller in SESSIONS:
        return "referrer_session_not_allowed"
    if expectation.kinds == REFERRER:
        return "referrer_session_required"
    return "forbidden"


def _without_inputs(text: str, call: Call) -> str:
    """`text` with the values the caller sent replaced, so two answers can be compared."""
    for part in sorted(re.split(r"[/?&=\s\"',:{}\[\]]+", call.text()), key=len, reverse=True):
        if len(part) >= 6:
            text = text.replace(part, "<input>")
    return text


@pytest.fixture(scope="module")
async def world(app: Any) -> AsyncIterator[World]:
    """One world for the module: every call that changes something makes its own objects."""
    await empty_tables(app)
    keys: dict[str, str] = {}
    async with app.state.sessionmaker() as session:
        for kind in ("admin", "secret"):
            keys[kind] = (await create_key(session, kind)).secret
        await session.commit()
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        w = World(client, keys)
        await w.setup()
        program_b = await w.admin_post(
            "/v1/programs",
            {"name": "Program B", "landing_url": "https://b.example.com/", "currency": "EUR"},
        )
        async with app.state.sessionmaker() as session:
            publishable = await create_key(session, "publishable", [UUID(w.pid)])
            other = await create_key(session, "secret", [UUID(program_b["id"])])
            await session.commit()
        keys["publishable"] = publishable.secret
        keys["other_program"] = other.secret
        keys["bad"] = "rk_sec_" + "x" * 43
        keys["referrer_session"] = (await w.new_session(w.referrer["id"]))["token"]
        other_referrer = await w.admin_post(
            f"/v1/programs/{program_b['id']}/referrers", {"external_id": "b-referrer"}
        )
        w.other_referrer_id = other_referrer["id"]
        keys["other_referrer"] = (await w.new_session(w.other_referrer_id))["token"]
        yield w


async def _send(w: World, caller: str, call: Call) -> Response:
    headers = dict(call.headers)
    if call.fresh_session and caller in SESSIONS:
        referrer_id = w.referrer["id"] if caller == "referrer_session" else w.other_referrer_id
        headers |= auth((await w.new_session(referrer_id))["token"])
    elif caller != "none":
        headers |= auth(w.keys[caller])
    return await w.client.request(
        call.method, call.url, json=call.json, params=call.params, headers=headers
    )


def test_every_endpoint_has_an_expectation() -> None:
    missing = sorted(set(OPERATIONS) - MATRIX.keys())
    stale = sorted(MATRIX.keys() - set(OPERATIONS))
    assert not missing, f"endpoints without an expectation in MATRIX: {missing}"
    assert not stale, f"MATRIX names endpoints the schema no longer has: {stale}"


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_endpoint_answers_each_caller_as_documented(world: World, operation: str) -> None:
    expectation = MATRIX.get(operation)
    if expectation is None:
        pytest.fail(
            f"{operation} has no expectation in MATRIX (tests/test_authorization_matrix.py)"
        )
    problems: list[str] = []
    for caller in CALLERS:
        status = expected_status(expectation, caller)
        call = await expectation.build(world, False)
        response = await _send(world, caller, call)
        if response.status_code != status:
            problems.append(
                f"{caller}: {response.status_code} (expected {status}) {response.text[:300]}"
            )
            continue
        if status == 401:
            assert_problem(response, 401, "unauthorized")
        elif status == 403:
            assert_problem(response, 403, _forbidden_code(expectation, caller))
        elif status == 404 and caller in ("other_program", "other_referrer"):
            twin_call = await expectation.build(world, True)
            twin = await _send(world, caller, twin_call)
            theirs, missing = response.json(), twin.json()
            assert twin.status_code == 404, twin.text
            assert (theirs["code"], theirs["title"]) == (missing["code"], missing["title"])
            assert _without_inputs(theirs["detail"], call) == _without_inputs(
                missing["detail"], twin_call
            ), (theirs, missing)
        refused = caller in ("none", "bad", "other_program", "other_referrer") or status >= 400
        if refused and expectation.kinds != PUBLIC:
            sent = call.text()
            leaked = sorted(m for m in world.markers if m in response.text and m not in sent)
            if leaked:
                problems.append(f"{caller}: answer contains program A's data {leaked}")
    assert not problems, f"{operation}:\n  " + "\n  ".join(problems)


# --- mass assignment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "valid", "field", "value"),
    [
        ("POST", "/v1/programs", "program", "id", "{uuid}"),
        ("POST", "/v1/programs", "program", "status", "archived"),
        ("POST", "/v1/programs", "program", "created_at", "2020-01-01T00:00:00Z"),
        ("PATCH", "/v1/programs/{program_id}", None, "id", "{uuid}"),
        ("PATCH", "/v1/programs/{program_id}", None, "updated_at", "2020-01-01T00:00:00Z"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "program_id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/referrers", "referrer", "default_code", "MINE"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "redemption_count", 0),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "program_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/codes", None, "is_default", True),
        ("PATCH", "/v1/codes/{code}", None, "redemption_count", 0),
        ("PATCH", "/v1/codes/{code}", None, "code", "OTHERCODE"),
        ("PATCH", "/v1/codes/{code}", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/clicks", "click", "is_bot", False),
        ("POST", "/v1/clicks", "click", "program_id", "{uuid}"),
        ("POST", "/v1/clicks", "click", "click_id", "{uuid}"),
        ("POST", "/v1/redemptions", "redemption", "referrer_id", "{uuid}"),
        ("POST", "/v1/redemptions", "redemption", "program_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "referrer_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "status", "attributed"),
        ("POST", "/v1/conversions", "conversion", "referral_id", "{uuid}"),
        ("POST", "/v1/conversions", "conversion", "refunded_amount", "0"),
        ("POST", "/v1/conversions/{conversion_id}/refunds", None, "conversion_id", "{uuid}"),
        ("POST", "/v1/programs/{program_id}/reward-rules", "rule", "version", 7),
        ("POST", "/v1/programs/{program_id}/reward-rules", "rule", "program_id", "{uuid}"),
        ("PATCH", "/v1/reward-rules/{rule_id}", None, "version", 7),
        ("PATCH", "/v1/reward-rules/{rule_id}", None, "program_id", "{uuid}"),
        ("POST", "/v1/rewards/{reward_id}/reverse", "reverse", "status", "paid"),
        ("POST", "/v1/rewards/{reward_id}/mark-paid", None, "amount", "1000.00"),
        ("POST", "/v1/api-keys", "key", "key", "rk_adm_chosen"),
        ("POST", "/v1/api-keys", "key", "prefix", "rk_adm_"),
        ("POST", "/v1/api-keys", "key", "revoked_at", None),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "token", "rk_ref_chosen"),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "expires_at", "2030-01-01T00:00Z"),
        ("POST", "/v1/referrers/{referrer_id}/sessions", None, "referrer_id", "{uuid}"),
        ("POST", "/v1/referrers/{referrer_id}/portal-links", None, "url", "https://evil.example"),
    ],
)
async def test_fields_a_caller_may_not_set_are_refused(
    world: World, method: str, url: str, valid: str | None, field: str, value: Any
) -> None:
    bodies: dict[str | None, dict[str, Any]] = {
        None: {},
        "program": {"name": "P", "landing_url": "https://p.example.com/", "currency": "EUR"},
        "referrer": {"external_id": f"mass-{uuid4().hex}"},
        "click": {"code": world.referrer["default_code"]["code"]},
        "redemption": {"code": world.referrer["default_code"]["code"], "customer_id": "mass"},
        "conversion": {
            "program_id": world.pid,
            "event_id": f"mass-{uuid4().hex}",
            "customer_id": "mass",
            "amount": "10.00",
            "currency": "EUR",
        },
        "rule": {"recipient": "referee", "kind": "points", "points": 1},
        "reverse": {"reason": "test"},
        "key": {"kind": "publishable"},
    }
    reward = await world.new_reward() if "{reward_id}" in url else None
    filled = url.format(
        program_id=world.pid,
        referrer_id=world.referrer["id"],
        code=world.referrer["default_code"]["code"],
        conversion_id=world.conversion["id"],
        rule_id=world.rule["id"],
        reward_id=reward,
    )
    if value == "{uuid}":
        value = str(uuid4())
    body = bodies[valid] | {field: value}
    response = await world.client.request(
        method, filled, json=body, headers=auth(world.keys["admin"])
    )
    problem = assert_problem(response, 422, "validation_error")
    assert any(error["loc"][-1] == field for error in problem["errors"]), problem
    assert any(error["type"] == "extra_forbidden" for error in problem["errors"]), problem


def test_every_request_body_refuses_unknown_fields() -> None:
    """A new endpoint whose body would silently take fields it does not know fails here."""
    schema = build_schema()
    components = schema.get("components", {}).get("schemas", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[-1]]
        return node

    open_bodies = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body = resolve(content["application/json"].get("schema", {}))
            options = [resolve(option) for option in body.get("anyOf", [body])]
            for option in options:
                if (
                    option.get("type") == "object"
                    and option.get("additionalProperties") is not False
                ):
                    open_bodies.append(f"{method.upper()} {path}")
    assert not open_bodies, f"request bodies that take unknown fields: {sorted(set(open_bodies))}"


# --- the documented table ------------------------------------------------------------------

KIND_COLUMNS = ("publishable", "secret", "admin")
SESSION_COLUMNS = ("referrer_session", "other_referrer")


def render_table() -> str:
    """The matrix as a Markdown table (the section of docs/authorization.md between markers)."""
    lines = [
        "| endpoint | no key / bad key | publishable | secret | admin "
        "| secret key of another program | referrer session "
        "| referrer session of another program | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for operation in sorted(MATRIX, key=lambda op: (op.split(" ", 1)[1], op)):
        expectation = MATRIX[operation]
        cells = [f"`{operation}`"]
        for caller in ("none", *KIND_COLUMNS, "other_program", *SESSION_COLUMNS):
            status = expected_status(expectation, caller)
            cells.append(_cell(status, expectation, caller))
        cells.append(expectation.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(status: int, expectation: Expectation, caller: str) -> str:
    if status < 400:
        if caller == "other_program" and expectation.scope == "list":
            return f"{status}, none of A's rows"
        if caller == "other_referrer" and expectation.scope == "self":
            return f"{status}, its own data only"
        return f"✅ {status}"
    return {401: "401", 403: "403", 404: "404 (as missing)"}[status]


def test_docs_show_this_matrix() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    assert text[start:end].strip() == render_table().strip(), (
        "docs/authorization.md differs from MATRIX; print the table with "
        "`python -m tests.test_authorization_matrix` and paste it between the markers"
    )


if __name__ == "__main__":
    print(render_table(), end="")

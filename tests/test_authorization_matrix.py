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

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import Response

from app.http.openapi import build_schema
from tests.authorization_calls import (
    DONATION_BATCH,
    EMAIL_TEMPLATE,
    PAYOUT_BATCH,
    PAYOUT_SETTINGS,
    add_provider,
    add_secret,
    batch_builder,
    call_builder,
    click,
    conversion_builder,
    create_batch,
    create_endpoint,
    create_key_builder,
    create_program,
    create_rule,
    create_token_secret,
    delete_provider,
    delete_secret,
    delete_token_secret,
    endpoint_call,
    erase,
    fulfilment_call,
    item_call,
    list_builder,
    me,
    patch_charity,
    patch_code,
    redeem,
    redeliver,
    refund,
    revoke_all_sessions,
    revoke_key,
    revoke_session,
    reward_transition,
    shopify_webhook,
    sign_out,
    spend,
    stripe_webhook,
    unsubscribe,
    upsert_referrer,
)
from tests.authorization_world import (
    ADMIN,
    CALLERS,
    DOC_END,
    DOC_PATH,
    DOC_START,
    HTTP_METHODS,
    PUBLIC,
    REFERRER,
    SECRET,
    SESSIONS,
    WIDGET,
    Call,
    Expectation,
    World,
    open_world,
)
from tests.factories import assert_problem, auth

MATRIX: dict[str, Expectation] = {
    # programs
    "POST /v1/programs": Expectation(
        ADMIN, 201, create_program, note="admin keys for every program"
    ),
    "GET /v1/programs": Expectation(SECRET, 200, list_builder("/v1/programs"), "list"),
    "GET /v1/programs/{program_id}": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}")
    ),
    "PATCH /v1/programs/{program_id}": Expectation(
        SECRET,
        200,
        call_builder("PATCH", "/v1/programs/{program_id}", json={"attribution_window_days": 30}),
    ),
    "POST /v1/programs/{program_id}/customer-token-secrets": Expectation(
        SECRET, 201, create_token_secret, note="the secret is shown once"
    ),
    "GET /v1/programs/{program_id}/customer-token-secrets": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/customer-token-secrets")
    ),
    "DELETE /v1/programs/{program_id}/customer-token-secrets/{secret_id}": Expectation(
        SECRET, 204, delete_token_secret
    ),
    # referrers and codes
    "POST /v1/programs/{program_id}/referrers": Expectation(SECRET, 201, upsert_referrer),
    "GET /v1/programs/{program_id}/referrers": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/referrers")
    ),
    "GET /v1/referrers/{referrer_id}": Expectation(
        SECRET, 200, call_builder("GET", "/v1/referrers/{referrer_id}")
    ),
    "POST /v1/referrers/{referrer_id}/codes": Expectation(
        SECRET, 201, call_builder("POST", "/v1/referrers/{referrer_id}/codes", json={})
    ),
    "GET /v1/referrers/{referrer_id}/codes": Expectation(
        SECRET, 200, call_builder("GET", "/v1/referrers/{referrer_id}/codes")
    ),
    "GET /v1/codes/{code}": Expectation(WIDGET, 200, call_builder("GET", "/v1/codes/{code}")),
    "PATCH /v1/codes/{code}": Expectation(SECRET, 200, patch_code),
    "GET /v1/codes/{code}/qr.svg": Expectation(
        PUBLIC, 200, call_builder("GET", "/v1/codes/{code}/qr.svg"), note="public, like the link"
    ),
    "GET /v1/codes/{code}/qr.png": Expectation(
        PUBLIC, 200, call_builder("GET", "/v1/codes/{code}/qr.png"), note="public, like the link"
    ),
    # tracking
    "POST /v1/clicks": Expectation(WIDGET, 201, click),
    "POST /v1/redemptions": Expectation(WIDGET, 201, redeem),
    "GET /r/{code}": Expectation(PUBLIC, 302, call_builder("GET", "/r/{code}"), note="public link"),
    # conversions
    "POST /v1/conversions": Expectation(SECRET, 201, conversion_builder),
    "GET /v1/conversions": Expectation(
        SECRET, 200, list_builder("/v1/conversions", program_id="{program_id}"), "list"
    ),
    "GET /v1/conversions/{conversion_id}": Expectation(
        SECRET, 200, call_builder("GET", "/v1/conversions/{conversion_id}")
    ),
    "GET /v1/conversions/{conversion_id}/attribution": Expectation(
        SECRET, 200, call_builder("GET", "/v1/conversions/{conversion_id}/attribution")
    ),
    "POST /v1/conversions/{conversion_id}/refunds": Expectation(SECRET, 201, refund),
    # reward rules and rewards
    "POST /v1/programs/{program_id}/reward-rules": Expectation(SECRET, 201, create_rule),
    "GET /v1/programs/{program_id}/reward-rules": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/reward-rules")
    ),
    "GET /v1/reward-rules/{rule_id}": Expectation(
        SECRET, 200, call_builder("GET", "/v1/reward-rules/{rule_id}")
    ),
    "PATCH /v1/reward-rules/{rule_id}": Expectation(
        SECRET, 200, call_builder("PATCH", "/v1/reward-rules/{rule_id}", json={"hold_days": 30})
    ),
    "GET /v1/rewards": Expectation(
        SECRET, 200, list_builder("/v1/rewards", program_id="{program_id}"), "list"
    ),
    "POST /v1/rewards/{reward_id}/approve": Expectation(SECRET, 200, reward_transition("approve")),
    "POST /v1/rewards/{reward_id}/mark-paid": Expectation(
        SECRET, 200, reward_transition("mark-paid")
    ),
    "POST /v1/rewards/{reward_id}/reverse": Expectation(
        SECRET, 200, reward_transition("reverse", {"reason": "test"})
    ),
    "GET /v1/referrers/{referrer_id}/balance": Expectation(
        SECRET, 200, call_builder("GET", "/v1/referrers/{referrer_id}/balance")
    ),
    # personal data
    "DELETE /v1/customers/{customer_id}": Expectation(
        SECRET, 200, erase, "list", note="erases only inside the key's programs"
    ),
    # API keys
    "GET /v1/api-keys": Expectation(ADMIN, 200, list_builder("/v1/api-keys")),
    "POST /v1/api-keys": Expectation(ADMIN, 201, create_key_builder),
    "POST /v1/api-keys/{key_id}/revoke": Expectation(
        ADMIN, 200, revoke_key, note="admin keys for every program"
    ),
    # metrics
    "GET /v1/programs/{program_id}/metrics/summary": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/metrics/summary")
    ),
    "GET /v1/programs/{program_id}/metrics/timeseries": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/metrics/timeseries")
    ),
    "GET /v1/programs/{program_id}/metrics/referrers": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/metrics/referrers")
    ),
    "GET /v1/programs/{program_id}/metrics/channels": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/metrics/channels")
    ),
    "GET /v1/programs/{program_id}/metrics/cohorts": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/metrics/cohorts")
    ),
    "GET /v1/referrers/{referrer_id}/metrics": Expectation(
        SECRET, 200, call_builder("GET", "/v1/referrers/{referrer_id}/metrics")
    ),
    # integrations: the platforms sign their webhooks; keys manage the secrets
    "POST /v1/integrations/stripe/{program_id}/webhook": Expectation(
        PUBLIC, 200, stripe_webhook, note="Stripe-Signature, no key"
    ),
    "POST /v1/integrations/shopify/{program_id}/webhook": Expectation(
        PUBLIC, 200, shopify_webhook, note="X-Shopify-Hmac-Sha256, no key"
    ),
    "POST /v1/programs/{program_id}/integrations/{provider}/secrets": Expectation(
        SECRET, 201, add_secret
    ),
    "GET /v1/programs/{program_id}/integrations/{provider}/secrets": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/integrations/stripe/secrets")
    ),
    "DELETE /v1/programs/{program_id}/integrations/{provider}/secrets/{secret_id}": Expectation(
        SECRET, 204, delete_secret
    ),
    "GET /v1/programs/{program_id}/integrations/{provider}/events": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/integrations/stripe/events")
    ),
    # fulfilment
    "POST /v1/programs/{program_id}/fulfilment-providers": Expectation(SECRET, 201, add_provider),
    "GET /v1/programs/{program_id}/fulfilment-providers": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/fulfilment-providers")
    ),
    "DELETE /v1/programs/{program_id}/fulfilment-providers/{provider}": Expectation(
        SECRET, 204, delete_provider
    ),
    "GET /v1/fulfilments": Expectation(
        SECRET, 200, list_builder("/v1/fulfilments", program_id="{program_id}"), "list"
    ),
    "GET /v1/fulfilments/{fulfilment_id}": Expectation(SECRET, 200, fulfilment_call("GET")),
    "POST /v1/fulfilments/{fulfilment_id}/retry": Expectation(
        SECRET, 200, fulfilment_call("POST", "/retry")
    ),
    # payouts: charities, payout details, payout and donation batches
    "POST /v1/programs/{program_id}/charities": Expectation(
        SECRET, 201, call_builder("POST", "/v1/programs/{program_id}/charities", json={"name": "C"})
    ),
    "GET /v1/programs/{program_id}/charities": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/charities")
    ),
    "PATCH /v1/charities/{charity_id}": Expectation(SECRET, 200, patch_charity),
    "GET " + PAYOUT_SETTINGS: Expectation(SECRET, 200, call_builder("GET", PAYOUT_SETTINGS)),
    "PATCH " + PAYOUT_SETTINGS: Expectation(
        SECRET,
        200,
        call_builder(
            "PATCH", PAYOUT_SETTINGS, json={"payout_method": "other", "payout_recipient": "X1"}
        ),
        note="details answered masked",
    ),
    "POST /v1/programs/{program_id}/payout-batches": Expectation(
        SECRET, 201, create_batch("payout")
    ),
    "GET /v1/programs/{program_id}/payout-batches": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/payout-batches")
    ),
    "GET " + PAYOUT_BATCH: Expectation(SECRET, 200, batch_builder("payout", "GET")),
    "GET " + PAYOUT_BATCH + "/paypal.csv": Expectation(
        SECRET, 200, batch_builder("payout", "GET", "/paypal.csv"), note="payout details whole"
    ),
    "POST " + PAYOUT_BATCH + "/mark-paid": Expectation(
        SECRET, 200, batch_builder("payout", "POST", "/mark-paid", {"reference": "REF-1"})
    ),
    "POST " + PAYOUT_BATCH + "/cancel": Expectation(
        SECRET, 200, batch_builder("payout", "POST", "/cancel")
    ),
    "POST /v1/programs/{program_id}/donation-batches": Expectation(
        SECRET, 201, create_batch("donation")
    ),
    "GET /v1/programs/{program_id}/donation-batches": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/donation-batches")
    ),
    "GET " + DONATION_BATCH: Expectation(SECRET, 200, batch_builder("donation", "GET")),
    "POST " + DONATION_BATCH + "/mark-paid": Expectation(
        SECRET, 200, batch_builder("donation", "POST", "/mark-paid", {"reference": "REF-1"})
    ),
    "POST " + DONATION_BATCH + "/cancel": Expectation(
        SECRET, 200, batch_builder("donation", "POST", "/cancel")
    ),
    # outbound webhooks
    "POST /v1/webhook-endpoints": Expectation(SECRET, 201, create_endpoint),
    "GET /v1/webhook-endpoints": Expectation(
        SECRET, 200, list_builder("/v1/webhook-endpoints"), "list"
    ),
    "GET /v1/webhook-endpoints/{endpoint_id}": Expectation(SECRET, 200, endpoint_call("GET")),
    "PATCH /v1/webhook-endpoints/{endpoint_id}": Expectation(
        SECRET, 200, endpoint_call("PATCH", json={"description": "changed"})
    ),
    "DELETE /v1/webhook-endpoints/{endpoint_id}": Expectation(SECRET, 204, endpoint_call("DELETE")),
    "GET /v1/webhook-endpoints/{endpoint_id}/deliveries": Expectation(
        SECRET, 200, endpoint_call("GET", "/deliveries")
    ),
    "POST /v1/webhook-deliveries/{delivery_id}/redeliver": Expectation(SECRET, 202, redeliver),
    # referrer sessions: minted and revoked by the merchant's backend
    "POST /v1/referrers/{referrer_id}/sessions": Expectation(
        SECRET, 201, call_builder("POST", "/v1/referrers/{referrer_id}/sessions")
    ),
    "POST /v1/referrers/{referrer_id}/portal-links": Expectation(
        SECRET, 201, call_builder("POST", "/v1/referrers/{referrer_id}/portal-links", json={})
    ),
    "POST /v1/referrers/{referrer_id}/sessions/revoke": Expectation(
        SECRET, 200, revoke_all_sessions
    ),
    "POST /v1/referrer-sessions/{session_id}/revoke": Expectation(SECRET, 200, revoke_session),
    # points catalogue
    "POST /v1/programs/{program_id}/points-items": Expectation(
        SECRET,
        201,
        call_builder(
            "POST",
            "/v1/programs/{program_id}/points-items",
            json={"name": "Mug", "points": 500, "amount": "5.00", "fulfilment": "ledger"},
        ),
    ),
    "GET /v1/programs/{program_id}/points-items": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/points-items")
    ),
    "GET /v1/points-items/{item_id}": Expectation(SECRET, 200, item_call("GET")),
    "PATCH /v1/points-items/{item_id}": Expectation(
        SECRET, 200, item_call("PATCH", json={"points": 2})
    ),
    "DELETE /v1/points-items/{item_id}": Expectation(SECRET, 204, item_call("DELETE")),
    "POST /v1/referrers/{referrer_id}/points/redemptions": Expectation(
        SECRET, 201, spend(own=False), note="spends points"
    ),
    # /v1/me…: the referrer session, and nothing else
    "GET /v1/me": Expectation(REFERRER, 200, me("GET"), "self"),
    "PATCH /v1/me": Expectation(
        REFERRER, 200, me("PATCH", json={"leaderboard_name": "Matrix"}), "self"
    ),
    "DELETE /v1/me/session": Expectation(REFERRER, 204, sign_out, "self", note="signs out"),
    "GET /v1/me/referrals": Expectation(REFERRER, 200, me("GET", "/referrals"), "self"),
    "GET /v1/me/referrals/{referral_id}": Expectation(
        REFERRER, 200, me("GET", "/referrals/{referral_id}")
    ),
    "GET /v1/me/rewards": Expectation(REFERRER, 200, me("GET", "/rewards"), "self"),
    "GET /v1/me/rewards/{reward_id}": Expectation(REFERRER, 200, me("GET", "/rewards/{reward_id}")),
    "GET /v1/me/balance": Expectation(REFERRER, 200, me("GET", "/balance"), "self"),
    "GET /v1/me/progress": Expectation(REFERRER, 200, me("GET", "/progress"), "self"),
    "GET /v1/me/leaderboard": Expectation(REFERRER, 200, me("GET", "/leaderboard"), "self"),
    "GET /v1/me/points": Expectation(REFERRER, 200, me("GET", "/points"), "self"),
    "POST /v1/me/points/redemptions": Expectation(
        REFERRER, 201, spend(own=True), note="spends own points"
    ),
    # lifecycle emails
    "GET /v1/programs/{program_id}/email-templates": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/email-templates")
    ),
    "GET /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET, 200, call_builder("GET", EMAIL_TEMPLATE)
    ),
    "PUT /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET,
        200,
        call_builder("PUT", EMAIL_TEMPLATE, json={"subject": "Hi {{ recipient.name }}"}),
    ),
    "DELETE /v1/programs/{program_id}/email-templates/{event}": Expectation(
        SECRET, 204, call_builder("DELETE", EMAIL_TEMPLATE)
    ),
    "POST /v1/programs/{program_id}/email-templates/{event}/preview": Expectation(
        SECRET, 200, call_builder("POST", EMAIL_TEMPLATE + "/preview", json={})
    ),
    "GET /v1/programs/{program_id}/email-messages": Expectation(
        SECRET, 200, call_builder("GET", "/v1/programs/{program_id}/email-messages")
    ),
    "GET /unsubscribe": Expectation(
        PUBLIC, 200, unsubscribe("GET"), note="a signed token; asks to confirm"
    ),
    "POST /unsubscribe": Expectation(
        PUBLIC, 200, unsubscribe("POST"), note="a signed token (RFC 8058 one-click)"
    ),
    # ops
    "GET /healthz": Expectation(PUBLIC, 200, call_builder("GET", "/healthz"), note="probe"),
    "GET /readyz": Expectation(PUBLIC, 200, call_builder("GET", "/readyz"), note="probe"),
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
    async with open_world(app) as w:
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

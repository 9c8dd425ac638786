"""schemathesis over every operation of the OpenAPI schema: no 5xx, every answer as documented.

The app is called in process (ASGI) with an admin or a secret key, or a referrer session token
(which reaches /v1/me… and is refused everywhere else). Path parameters are either
generated or, half of the time, the ids of objects seeded first, so that the fuzzer reaches past
the 404s into the handlers. `REFERRAL_FUZZ_EXAMPLES` (default 25) sets the examples per operation
and phase; `make fuzz` runs many more.

Half the time the generated JSON body is sent as written, a quarter of the time with one value
replaced by text Python's parser takes but the service must refuse (tests/hostile_json.py: NaN,
1e999, a 5,000-digit integer, 10,000 levels of nesting, NUL): those must be a 4xx. Signed Stripe
and Shopify events get the same treatment, anywhere in a platform-shaped payload.

The fuzzed app is its own instance: schemathesis calls ASGI apps from its own event loop thread,
and database connections cannot move between event loops.
"""

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import inspect, text

from app.core.access import OPERATOR
from app.core.db import create_engine, create_sessionmaker
from app.keys.service import create_key
from app.main import create_app
from app.models import Base
from app.referrer_sessions.service import mint_session
from tests import hostile_json
from tests.settings import ON_POSTGRES, settings_for_tests
from tests.stripe_helpers import SECRET as STRIPE_SECRET
from tests.stripe_helpers import (
    charge,
    checkout_session,
    event,
    invoice,
    stripe_header,
)
from tests.test_integrations_shopify import SECRET as SHOPIFY_SECRET
from tests.test_integrations_shopify import order, refund, shopify_hmac

MAX_EXAMPLES = int(os.environ.get("REFERRAL_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# No background work: the webhook dispatcher would call out to the URLs the fuzzer invents.
app = create_app(settings_for_tests(webhook_dispatch_interval_seconds=0))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")

# Filled by the `seeded` fixture: path parameter name → the id of a real object.
REAL: dict[str, str] = {}
KEYS: dict[str, str] = {}


async def _reset_and_make_keys() -> dict[str, str]:
    settings = settings_for_tests()
    engine = create_engine(settings.database_url, settings)
    try:
        async with engine.begin() as connection:
            # Only the migrated tables: a model whose migration is not written yet has none.
            existing = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in existing]
            if ON_POSTGRES:
                await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
            else:
                for table in tables:
                    await connection.execute(text(f"DELETE FROM {table}"))
        async with create_sessionmaker(engine)() as session:
            admin = await create_key(session, "admin")
            secret = await create_key(session, "secret")
            await session.commit()
    finally:
        await engine.dispose()
    return {"admin": admin.secret, "secret": secret.secret}


async def _mint_session(referrer_id: str) -> str:
    """A fresh referrer session token (a fuzzed revocation may have ended the last one)."""
    settings = settings_for_tests()
    engine = create_engine(settings.database_url, settings)
    try:
        async with create_sessionmaker(engine)() as session:
            created = await mint_session(session, OPERATOR, settings, UUID(referrer_id), None)
            await session.commit()
    finally:
        await engine.dispose()
    return created.token


def _ok(response: Any, *statuses: int) -> Any:
    assert response.status_code in statuses, response.text
    return response.json()


@pytest.fixture(scope="module", autouse=True)
def seeded() -> Iterator[None]:
    """Empty tables, two keys, and one of each object the paths name."""
    KEYS.update(asyncio.run(_reset_and_make_keys()))
    headers = {"Authorization": f"Bearer {KEYS['admin']}"}
    with asgi.get_client(app) as http:  # type: ignore[arg-type]
        program = _ok(
            http.post(
                "/v1/programs",
                json={
                    "name": "Fuzz",
                    "landing_url": "https://shop.example.com/",
                    "currency": "USD",
                    "allowed_origins": ["https://shop.example.com"],
                },
                headers=headers,
            ),
            201,
        )
        pid = program["id"]
        referrer = _ok(
            http.post(
                f"/v1/programs/{pid}/referrers",
                json={"external_id": "fuzz_ref", "email": "ref@example.com"},
                headers=headers,
            ),
            201,
        )
        rule = _ok(
            http.post(
                f"/v1/programs/{pid}/reward-rules",
                json={"recipient": "referrer", "kind": "fixed", "amount": "5.00"},
                headers=headers,
            ),
            201,
        )
        code = referrer["default_code"]["code"]
        conversion = _ok(
            http.post(
                "/v1/conversions",
                json={
                    "program_id": pid,
                    "event_id": "fuzz_ev_1",
                    "customer_id": "fuzz_cust",
                    "amount": "40.00",
                    "currency": "USD",
                    "code": code,
                },
                headers=headers,
            ),
            201,
        )
        keys: list[dict[str, Any]] = _ok(http.get("/v1/api-keys", headers=headers), 200)
        spare = _ok(http.post(f"/v1/referrers/{referrer['id']}/sessions", headers=headers), 201)
        for provider, secret in (("stripe", STRIPE_SECRET), ("shopify", SHOPIFY_SECRET)):
            _ok(
                http.post(
                    f"/v1/programs/{pid}/integrations/{provider}/secrets",
                    json={"secrets": [secret]},
                    headers=headers,
                ),
                201,
            )
    assert conversion["rewards"], conversion
    REAL.update(
        program_id=pid,
        referrer_id=referrer["id"],
        code=code,
        rule_id=rule["id"],
        conversion_id=conversion["id"],
        reward_id=conversion["rewards"][0]["id"],
        referral_id=conversion["referral_id"],
        session_id=spare["session_id"],
        customer_id="fuzz_cust",
        # The secret key's id: revoking it does not stop the run (the admin key stays).
        key_id=next(k["id"] for k in keys if k["kind"] == "secret"),
    )
    KEYS["session"] = asyncio.run(_mint_session(referrer["id"]))
    yield
    asgi.shutdown_lifespans()


# (one in four: inject?, which fragment, where in the body, into a valid body if there is one)
HOSTILE = st.tuples(
    st.integers(0, 3),
    st.sampled_from(sorted(hostile_json.FRAGMENTS)),
    st.integers(0, 10_000),
    st.booleans(),
)
SENT = iter(range(10**9))


def _valid_body(method: str, path: str) -> dict[str, Any] | None:
    """A body the operation takes (with the seeded ids), so that a fragment reaches the handler."""
    n = next(SENT)
    note = {"note": "fuzz", "score": 1.5}
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/conversions"): {
            "program_id": REAL["program_id"],
            "event_id": f"fuzz_hostile_{n}",
            "customer_id": f"fuzz_hostile_{n}",
            "amount": "10.00",
            "currency": "USD",
            "metadata": note,
        },
        ("POST", "/v1/programs/{program_id}/referrers"): {
            "external_id": f"fuzz_hostile_{n}",
            "metadata": note,
        },
        ("POST", "/v1/conversions/{conversion_id}/refunds"): {
            "amount": "0.01",
            "refund_id": f"fuzz_hostile_{n}",
        },
        ("POST", "/v1/programs/{program_id}/reward-rules"): {
            "recipient": "referrer",
            "kind": "fixed",
            "amount": "1.00",
            "tiers": [{"from_referral": 2, "amount": "2.00"}],
        },
        ("POST", "/v1/clicks"): {"code": REAL["code"], "visitor_id": f"fuzz_hostile_{n}"},
    }
    return bodies.get((method.upper(), path))


def _hostile_body(body: Any, fragment: str, place: int) -> bytes:
    """The body with one of its values, or a new `metadata`, replaced by `fragment`."""
    spots = hostile_json.paths(body)
    if not spots or place % 4 == 0:
        body, spots = {**body, "metadata": {"note": None}}, [("metadata", "note")]
    return hostile_json.inject(body, spots[place % len(spots)], fragment)


@schema.parametrize()
@schema.given(
    kind=st.sampled_from(["admin", "secret", "session"]), real_ids=st.booleans(), hostile=HOSTILE
)
def test_api_answers_as_documented(
    case: schemathesis.Case, kind: str, real_ids: bool, hostile: tuple[int, str, int, bool]
) -> None:
    if real_ids and case.path_parameters:
        # Name the seeded objects, so that the case reaches past the 404 into the handler.
        for name in case.path_parameters:
            if name in REAL:
                case.path_parameters[name] = REAL[name]
    extra: dict[str, Any] = {}
    chance, name, place, into_valid = hostile
    if chance == 3 and isinstance(case.body, dict) and case.media_type == "application/json":
        body = _valid_body(case.method, case.path) if into_valid else None
        if body is not None:
            for parameter in case.path_parameters or {}:
                case.path_parameters[parameter] = REAL[parameter]
        extra["data"] = _hostile_body(body or case.body, hostile_json.FRAGMENTS[name], place)
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {KEYS[kind]}"},
        checks=CHECKS,
        allow_redirects=False,
        **extra,
    )
    if kind == "session" and response.status_code == 401:
        # Signed out or revoked by an earlier case: later cases get a live session again.
        KEYS["session"] = asyncio.run(_mint_session(REAL["referrer_id"]))
    if extra:
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)


def _stripe_event(n: int, kind: int) -> dict[str, Any]:
    event_type, obj = [
        ("checkout.session.completed", checkout_session()),
        ("checkout.session.async_payment_succeeded", checkout_session()),
        ("invoice.paid", invoice()),
        ("charge.refunded", charge(1000)),
    ][kind]
    return event(event_type, obj, event_id=f"evt_fuzz_{n}")


def _shopify_event(kind: int) -> tuple[str, dict[str, Any]]:
    topic = ["orders/create", "orders/paid", "orders/cancelled", "refunds/create"][kind]
    return topic, refund() if topic == "refunds/create" else order()


@settings(max_examples=MAX_EXAMPLES * 4, deadline=None, database=None)
@given(
    provider=st.sampled_from(["stripe", "shopify"]),
    kind=st.integers(0, 3),
    fragment=st.one_of(
        st.sampled_from(sorted(hostile_json.FRAGMENTS)).map(hostile_json.FRAGMENTS.get),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=8,
        ).map(json.dumps),
    ),
    place=st.integers(0, 10_000),
)
def test_signed_platform_bodies_never_answer_5xx(
    provider: str, kind: int, fragment: str, place: int
) -> None:
    """A signed event with any value replaced: a hostile fragment is 400, anything else < 500."""
    n = next(SENT)
    payload: dict[str, Any]
    if provider == "stripe":
        payload = _stripe_event(n, kind)
    else:
        topic, payload = _shopify_event(kind)
    spots = hostile_json.paths(payload)
    body = hostile_json.inject(payload, spots[place % len(spots)], fragment)
    if provider == "stripe":
        headers = {"Stripe-Signature": stripe_header(body.decode(), STRIPE_SECRET)}
    else:
        headers = {
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": shopify_hmac(body, SHOPIFY_SECRET),
            "X-Shopify-Webhook-Id": f"fuzz-{n}",
        }
    with asgi.get_client(app) as http:  # type: ignore[arg-type]
        response = http.post(
            f"/v1/integrations/{provider}/{REAL['program_id']}/webhook",
            data=body,
            headers=headers | {"Content-Type": "application/json"},
        )
    assert response.status_code < 500, (fragment[:80], response.text)
    if fragment in hostile_json.FRAGMENTS.values():
        assert response.status_code == 400, (fragment[:80], response.text)
        assert response.json()["code"] == "invalid_payload"


def test_every_operation_declares_its_problem_answers() -> None:
    """Quick, without fuzzing: what the middleware and the validation answer is in the schema.

    A new endpoint gets these from `responses=problem_responses(...)` on its router and route
    (app.http.auth.AUTHENTICATED_ERRORS, app.core.errors.POST_ERRORS / PATCH_ERRORS).
    """
    document = app.openapi()
    missing: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            name = f"{method.upper()} {path}"
            responses = operation.get("responses", {})
            has_input = bool(operation.get("parameters") or operation.get("requestBody"))
            wanted = ["422"] if has_input else []
            if method in ("post", "put", "patch"):
                wanted += ["400", "413"]
            for status in wanted:
                content = responses.get(status, {}).get("content", {})
                if "application/problem+json" not in content:
                    missing.append(f"{name}: {status} problem+json")
            if "422" in wanted and "validation_error" not in responses.get("422", {}).get(
                "description", ""
            ):
                missing.append(f"{name}: 422 does not list validation_error")
            for status, response in responses.items():
                if "HTTPValidationError" in json.dumps(response):
                    missing.append(f"{name}: {status} is FastAPI's default, not problem+json")
    assert not missing, "undeclared problem answers:\n  " + "\n  ".join(missing)

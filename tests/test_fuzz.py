"""schemathesis over every operation of the OpenAPI schema: no 5xx, every answer as documented.

The app is called in process (ASGI) with an admin or a secret key, or a referrer session token
(which reaches /v1/me… and is refused everywhere else). Path parameters are either
generated or, half of the time, the ids of objects seeded first, so that the fuzzer reaches past
the 404s into the handlers. `REFERRAL_FUZZ_EXAMPLES` (default 25) sets the examples per operation
and phase; `make fuzz` runs many more.

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
from tests.settings import ON_POSTGRES, settings_for_tests

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


@schema.parametrize()
@schema.given(kind=st.sampled_from(["admin", "secret", "session"]), real_ids=st.booleans())
def test_api_answers_as_documented(case: schemathesis.Case, kind: str, real_ids: bool) -> None:
    if real_ids and case.path_parameters:
        # Name the seeded objects, so that the case reaches past the 404 into the handler.
        for name in case.path_parameters:
            if name in REAL:
                case.path_parameters[name] = REAL[name]
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {KEYS[kind]}"},
        checks=CHECKS,
        allow_redirects=False,
    )
    if kind == "session" and response.status_code == 401:
        # Signed out or revoked by an earlier case: later cases get a live session again.
        KEYS["session"] = asyncio.run(_mint_session(REAL["referrer_id"]))


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

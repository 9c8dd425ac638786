"""The committed openapi/openapi.json is the app's schema, and every operation documents its 4xx."""

import json
from typing import Any

import pytest

from app.http.openapi import SCHEMA_PATH, build_schema, render_schema

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Probes answer 200 or 503 to load balancers; they take no input and need no key.
NO_CLIENT_ERRORS = {"/healthz", "/readyz"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return build_schema()


def test_committed_schema_matches_the_app(schema: dict[str, Any]) -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
    if committed == render_schema(schema):
        return
    old_paths = json.loads(committed).get("paths", {}) if committed else {}
    new_paths = schema.get("paths", {})
    changed = sorted(
        path
        for path in old_paths.keys() | new_paths.keys()
        if old_paths.get(path) != new_paths.get(path)
    )
    pytest.fail(
        "openapi/openapi.json differs from the app's schema; run `make openapi` and commit it. "
        f"Paths that differ: {', '.join(changed) or 'none (components or info changed)'}",
        pytrace=False,
    )


def _is_fastapi_default_422(response: dict[str, Any]) -> bool:
    # FastAPI adds this to any operation with parameters; it is not a declared answer.
    ref = str(response.get("content", {}).get("application/json", {}).get("schema", {}))
    return response.get("description") == "Validation Error" and "HTTPValidationError" in ref


def test_every_operation_declares_a_client_error(schema: dict[str, Any]) -> None:
    missing = []
    for path, operations in schema["paths"].items():
        if path in NO_CLIENT_ERRORS:
            continue
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            declared = [
                status
                for status, response in operation.get("responses", {}).items()
                if status.upper() == "4XX"
                or (
                    status.isdigit()
                    and 400 <= int(status) < 500
                    and not (status == "422" and _is_fastapi_default_422(response))
                )
            ]
            if not declared:
                missing.append(f"{method.upper()} {path}")
    assert not missing, (
        "operations without a declared 4xx response (add responses=problem_responses(...)): "
        + ", ".join(missing)
    )

"""Domain errors and the one builder of RFC 9457 problem+json documents.

Every failure the service answers is an `AppError` subclass with a stable status and code;
`problem_document` turns one into the body that handlers (app.http.errors) and middleware
alike send. Nothing here knows about FastAPI.
"""

import json
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError

PROBLEM_TYPE_BASE = "https://referral-service.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document; `code` is stable, `detail` is for people."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


class AppError(Exception):
    """A failure with a stable `code`; `detail` tells a person what to do about it."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    # Headers every answer of this error carries (e.g. Retry-After), merged under `headers`.
    default_headers: ClassVar[dict[str, str]] = {}
    # Final: the same request sent again gets the same answer, so it is stored under an
    # Idempotency-Key. Transient answers (a retry may succeed) are not, and release the key.
    final: ClassVar[bool] = True

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ):
        self.detail = detail or self.title
        self.headers = {**self.default_headers, **(headers or {})} or None
        self.errors = errors
        super().__init__(self.detail)


def problem_document(error: AppError) -> dict[str, Any]:
    """The problem+json body of `error`: the one place a problem answer is written."""
    return Problem(
        type=PROBLEM_TYPE_BASE + error.code,
        title=error.title,
        status=error.status,
        detail=error.detail,
        code=error.code,
        errors=error.errors,
    ).model_dump(exclude_none=True)


def problem_bytes(error: AppError) -> bytes:
    return json.dumps(problem_document(error), separators=(",", ":")).encode()


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "This API key may not do that"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class Unprocessable(AppError):
    status, code, title = 422, "invalid_request", "The request is not valid"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"
    final = False


# Answers given outside the handlers (the request validation, app.http.unit_of_work,
# app.http.load_shedding); the classes name their codes so that the OpenAPI schema can declare them.
class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "The request is not valid"


class MalformedBody(AppError):
    """A body that cannot be decoded at all (not UTF-8 JSON); a JSON syntax error is a 422."""

    status, code, title = 400, "bad_request", "Bad request"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class IdempotencyKeyInProgress(AppError):
    status, code, title = 409, "idempotency_key_in_progress", "Request in progress"
    final = False


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused"


class IdempotencyKeyInvalid(AppError):
    status, code, title = 422, "invalid_idempotency_key", "Idempotency-Key not valid"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}

    def __init__(self, detail: str = "The database cannot be reached; retry shortly.") -> None:
        super().__init__(detail)


class Overloaded(ServiceUnavailable):
    code, title = "overloaded", "Service overloaded"
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class ConcurrentUpdate(AppError):
    """An unforeseen race or a deadlock: nothing was stored, and a retry resolves it."""

    status, code, title = 409, "concurrent_update", "Conflict"
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}
    final = False

    def __init__(self, detail: str = "A concurrent request changed the same data; retry.") -> None:
        super().__init__(detail)


class InternalError(AppError):
    status, code, title = 500, "internal_error", "Internal server error"
    final = False


class MethodNotAllowed(AppError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


# What every operation may answer besides its own errors; app.http.auth.AUTHENTICATED_ERRORS adds
# those of the API key check.
COMMON_ERRORS: tuple[type[AppError], ...] = (
    ValidationFailed,
    Unprocessable,  # e.g. text with NUL, which Postgres cannot store
    DatabaseUnavailable,
    Overloaded,
)
# A body (or its absence) is read and checked on every POST and PATCH; a POST may carry an
# Idempotency-Key.
PATCH_ERRORS: tuple[type[AppError], ...] = (
    ValidationFailed,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,  # a body sent without Content-Type: application/json
)
POST_ERRORS: tuple[type[AppError], ...] = (
    *PATCH_ERRORS,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyInvalid,
)


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problem answers of an endpoint."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status,
            {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": ""},
        )
        codes = [code for code in entry["description"].split(", ") if code]
        if error.code not in codes:
            entry["description"] = ", ".join([*codes, error.code])
    return responses


# Postgres' character_not_in_repertoire: a string with a NUL character.
NUL_IN_TEXT_SQLSTATE = "22021"
# serialization_failure, deadlock_detected
RETRYABLE_CONFLICT_SQLSTATES = ("40001", "40P01")


# Connection exceptions, too many connections / out of resources, operator intervention
# (shutdown, cannot connect now), lock timeout: the database is there but cannot serve now.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "55P03")


def _sqlstate(error: BaseException | None) -> str | None:
    for candidate in (error, getattr(error, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_database_unavailable(exc: BaseException) -> bool:
    """Connection loss, refused connections, pool exhaustion and lock timeouts: retryable."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = _sqlstate(exc.orig)
        if sqlstate and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return isinstance(
        exc,
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,
            sa_exc.DisconnectionError,
            ConnectionError,
            OSError,
            TimeoutError,
        ),
    )


def error_for_database_exception(exc: BaseException) -> AppError | None:
    """The answer to a database failure that a caller can act on, or None when it is a bug."""
    if isinstance(exc, sa_exc.IntegrityError):
        # A race the service did not foresee; nothing was stored, and a retry resolves it.
        return ConcurrentUpdate()
    if isinstance(exc, DBAPIError):
        sqlstate = _sqlstate(exc.orig)
        if sqlstate in RETRYABLE_CONFLICT_SQLSTATES:
            # A deadlock or serialization failure: the transaction was rolled back whole.
            return ConcurrentUpdate()
        if sqlstate == NUL_IN_TEXT_SQLSTATE:
            # Postgres cannot store U+0000 in text; SQLite can, so the schemas let it through.
            return Unprocessable("Text may not contain NUL (U+0000) characters.")
    if is_database_unavailable(exc):
        return DatabaseUnavailable()
    return None

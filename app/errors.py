"""Domain errors and the RFC 9457 problem+json answers for every failure."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("app.errors")

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
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        self.detail = detail or self.title
        self.headers = headers
        super().__init__(self.detail)


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


# Answers given outside the handlers (the request validation, app.unit_of_work,
# app.load_shedding); the classes name their codes so that the OpenAPI schema can declare them.
class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "The request is not valid"


class MalformedBody(AppError):
    """A body that cannot be decoded at all (not UTF-8 JSON); a JSON syntax error is a 422."""

    status, code, title = 400, "bad_request", "Bad request"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class IdempotencyKeyInProgress(AppError):
    status, code, title = 409, "idempotency_key_in_progress", "Request in progress"


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused"


class IdempotencyKeyInvalid(AppError):
    status, code, title = 422, "invalid_idempotency_key", "Idempotency-Key not valid"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class Overloaded(ServiceUnavailable):
    code, title = "overloaded", "Service overloaded"


# What every operation may answer besides its own errors; app.auth.AUTHENTICATED_ERRORS adds
# those of the API key check.
COMMON_ERRORS: tuple[type[AppError], ...] = (
    ValidationFailed,
    Unprocessable,  # e.g. text with NUL, which Postgres cannot store
    DatabaseUnavailable,
    Overloaded,
)
# A body (or its absence) is read and checked on every POST and PATCH; a POST may carry an
# Idempotency-Key.
PATCH_ERRORS: tuple[type[AppError], ...] = (ValidationFailed, MalformedBody, PayloadTooLarge)
POST_ERRORS: tuple[type[AppError], ...] = (
    *PATCH_ERRORS,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyInvalid,
)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=errors,
    ).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


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


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        errors.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return errors


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.title, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(part for part in first["loc"] if part != "body") or "request"
        return problem_response(
            ValidationFailed.status,
            ValidationFailed.code,
            ValidationFailed.title,
            f"{where}: {first['msg']}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, code, title, detail, headers=headers)

    @app.exception_handler(sa_exc.IntegrityError)
    async def _integrity(_request: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        # A race the service did not foresee; nothing was stored, and a retry resolves it.
        logger.warning("integrity error: %s", exc.orig.__class__.__name__)
        return problem_response(
            409,
            "concurrent_update",
            "Conflict",
            "A concurrent request changed the same data; retry.",
        )

    @app.exception_handler(DBAPIError)
    async def _database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if _sqlstate(exc.orig) in RETRYABLE_CONFLICT_SQLSTATES:
            # A deadlock or serialization failure: the transaction was rolled back whole.
            logger.warning("transaction conflict: %s", _sqlstate(exc.orig))
            return problem_response(
                409,
                "concurrent_update",
                "Conflict",
                "A concurrent request changed the same data; retry.",
                headers={"Retry-After": "1"},
            )
        if getattr(exc.orig, "sqlstate", None) == NUL_IN_TEXT_SQLSTATE:
            # Postgres cannot store U+0000 in text; SQLite can, so the schemas let it through.
            return problem_response(
                Unprocessable.status,
                Unprocessable.code,
                Unprocessable.title,
                "Text may not contain NUL (U+0000) characters.",
            )
        raise exc

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_database_unavailable(exc):
            logger.warning("database unavailable: %s", type(exc).__name__)
            return problem_response(
                503,
                "database_unavailable",
                "Service temporarily unavailable",
                "The database cannot be reached; retry shortly.",
                headers={"Retry-After": "2"},
            )
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal_error", "Internal server error", "An unexpected error occurred."
        )

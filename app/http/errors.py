"""Problem answers over HTTP: the exception handlers and the raw ASGI sender for middleware.

Both render the body with app.core.errors.problem_document, so a problem reads the same
whether a handler or a middleware answered it.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from app.core.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    Forbidden,
    InternalError,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_for_database_exception,
    problem_bytes,
    problem_document,
)
from app.core.json_input import parse_failure

logger = logging.getLogger("app.http.errors")

# Starlette's own HTTP errors (routing, method), rendered as the AppError of the same status.
_HTTP_ERRORS: dict[int, type[AppError]] = {
    400: MalformedBody,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def problem_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        problem_document(error),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers,
    )


def problem_start_and_body(error: AppError) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a problem answer, for middleware that answers by itself."""
    body = problem_bytes(error)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    start = {"type": "http.response.start", "status": error.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


async def send_problem(send: Send, error: AppError) -> None:
    start, body = problem_start_and_body(error)
    await send(start)
    await send(body)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


def _http_error(exc: StarletteHTTPException) -> AppError:
    # FastAPI answers a body its JSON parser raised on (too deep, a number too long) with a
    # bare 400; like a syntax error, that is a 422 that says what is wrong.
    refused = parse_failure(exc.__cause__) if exc.__cause__ is not None else None
    if exc.status_code == 400 and refused is not None:
        return ValidationFailed(f"request: {refused}")
    error_class = _HTTP_ERRORS.get(exc.status_code)
    if error_class is None:
        error = AppError(str(exc.detail), headers=dict(exc.headers) if exc.headers else None)
        error.status, error.code, error.title = exc.status_code, "http_error", "HTTP error"
        return error
    detail = exc.detail if isinstance(exc.detail, str) else None
    return error_class(detail, headers=dict(exc.headers) if exc.headers else None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(part for part in first["loc"] if part != "body") or "request"
        return problem_response(ValidationFailed(f"{where}: {first['msg']}", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(_http_error(exc))

    @app.exception_handler(DBAPIError)
    async def _database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        # Handled here, inside the unit of work, so that it sees the answer and rolls back.
        error = error_for_database_exception(exc)
        if error is None:
            raise exc
        logger.warning("database error answered %s: %s", error.code, type(exc.orig).__name__)
        return problem_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = error_for_database_exception(exc)
        if error is not None:
            logger.warning("database error answered %s: %s", error.code, type(exc).__name__)
            return problem_response(error)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(InternalError("An unexpected error occurred."))

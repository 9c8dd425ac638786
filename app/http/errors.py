"""Problem answers over HTTP: the exception handlers and the raw ASGI sender for middleware.

Both render the body with app.core.errors.problem_document, so a problem reads the same
whether a handler or a middleware answered it. The handlers also note in the request's state
whether the answer is final (AppError.final), for app.http.unit_of_work to decide whether it
is stored under an Idempotency-Key.
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
from app.http.validation import validation_problem

logger = logging.getLogger("app.http.errors")

# The request-state entry (scope["state"]) saying whether the problem answered is final.
ANSWER_IS_FINAL = "answer_is_final"

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


def answer_problem(request: Request, error: AppError) -> JSONResponse:
    """The problem answer of a handler, noting whether a retry could be answered otherwise."""
    setattr(request.state, ANSWER_IS_FINAL, error.final)
    return problem_response(error)


async def send_problem(send: Send, error: AppError) -> None:
    start, body = problem_start_and_body(error)
    await send(start)
    await send(body)


# FastAPI's words for a body it could not decode (e.g. not UTF-8), and ours.
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"
UNREADABLE_BODY = "The body could not be read: send UTF-8 encoded JSON."


def _http_error(request: Request, exc: StarletteHTTPException) -> AppError:
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
    if exc.status_code == 404 and "endpoint" not in request.scope:
        # The router found no endpoint (a domain's own 404s are AppErrors).
        detail = f"No endpoint at {request.url.path}; the API is listed at /docs."
    elif exc.status_code == 400 and detail == FASTAPI_UNREADABLE_BODY:
        detail = UNREADABLE_BODY
    return error_class(detail, headers=dict(exc.headers) if exc.headers else None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return answer_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer_problem(request, validation_problem(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return answer_problem(request, _http_error(request, exc))

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # Handled here, inside the unit of work, so that it sees the answer and rolls back.
        error = error_for_database_exception(exc)
        if error is None:
            raise exc
        logger.warning("database error answered %s: %s", error.code, type(exc.orig).__name__)
        return answer_problem(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside the unit of work (Starlette's outermost layer), which has rolled back.
        error = error_for_database_exception(exc)
        if error is not None:
            logger.warning("database error answered %s: %s", error.code, type(exc).__name__)
            return answer_problem(request, error)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return answer_problem(request, InternalError("An unexpected error occurred."))

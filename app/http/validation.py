"""What a request that fails validation is told: the one mistake to fix first, said plainly.

A body that is not JSON at all (no or another Content-Type) is a 415 saying what to send; a JSON
syntax error gives its line and column; an unknown field leads (it usually explains the
"missing" ones: a misspelt `amount` is both), and names the fields the body takes. The full
list stays in `errors`, in that order.
"""

from typing import Any, get_args

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from app.core.errors import AppError, UnsupportedMediaType, ValidationFailed

JSON_HINT = "Send the body as JSON, with the header Content-Type: application/json"
# Which error of a body to show first: an unknown field, then the rest as pydantic found them.
FIRST = ("json_invalid", "extra_forbidden")


def validation_problem(request: Request, exc: RequestValidationError) -> AppError:
    """The problem answer for a request that FastAPI's validation refused."""
    raw = exc.errors()
    # FastAPI hands the bytes on unparsed when the Content-Type is not JSON (or missing).
    if isinstance(exc.body, bytes | bytearray) and any(_in_body(e) for e in raw):
        sent = request.headers.get("content-type")
        said = f"this request said {sent!r}" if sent else "this request had none"
        return UnsupportedMediaType(f"{JSON_HINT} ({said}).")
    errors = sorted(
        (_error(e, exc.body) for e in raw),
        key=lambda e: FIRST.index(e["type"]) if e["type"] in FIRST else len(FIRST),
    )
    if not errors:
        return ValidationFailed("The request is not valid.", errors=[])
    detail = _sentence(errors[0], request)
    if len(errors) > 1:
        more = len(errors) - 1
        detail += f" ({more} more problem{'s' if more > 1 else ''} in errors)"
    return ValidationFailed(detail, errors=errors)


def _in_body(error: Any) -> bool:
    loc = error.get("loc", ())
    return bool(loc) and loc[0] == "body"


def _error(error: Any, body: Any) -> dict[str, Any]:
    loc = [str(part) for part in error.get("loc", ())]
    found: dict[str, Any] = {
        "loc": loc,
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }
    if found["type"] == "json_invalid" and isinstance(body, str) and len(loc) == 2:
        # FastAPI says only "JSON decode error" at a character offset; say where and why.
        position = int(loc[1])
        line = body.count("\n", 0, position) + 1
        column = position - body.rfind("\n", 0, position)
        reason = str((error.get("ctx") or {}).get("error") or "invalid JSON")
        reason = reason[:1].lower() + reason[1:]
        found.update(
            loc=["body"],
            msg=f"{reason} at line {line}, column {column}",
            line=line,
            column=column,
        )
    return found


def _sentence(error: dict[str, Any], request: Request) -> str:
    loc = error["loc"]
    where = ".".join(part for part in loc if part != "body")
    if error["type"] == "json_invalid":
        return f"The body is not valid JSON: {error['msg']}."
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(request, loc)
        takes = f"; the body takes {', '.join(allowed)}" if allowed else ""
        return f"unknown field `{where}`{takes}"
    if error["type"] == "missing" and loc == ["body"]:
        return f"The request needs a body. {JSON_HINT}."
    return f"{where or 'request'}: {error['msg']}"


def _fields_at(request: Request, loc: list[str]) -> list[str]:
    """The fields of the body model that holds `loc` (`body`, …, the unknown name), if known."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or loc[:1] != ["body"]:
        return []
    model = _model_in(body_field.field_info.annotation)
    for part in loc[1:-1]:
        if model is None:
            return []
        if part.isdigit():
            continue  # an index into a list of models: the element model stays
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one model an annotation holds (through Optional, list, Annotated), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = {model for arg in get_args(annotation) if (model := _model_in(arg)) is not None}
    return models.pop() if len(models) == 1 else None

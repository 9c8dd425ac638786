"""What JSON the service takes in: request bodies and the platforms' signed webhook bodies.

Python's parser accepts more than JSON, and more than the rest of the service can hold: `NaN`
and `Infinity` (not JSON), `1e999` (parsed as infinity), nesting thousands of levels deep (a
RecursionError, in the parser or in any code that walks the value later), integers past
Python's int-from-string limit (a ValueError), and U+0000 in text (Postgres stores no NUL).
Each is refused here, with a message that says which, before anything else sees the value.
"""

import json
import math
import sys
from typing import Any

# Far deeper than any body the API defines or a Stripe or Shopify event has (under 10), and
# shallow enough that code walking a value recursively stays well inside Python's stack.
MAX_DEPTH = 64

NOT_FINITE = "numbers must be finite: NaN, Infinity and numbers beyond ±1.8e308 are not taken"
HAS_NUL = "text may not contain NUL (U+0000) characters"
TOO_DEEP = f"the JSON is nested more than {MAX_DEPTH} levels deep"


class RefusedJson(ValueError):
    """The body is not JSON this service takes; the message says why."""


def refusal(value: Any) -> str | None:
    """Why a parsed JSON value cannot be taken (too deep, a non-finite number, a NUL), or None.

    Iterative, so that a value nested far too deep is measured without recursing into it.
    """
    if _bad_scalar(value):
        return _scalar_problem(value)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if not isinstance(container, dict | list):
            continue
        if depth > MAX_DEPTH:
            return TOO_DEEP
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, child in items:
            if isinstance(key, str) and "\x00" in key:
                return HAS_NUL
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif _bad_scalar(child):
                return _scalar_problem(child)
    return None


def _bad_scalar(value: Any) -> bool:
    return (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, str) and "\x00" in value
    )


def _scalar_problem(value: Any) -> str:
    return HAS_NUL if isinstance(value, str) else NOT_FINITE


def _no_constant(name: str) -> Any:
    raise RefusedJson(f"{name} is not JSON; {NOT_FINITE}")


def parse_failure(exc: BaseException) -> str | None:
    """What went wrong when Python's parser raised `exc` on a body that is text, or None.

    For bodies parsed by FastAPI: it answers these with a generic 400 and keeps the cause.
    """
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError):
        return None
    if isinstance(exc, ValueError):
        # The one other ValueError json.loads raises: Python's int-from-string limit.
        return f"a number in the JSON has more than {sys.get_int_max_str_digits()} digits"
    return None


def parse_json(body: bytes) -> Any:
    """The body's JSON value, or RefusedJson for anything this module refuses (see above)."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except RefusedJson:
        raise
    except UnicodeDecodeError as exc:
        raise RefusedJson("the body is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise RefusedJson(f"the body is not JSON: {exc.msg} at position {exc.pos}") from exc
    except (RecursionError, ValueError) as exc:
        raise RefusedJson(parse_failure(exc) or "the body is not JSON") from exc
    problem = refusal(value)
    if problem is not None:
        raise RefusedJson(problem)
    return value

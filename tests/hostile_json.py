"""JSON text that Python's parser takes (or chokes on) but the service must refuse with a 4xx.

Written as raw text, since `json.dumps` cannot write most of it: it would write `NaN`, but not
`1e999`, an integer past Python's int-from-string limit, or 10,000 levels of nesting.
"""

import json
from typing import Any

# Each of these, anywhere in a body, makes it a body the service does not take.
FRAGMENTS = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "overflowing_float": "1e999",
    "overflowing_negative_float": "-1e999",
    "long_integer": "9" * 5000,
    "deep_lists": "[" * 10_000 + "]" * 10_000,
    "deep_objects": '{"a":' * 500 + "1" + "}" * 500,
    "just_too_deep": "[" * 65 + "]" * 65,
    "nul_text": '"a\\u0000b"',
    "nul_key": '{"a\\u0000b": 1}',
}

_SENTINEL = "__hostile_fragment_goes_here__"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the root excluded) that a fragment can replace."""
    if not isinstance(value, dict | list):
        return []
    found: list[tuple[Any, ...]] = []
    for key, child in value.items() if isinstance(value, dict) else enumerate(value):
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def inject(value: Any, path: tuple[Any, ...], fragment: str) -> bytes:
    """`value` as JSON text with the raw `fragment` in place of what is at `path`."""
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _SENTINEL
    text = json.dumps(copy)
    assert text.count(json.dumps(_SENTINEL)) == 1
    return text.replace(json.dumps(_SENTINEL), fragment).encode()

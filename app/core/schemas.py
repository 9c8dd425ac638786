"""Shared pieces of request and response models."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    UrlConstraints,
    WithJsonSchema,
    model_validator,
)

from app.core.money import is_currency


class InputModel(BaseModel):
    """Request bodies refuse unknown fields: nothing a caller may not set is silently taken."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # Postgres cannot store U+0000 in text; refuse it on every backend alike.
        if _has_nul(data):
            raise ValueError("text may not contain NUL (U+0000) characters")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _currency(value: str) -> str:
    value = value.upper()
    if not is_currency(value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


# The times the service takes: wide enough for any real event or expiry, narrow enough that
# windows around them (a year either way) and time zone shifts stay inside datetime's range.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone (e.g. 'Z' for UTC)")
    try:
        in_range = EARLIEST_TIME <= value.astimezone(UTC) < LATEST_TIME
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError(
            f"give a time from {EARLIEST_TIME:%Y-%m-%d} to {LATEST_TIME:%Y-%m-%d} (UTC)"
        )
    return value


METADATA_MAX_KEYS = 50
METADATA_MAX_BYTES = 8_000
METADATA_MAX_DEPTH = 3


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > METADATA_MAX_KEYS:
        raise ValueError(f"metadata may have at most {METADATA_MAX_KEYS} keys")
    if _depth(value) > METADATA_MAX_DEPTH:
        raise ValueError(f"metadata may be nested at most {METADATA_MAX_DEPTH} levels deep")
    # Measured as stored: compact JSON in UTF-8.
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"metadata is too large ({size} bytes as JSON; at most {METADATA_MAX_BYTES})"
        )
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


Currency = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_currency)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Email = Annotated[
    str,
    StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", to_lower=True),
]
ShortText = Annotated[str, Field(max_length=200)]
HttpUrl = Annotated[AnyUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]


def _not_a_float(value: Any) -> Any:
    # Money travels as a decimal string ("12.50"); a JSON number is a binary float.
    if isinstance(value, float):
        raise ValueError('give money as a decimal string, e.g. "12.50"')
    return value


PositiveMoney = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    Field(gt=0, max_digits=16, decimal_places=4),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,4})?$"}),
]

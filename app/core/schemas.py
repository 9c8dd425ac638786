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
from pydantic_core import PydanticCustomError

from app.core.json_input import refusal
from app.core.money import is_currency, is_decimal_string


class InputModel(BaseModel):
    """Request bodies refuse unknown fields: nothing a caller may not set is silently taken."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _takeable_json(cls, data: Any) -> Any:
        # NaN, 1e999, deep nesting and NUL parse from a body but cannot be stored or walked:
        # refused for every body alike (app.core.json_input), before any field sees them.
        problem = refusal(data)
        if problem is not None:
            raise PydanticCustomError("json_refused", problem)
        return data


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


MONEY_FORM = 'a decimal string like "49.99" (ASCII digits, optionally a point and decimals)'


def _decimal_string(value: Any) -> Any:
    # Money travels as a decimal string: a JSON number is a binary float (or an integer that
    # reads as the same thing), and Decimal() alone would take "1e3", "1_000" or " 5".
    if isinstance(value, Decimal) and value.is_finite():
        return value  # from the service itself: a stored rule validated again with a change
    if isinstance(value, str) and is_decimal_string(value):
        return value
    raise PydanticCustomError("decimal_string", f"must be {MONEY_FORM}")


# Then the currency's minor unit: the services refuse more decimals than it has ("80.0" is a
# valid USD amount, "80.001" is not; JPY takes none), see app.core.money.has_valid_precision.
PositiveMoney = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(gt=0, max_digits=16, decimal_places=4),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$",
            "description": f"Money as {MONEY_FORM}: greater than 0, at most 12 digits before "
            "the point and no more decimals than the currency's minor unit (2 for USD, 0 for "
            "JPY). A JSON number is refused.",
        }
    ),
]

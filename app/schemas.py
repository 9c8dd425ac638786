"""Shared pieces of request and response models."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, AnyUrl, BaseModel, ConfigDict, Field, StringConstraints, UrlConstraints

from app.money import is_currency


class InputModel(BaseModel):
    """Request bodies refuse unknown fields: nothing a caller may not set is silently taken."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _currency(value: str) -> str:
    value = value.upper()
    if not is_currency(value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone (e.g. 'Z' for UTC)")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 50:
        raise ValueError("metadata may have at most 50 keys")
    if len(str(value)) > 8_000:
        raise ValueError("metadata is too large (8 kB at most)")
    if _depth(value) > 3:
        raise ValueError("metadata may be nested at most 3 levels deep")
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
PositiveMoney = Annotated[Decimal, Field(gt=0, max_digits=16, decimal_places=4)]

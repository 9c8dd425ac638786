"""Money is Decimal end to end; amounts are rounded half-even to the currency's minor unit."""

import re
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache

from babel.numbers import get_currency_precision, list_currencies

# The one written form of money: ASCII digits, optionally a point and more digits ("49.99").
# Decimal() takes far more ("1e3", "1_000", " 5", "+5", "5.", ".5", digits of other scripts),
# none of which a client means as an amount.
DECIMAL_STRING = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def is_decimal_string(text: str) -> bool:
    return DECIMAL_STRING.fullmatch(text) is not None


@cache
def known_currencies() -> frozenset[str]:
    return frozenset(code for code in list_currencies() if len(code) == 3 and code.isalpha())


def is_currency(code: str) -> bool:
    return code in known_currencies()


@cache
def minor_unit(currency: str) -> int:
    # Babel looks it up in its locale data on every call; it never changes while we run.
    return int(get_currency_precision(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-even to the minor unit of `currency` (2 for USD, 0 for JPY)."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_EVEN)


def has_valid_precision(amount: Decimal, currency: str) -> bool:
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and -exponent <= minor_unit(currency)


def for_display(amount: Decimal, unit: str) -> Decimal:
    """The amount as answered: to the currency's minor unit, or whole points."""
    if unit == "points":
        return amount.quantize(Decimal(1))
    return quantize(amount, unit)

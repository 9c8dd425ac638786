"""CSV cells and tables, written as the JSON answers write their values (no HTTP here)."""

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class CsvTable:
    """A CSV export: its file name, the header row and the rows (a list or a generator)."""

    filename: str
    header: Sequence[str]
    rows: Iterable[Sequence[Any]]


# A spreadsheet runs a cell starting with these as a formula; text from callers is defused.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A JSON-mode value as a CSV cell: null is empty, text that a spreadsheet would run as a
    formula gets a leading apostrophe (numbers, negative ones included, are left alone)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def encode_rows(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


def json_row(model: Any, columns: Sequence[str]) -> list[Any]:
    """The named fields of a response model, as its JSON answer writes them."""
    dumped = model.model_dump(mode="json", by_alias=True)
    return [dumped[name] for name in columns]

"""Time windows of the metrics: validated ranges, time zones and calendar buckets.

Every range is half-open, `[from, to)`. Buckets are computed here, in Python, from the
IANA time-zone database (zoneinfo), and handed to the database as a list of UTC boundaries,
so that bucketing is the same on Postgres and SQLite and exact across DST changes.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.core.errors import AppError

Interval = Literal["day", "week", "month"]

DEFAULT_DAYS = 30
MAX_DAYS = 400
COHORT_DEFAULT_DAYS = 365
COHORT_MAX_DAYS = 1100
MAX_BUCKETS = 1000


class InvalidRange(AppError):
    status, code, title = 422, "invalid_range", "The time range is not valid"


class InvalidTimeZone(AppError):
    status, code, title = 422, "invalid_timezone", "The time zone is not valid"


@dataclass(frozen=True)
class Window:
    """The half-open range `[start, end)` in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Bucket:
    """One calendar period in the asked zone, clipped to the window: `[start, end)` in UTC.

    `partial` when the clipping cut it: the window starts or ends inside the period, so the
    bucket holds less than the whole day, week or month its label names.
    """

    index: int
    label: str
    start: datetime
    end: datetime
    partial: bool


def make_window(
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime,
    default_days: int = DEFAULT_DAYS,
    max_days: int = MAX_DAYS,
) -> Window:
    """The asked range, or the `default_days` before `to` (itself defaulting to now)."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidRange(f"{name} needs a time zone (e.g. 'Z' for UTC).")
    try:
        end_utc = end.astimezone(UTC) if end is not None else now
        start_utc = (
            start.astimezone(UTC) if start is not None else end_utc - timedelta(days=default_days)
        )
    except OverflowError:
        raise InvalidRange("from and to must be times between the years 1 and 9999.") from None
    if end_utc <= start_utc:
        raise InvalidRange("to must be after from.")
    if end_utc - start_utc > timedelta(days=max_days):
        raise InvalidRange(f"The range may span at most {max_days} days.")
    return Window(start_utc, end_utc)


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name` (e.g. 'America/New_York'), or InvalidTimeZone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidTimeZone(f"{name!r} is not an IANA time zone.") from exc


def period_start(day: date, interval: Interval) -> date:
    """The first local day of the period holding `day`; weeks start on Monday (ISO 8601)."""
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period(day: date, interval: Interval) -> date:
    if interval == "day":
        return day + timedelta(days=1)
    if interval == "week":
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def period_label(day: date, interval: Interval) -> str:
    return day.strftime("%Y-%m") if interval == "month" else day.isoformat()


def day_starts_at(day: date, zone: ZoneInfo) -> datetime:
    """The first UTC instant whose local date in `zone` is `day` or later.

    Local midnight may not exist (a DST gap) or happen twice (a DST overlap at midnight):
    of the two readings of midnight, the earliest one that is already on `day` is it.
    """
    readings = sorted(
        datetime.combine(day, time(0), tzinfo=zone).replace(fold=fold).astimezone(UTC)
        for fold in (0, 1)
    )
    for reading in readings:
        if reading.astimezone(zone).date() >= day:
            return reading
    return readings[-1]


def buckets(window: Window, interval: Interval, zone: ZoneInfo) -> list[Bucket]:
    """The periods of `interval` in `zone` that meet the window, clipped to it, in order."""
    first = period_start(window.start.astimezone(zone).date(), interval)
    found: list[Bucket] = []
    day = first
    while True:
        following = next_period(day, interval)
        lower = day_starts_at(day, zone)
        upper = day_starts_at(following, zone)
        if lower >= window.end:
            break
        start, end = max(lower, window.start), min(upper, window.end)
        if start < end:
            partial = (start, end) != (lower, upper)
            found.append(Bucket(len(found), period_label(day, interval), start, end, partial))
        if len(found) > MAX_BUCKETS:
            raise InvalidRange(f"The range holds more than {MAX_BUCKETS} {interval}s.")
        day = following
    return found

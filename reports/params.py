"""Report parameters: parsing and validation, shared by the HTTP endpoints and the CLI. Pure.

Every failure is a :class:`ParameterError` naming the parameter, which the
HTTP layer answers with 400 and the CLI prints; nothing here lets bad
input through to a query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from settings import zone
from tracking.protocol import valid_id

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_OFFSET = 10_000_000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_TEXT = 64


class ParameterError(ValueError):
    """A report parameter is missing or invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True, slots=True)
class Window:
    """The half-open range ``[start, end)`` of server time a report covers (infinite when open)."""

    start: float = -math.inf
    end: float = math.inf

    @property
    def bounded_start(self) -> bool:
        return self.start != -math.inf

    @property
    def bounded_end(self) -> bool:
        return self.end != math.inf


def timezone(value: str | None, parameter: str = "tz") -> ZoneInfo:
    """An IANA time zone by name (``Asia/Shanghai``, ``UTC``)."""
    if value is None or value == "":
        raise ParameterError(parameter, f"{parameter} is required")
    try:
        return zone(value)
    except ValueError as exc:
        message = str(exc)
        raise ParameterError(
            parameter, f"{parameter} {message}" if message.startswith("must") else message
        ) from None


def instant(value: str, parameter: str, tz: ZoneInfo, *, end_of_day: bool = False) -> float:
    """An ISO 8601 time as epoch seconds.

    A time without an offset is local time in ``tz``. A bare date is that
    day's local midnight in ``tz``, or with ``end_of_day`` the next one, so
    ``from=2024-01-01&to=2024-01-31`` covers the whole of January.
    """
    if len(value) > MAX_TEXT:
        raise ParameterError(parameter, f"{parameter} is too long for an ISO 8601 time")
    try:
        if _DATE.fullmatch(value):
            day = date.fromisoformat(value)
            parsed = datetime(day.year, day.month, day.day, tzinfo=tz)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ParameterError(
            parameter, f"{parameter} must be an ISO 8601 date or time, such as 2024-01-31T08:00:00+08:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        if end_of_day and _DATE.fullmatch(value):
            parsed = (parsed + timedelta(days=1)).replace(fold=0)
        seconds = parsed.timestamp()
        # The report writes its bounds back as times in ``tz``: refuse an
        # instant that falls outside the years 1-9999 there or in UTC
        # (0001-01-01 in Asia/Shanghai is still year 0 in UTC) rather than
        # fail on it later.
        datetime.fromtimestamp(seconds, tz)
        datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise ParameterError(
            parameter, f"{parameter} must fall within the years 1 to 9999, in UTC and in time zone {tz.key}"
        ) from None
    return seconds


def window(start: str | None, end: str | None, tz: ZoneInfo) -> Window:
    """The report range from optional ``from``/``to`` parameters."""
    lo = -math.inf if start in (None, "") else instant(start, "from", tz)
    hi = math.inf if end in (None, "") else instant(end, "to", tz, end_of_day=True)
    # Compared with the start of a ``to`` date: from=2024-02-02&to=2024-02-01 is backwards.
    if end not in (None, "") and lo > instant(end, "to", tz):
        raise ParameterError("from", "from must not be after to")
    return Window(lo, hi)


#: The longest window a report of every day (``daily-learners``) may cover, in calendar days.
MAX_DAYS = 366


def calendar_days(window: Window, tz: ZoneInfo, max_days: int = MAX_DAYS) -> list[date]:
    """Every local calendar day in ``tz`` the window touches, for a report that lists each day.

    Both bounds are required (an open window has no list of days) and the
    window may span at most ``max_days`` days.
    """
    if not window.bounded_start:
        raise ParameterError("from", "from is required: this report lists every day of its window")
    if not window.bounded_end:
        raise ParameterError("to", "to is required: this report lists every day of its window")
    first = datetime.fromtimestamp(window.start, tz).date()
    end = datetime.fromtimestamp(window.end, tz)
    # ``to`` is exclusive: a window ending at a local midnight does not touch that day.
    last = end.date() if end.time() != time(0) else end.date() - timedelta(days=1)
    count = max(1, (last - first).days + 1)
    if count > max_days:
        raise ParameterError("to", f"the window from from to to must span at most {max_days} days")
    return [first + timedelta(days=i) for i in range(count)]


def identifier(value: str | None, parameter: str, *, required: bool = True) -> str | None:
    """A userId or courseId: 1-128 characters of letters, digits and ``_ . : @ -``."""
    if value is None or value == "":
        if required:
            raise ParameterError(parameter, f"{parameter} is required")
        return None
    if not valid_id(value):
        raise ParameterError(
            parameter, f"{parameter} must be 1-128 characters of letters, digits and _ . : @ -"
        )
    return value


def count(value: str | None, parameter: str, *, default: int, minimum: int, maximum: int) -> int:
    """A non-negative integer parameter (``limit``, ``offset``) within bounds."""
    if value is None or value == "":
        return default
    if len(value) > 12 or not value.isascii() or not value.isdigit():
        raise ParameterError(parameter, f"{parameter} must be a whole number")
    number = int(value)
    if number < minimum:
        raise ParameterError(parameter, f"{parameter} must be at least {minimum}")
    if number > maximum:
        raise ParameterError(parameter, f"{parameter} must be at most {maximum}")
    return number


def page(limit: str | None, offset: str | None) -> tuple[int, int]:
    return (
        count(limit, "limit", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE),
        count(offset, "offset", default=0, minimum=0, maximum=MAX_OFFSET),
    )


def output_format(value: str | None, accept: str | None) -> str:
    """``csv`` or ``json``: ``format=`` wins, then an ``Accept`` naming ``text/csv``."""
    if value not in (None, ""):
        if value not in ("csv", "json"):
            raise ParameterError("format", "format must be json or csv")
        return value
    if accept and "text/csv" in accept.lower():
        return "csv"
    return "json"

"""The rows of each report, as JSON objects and as CSV lines (the HTTP endpoints and the CLI share them).

Durations: ``seconds`` is whole seconds (fractions dropped, as ``studyTime``
does) and ``secondsExact`` the credit to the microsecond. Times are ISO 8601
with the offset of the report's time zone.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from tracking.session import SessionRecord

from .figures import Day, LearnerDays, Total
from .split import exact_seconds, micros, whole_seconds

LEARNER_COURSES = (
    "userId",
    "courseId",
    "seconds",
    "secondsExact",
    "sessions",
    "firstStudiedAt",
    "lastStudiedAt",
    "open",
)
COURSE_LEARNERS = (
    "rank",
    "courseId",
    "userId",
    "seconds",
    "secondsExact",
    "sessions",
    "lastStudiedAt",
    "open",
)
COURSES = (
    "courseId",
    "seconds",
    "secondsExact",
    "learners",
    "sessions",
    "firstStudiedAt",
    "lastStudiedAt",
    "open",
)
DAILY = ("date", "seconds", "secondsExact")
#: The long form of ``daily-learners`` (one row per learner and day with study).
DAILY_LEARNERS = ("userId", "date", "seconds")
SESSIONS = (
    "sessionId",
    "userId",
    "courseId",
    "startedAt",
    "creditedUntil",
    "endedAt",
    "seconds",
    "secondsExact",
    "heartbeats",
    "endReason",
    "open",
)


def iso(instant: float | None, tz: ZoneInfo) -> str | None:
    if instant is None or not math.isfinite(instant):
        return None
    return datetime.fromtimestamp(instant, tz).isoformat()


def learner_course(user_id: str, total: Total, tz: ZoneInfo) -> dict:
    return {
        "userId": user_id,
        "courseId": total.key,
        "seconds": whole_seconds(total.micros),
        "secondsExact": exact_seconds(total.micros),
        "sessions": total.sessions,
        "firstStudiedAt": iso(total.first, tz),
        "lastStudiedAt": iso(total.last, tz),
        "open": total.open,
    }


def course_learner(rank: int, course_id: str, total: Total, tz: ZoneInfo) -> dict:
    return {
        "rank": rank,
        "courseId": course_id,
        "userId": total.key,
        "seconds": whole_seconds(total.micros),
        "secondsExact": exact_seconds(total.micros),
        "sessions": total.sessions,
        "lastStudiedAt": iso(total.last, tz),
        "open": total.open,
    }


def course(total: Total, tz: ZoneInfo) -> dict:
    return {
        "courseId": total.key,
        "seconds": whole_seconds(total.micros),
        "secondsExact": exact_seconds(total.micros),
        "learners": total.learners,
        "sessions": total.sessions,
        "firstStudiedAt": iso(total.first, tz),
        "lastStudiedAt": iso(total.last, tz),
        "open": total.open,
    }


def learner_days(row: LearnerDays) -> dict:
    return {
        "userId": row.user_id,
        "seconds": whole_seconds(row.micros),
        "secondsExact": exact_seconds(row.micros),
        "days": row.seconds,
        "daysExact": [exact_seconds(m) for m in row.day_micros],
    }


def learner_day_rows(row: LearnerDays, dates: list[date]) -> list[dict]:
    """The CSV rows of one learner: a row per day with study (whole seconds > 0)."""
    return [
        {"userId": row.user_id, "date": d.isoformat(), "seconds": s}
        for d, s in zip(dates, row.seconds, strict=True)
        if s > 0
    ]


def day(row: Day) -> dict:
    return {"date": row.date.isoformat(), "seconds": row.seconds, "secondsExact": exact_seconds(row.micros)}


def session(record: SessionRecord, tz: ZoneInfo) -> dict:
    credit = micros(record.seconds)
    return {
        "sessionId": record.session_id,
        "userId": record.user_id,
        "courseId": record.course_id,
        "startedAt": iso(record.started_at, tz),
        "creditedUntil": iso(record.credited_until, tz),
        "endedAt": iso(record.ended_at, tz),
        "seconds": whole_seconds(credit),
        "secondsExact": exact_seconds(credit),
        "heartbeats": record.heartbeats,
        "endReason": record.end_reason,
        "open": record.is_open,
    }


#: What a spreadsheet takes as the start of a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell: text that a spreadsheet would evaluate is neutralised with a leading ``'``.

    Ids may begin with ``-`` or ``@`` (``-A1:B2``, ``@SUM(1)``), so text
    cells starting with a formula trigger get OWASP's single-quote prefix.
    Numbers are written as numbers: they are never negative (seconds, counts
    and ranks are >= 0), so no number starts with ``-``.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_text(columns: Iterable[str], rows: Iterable[dict], *, header: bool) -> str:
    """CSV lines (RFC 4180, CRLF) for ``rows``, with the header line first if asked.

    The one writer of CSV, for the HTTP endpoints and the CLI alike; every cell
    goes through :func:`_cell`.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    columns = list(columns)
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return out.getvalue()

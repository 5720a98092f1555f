"""The MongoDB schema of the study records: collections, indexes, and records as documents.

Shared by the store, its report queries and the coordination of processes.
``docs/storage.md`` documents every collection, field and index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson.datetime_ms import DatetimeMS
from pymongo import IndexModel

from tracking.session import SessionRecord

SESSIONS = "study_sessions"
LEASES = "study_leases"
TAKEOVERS = "study_takeovers"
PROCESSES = "study_processes"

INDEXES: dict[str, list[IndexModel]] = {
    SESSIONS: [
        # "sessions of a user in a course" (totals, history); its userId prefix
        # also serves "sessions of a user" across courses.
        IndexModel([("userId", 1), ("courseId", 1), ("startedAt", 1)], name="user_course_started"),
        # "sessions of a course in a time range"
        IndexModel([("courseId", 1), ("startedAt", 1)], name="course_started"),
        # "sessions still open" (endedAt is null), and those of one process
        IndexModel([("endedAt", 1), ("processId", 1)], name="open_by_process"),
    ],
    LEASES: [IndexModel([("processId", 1)], name="process")],
    TAKEOVERS: [IndexModel([("processId", 1)], name="process")],
    PROCESSES: [IndexModel([("expiresAt", 1)], name="expires")],
}


def to_date(seconds: float) -> DatetimeMS:
    """A server time as a BSON date (UTC, rounded to the millisecond)."""
    return DatetimeMS(round(seconds * 1000))


def from_date(value: Any) -> float:
    return int(value) / 1000


def utc_day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def document_from_record(r: SessionRecord, process_id: str) -> dict:
    """The ``study_sessions`` document of a record saved by process ``process_id``."""
    return {
        "_id": r.session_id,
        "userId": r.user_id,
        "courseId": r.course_id,
        "startedAt": to_date(r.started_at),
        "creditedUntil": to_date(r.credited_until),
        "endedAt": None if r.ended_at is None else to_date(r.ended_at),
        # The same instants unrounded (BSON dates keep milliseconds), so
        # the service reads back exactly the floats it wrote.
        "exact": {"startedAt": r.started_at, "creditedUntil": r.credited_until, "endedAt": r.ended_at},
        "day": utc_day(r.started_at),
        "seconds": float(r.seconds),
        "heartbeats": r.heartbeats,
        "endReason": r.end_reason,
        "remoteAddr": r.remote_addr,
        "userAgent": r.user_agent,
        "lastClientTime": r.last_client_time,
        "rev": r.rev,
        "processId": process_id,
    }


def record_from_document(d: dict) -> SessionRecord:
    """The study record a ``study_sessions`` document holds, its instants exact."""
    exact = d.get("exact") or {}

    def instant(name: str) -> float | None:
        if d.get(name) is None:
            return None
        value = exact.get(name)
        return float(value) if value is not None else from_date(d[name])

    return SessionRecord(
        session_id=d["_id"],
        user_id=d["userId"],
        course_id=d["courseId"],
        started_at=instant("startedAt"),  # type: ignore[arg-type]
        credited_until=instant("creditedUntil"),  # type: ignore[arg-type]
        seconds=float(d["seconds"]),
        heartbeats=int(d["heartbeats"]),
        rev=int(d["rev"]),
        ended_at=instant("endedAt"),
        end_reason=d.get("endReason"),
        remote_addr=d.get("remoteAddr"),
        user_agent=d.get("userAgent"),
        last_client_time=d.get("lastClientTime"),
    )

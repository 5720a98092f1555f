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
#: One document per (user, course), kept for good: the running total of its
#: sessions' credit (``seconds``), the sessions not yet added to it (``open``)
#: and, while a session holds it, the lease (``sessionId``, ``processId``, ``since``).
LEASES = "study_leases"
TAKEOVERS = "study_takeovers"
PROCESSES = "study_processes"
#: ``--overlap-policy=one-course`` across processes: one document per learner (storage/mongodb/learners.py).
LEARNER_CLOCKS = "study_learner_clock"
#: Which ``--overlap-policy`` recorded which time: ``{_id: <from, seconds>, at, policy}`` (reports).
POLICY_LOG = "study_policy_log"
#: ``{_id: "schema", version}``: which schema the database holds (upgrades, store.py).
META = "study_meta"
SCHEMA_VERSION = 2

#: The lease fields of a ``study_leases`` document, unset when the lease is released.
LEASE_FIELDS = ("sessionId", "processId", "since")

#: The shard key of each collection on a sharded cluster (docs/storage.md,
#: "Sharding"); every hot-path update and delete filters on these fields.
SHARD_KEYS: dict[str, dict] = {
    SESSIONS: {"userId": "hashed"},
    LEASES: {"_id": "hashed"},
    LEARNER_CLOCKS: {"_id": "hashed"},
}

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
    # leases held by one process (released at its end, freed when it dies)
    LEASES: [IndexModel([("processId", 1)], name="process")],
    TAKEOVERS: [IndexModel([("processId", 1)], name="process")],
    PROCESSES: [IndexModel([("expiresAt", 1)], name="expires")],
}


#: The TTL index that has the server delete ended sessions itself
#: (``--keep-sessions-days``; docs/storage.md, "Growth"). Open sessions have
#: a null ``endedAt``, which a TTL index ignores.
TTL_INDEX = "ended_ttl"
TTL_KEY = {"endedAt": 1}


def retention_step(index: dict | None, expire_after: int) -> str:
    """What brings the TTL index to ``expire_after`` seconds (0: no TTL index).

    ``index`` is the ``study_sessions`` index on ``{endedAt: 1}`` as
    ``listIndexes`` shows it (None: there is none). Returns ``"keep"`` (it is
    right as it is), ``"create"``, ``"change"`` (its ``expireAfterSeconds``:
    ``collMod``), ``"drop"`` (keep everything again) or ``"none"``.
    """
    current = None if index is None else index.get("expireAfterSeconds")
    if not expire_after:
        return "none" if current is None else "drop"
    if index is None:
        return "create"
    return "keep" if current == expire_after else "change"


def to_date(seconds: float) -> DatetimeMS:
    """A server time as a BSON date (UTC, rounded to the millisecond)."""
    return DatetimeMS(round(seconds * 1000))


def from_date(value: Any) -> float:
    return int(value) / 1000


def utc_day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def lease_key(user_id: str, course_id: str) -> str:
    """The ``_id`` of a (user, course)'s ``study_leases`` document."""
    # Ids cannot contain "/" (tracking.protocol.ID_PATTERN): the key is unambiguous.
    return f"{user_id}/{course_id}"


def session_filter(r: SessionRecord) -> dict:
    """The filter of a hot-path write of a record's session: its shard key (userId) and ``_id``."""
    return {"userId": r.user_id, "_id": r.session_id}


def checkpoint_update(r: SessionRecord) -> dict:
    """The ``$set`` of a checkpoint or final snapshot: only the fields that change after the opening."""
    changed = {
        "creditedUntil": to_date(r.credited_until),
        "exact.creditedUntil": r.credited_until,
        "seconds": float(r.seconds),
        "heartbeats": r.heartbeats,
        "lastClientTime": r.last_client_time,
        "rev": r.rev,
    }
    if r.ended_at is not None:
        changed["endedAt"] = to_date(r.ended_at)
        changed["exact.endedAt"] = r.ended_at
        changed["endReason"] = r.end_reason
    return {"$set": changed}


def fold(user_id: str, course_id: str, session_id: str, seconds: float, *, release: bool = False) -> tuple:
    """The (filter, update) that adds a session's credit to its running total, once.

    ``open.<session>`` is set when the session is claimed and unset by the
    same statement that adds its credit: a statement that finds it gone has
    nothing to add, so retries, recovery and takeovers never add it twice.
    With ``release``, only while the session still holds the lease, which the
    statement releases too.
    """
    query: dict = {"_id": lease_key(user_id, course_id), f"open.{session_id}": {"$exists": True}}
    unset = {f"open.{session_id}": ""}
    if release:
        query["sessionId"] = session_id
        unset.update(dict.fromkeys(LEASE_FIELDS, ""))
    return query, {"$inc": {"seconds": float(seconds)}, "$unset": unset}


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

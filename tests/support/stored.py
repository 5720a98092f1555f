"""The study records as they are in the database, read straight from it: what a test checks a store wrote.

Production code has no "list every record" call (reports read pages of
them); tests read the table or collection themselves and map each row or
document with the store's own schema function, so what they see is what the
store would hand back.
"""

from __future__ import annotations

import sqlite3

from storage.mongodb.schema import SESSIONS, record_from_document
from storage.mongodb.store import MongoStore
from storage.sqlite.schema import COLUMNS, record_from_row
from storage.sqlite.store import SQLiteStore, path_from_url
from tracking.session import SessionRecord


async def study_records(
    store, *, user_id: str | None = None, course_id: str | None = None
) -> list[SessionRecord]:
    """The records in ``store`` (open, or a ``--store`` URL), of one user and/or course, oldest first."""
    store = getattr(store, "store", store)  # a FaultyStore wraps the real one
    if isinstance(store, str):
        if store.startswith("sqlite:"):
            return _sqlite_records(path_from_url(store), user_id, course_id)
        mongo = MongoStore(store)
        await mongo.open()
        try:
            return await _mongo_records(mongo.db, user_id, course_id)
        finally:
            await mongo.close()
    if isinstance(store, SQLiteStore):
        return _sqlite_records(store.path, user_id, course_id)
    if isinstance(store, MongoStore):
        return await _mongo_records(store.db, user_id, course_id)
    raise TypeError(f"no way to read the records of a {type(store).__name__}")


def _sqlite_records(path: str, user_id: str | None, course_id: str | None) -> list[SessionRecord]:
    clauses, params = [], []
    if user_id is not None:
        clauses.append("user_id = ?")
        params.append(user_id)
    if course_id is not None:
        clauses.append("course_id = ?")
        params.append(course_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM study_sessions {where} ORDER BY started_at, session_id",
            params,
        ).fetchall()
    finally:
        conn.close()
    return [record_from_row(row) for row in rows]


async def _mongo_records(db, user_id: str | None, course_id: str | None) -> list[SessionRecord]:
    query: dict[str, str] = {}
    if user_id is not None:
        query["userId"] = user_id
    if course_id is not None:
        query["courseId"] = course_id
    cursor = db[SESSIONS].find(query).sort([("startedAt", 1), ("_id", 1)])
    return [record_from_document(d) async for d in cursor]


def live_sessions(tracker, user_id: str, course_id: str | None = None) -> int:
    """How many live sessions ``user_id`` has in ``tracker`` (in ``course_id``, or across courses)."""
    return sum(1 for s in tracker if s.user_id == user_id and course_id in (None, s.course_id))


def live_session(tracker, user_id: str, course_id: str):
    """The live session of (``user_id``, ``course_id``) in ``tracker``, or None."""
    return next((s for s in tracker if s.user_id == user_id and s.course_id == course_id), None)

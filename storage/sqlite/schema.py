"""The SQLite schema of the study records, shared by the store and its report queries.

docs/storage.md documents the table and its indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracking.session import SessionRecord

#: The columns of ``study_sessions``, one per :class:`SessionRecord` field, in the
#: order the store writes them and the queries select them.
COLUMNS = (
    "session_id",
    "user_id",
    "course_id",
    "started_at",
    "credited_until",
    "seconds",
    "heartbeats",
    "rev",
    "ended_at",
    "end_reason",
    "remote_addr",
    "user_agent",
    "last_client_time",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS study_sessions (
    session_id       TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    course_id        TEXT NOT NULL,
    started_at       REAL NOT NULL,     -- server time, seconds since the epoch (UTC)
    credited_until   REAL NOT NULL,     -- credit has been given up to this instant
    seconds          REAL NOT NULL,     -- credit of this session, fractions included
    heartbeats       INTEGER NOT NULL,  -- accepted heartbeats
    rev              INTEGER NOT NULL,  -- snapshot revision: higher wins
    ended_at         REAL,              -- NULL while the session is open
    end_reason       TEXT,              -- NULL while open; see docs/protocol.md
    remote_addr      TEXT,
    user_agent       TEXT,
    last_client_time TEXT               -- the client's last heartbeat timestamp, as sent
);
CREATE INDEX IF NOT EXISTS study_sessions_user_course
    ON study_sessions (user_id, course_id, started_at);
CREATE INDEX IF NOT EXISTS study_sessions_course_started
    ON study_sessions (course_id, started_at);
CREATE INDEX IF NOT EXISTS study_sessions_open
    ON study_sessions (ended_at) WHERE ended_at IS NULL;
-- The running total of each (user, course): kept by the triggers in the
-- transaction of every session write, so an opening reads one row.
CREATE TABLE IF NOT EXISTS study_totals (
    user_id   TEXT NOT NULL,
    course_id TEXT NOT NULL,
    seconds   REAL NOT NULL,
    PRIMARY KEY (user_id, course_id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS study_totals_insert AFTER INSERT ON study_sessions BEGIN
    INSERT INTO study_totals (user_id, course_id, seconds) VALUES (NEW.user_id, NEW.course_id, NEW.seconds)
        ON CONFLICT (user_id, course_id) DO UPDATE SET seconds = seconds + excluded.seconds;
END;
CREATE TRIGGER IF NOT EXISTS study_totals_update AFTER UPDATE OF seconds ON study_sessions BEGIN
    UPDATE study_totals SET seconds = seconds + NEW.seconds - OLD.seconds
        WHERE user_id = NEW.user_id AND course_id = NEW.course_id;
END;
"""

#: ``PRAGMA user_version`` of a database with ``study_totals`` built (0: written before it existed).
SCHEMA_VERSION = 2

#: Builds the running totals of a database written before they existed (once, see store.py).
BUILD_TOTALS = """
DELETE FROM study_totals;
INSERT INTO study_totals (user_id, course_id, seconds)
    SELECT user_id, course_id, SUM(seconds) FROM study_sessions GROUP BY user_id, course_id;
"""


def record_from_row(row: Sequence) -> SessionRecord:
    """The study record of a row selected as ``SELECT <COLUMNS> FROM study_sessions``."""
    return SessionRecord(**dict(zip(COLUMNS, row, strict=True)))

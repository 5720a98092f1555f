"""The xAPI outbox in the SQLite database file: the table ``xapi_outbox``.

Its own connection on its own thread (WAL mode lets it write next to the
store's connection; SQLite serialises the two writers, waiting up to the
busy timeout). Created on first use; a database without forwarding has no
such table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..base import StoreUnavailable
from ..outbox import Entry, Outbox, OutboxStats
from .store import run_on

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS xapi_outbox (
    session_id      TEXT PRIMARY KEY,
    rev             INTEGER NOT NULL,
    statement       TEXT NOT NULL,
    enqueued_at     REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    delivered_at    REAL,
    failed_at       REAL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS xapi_outbox_due ON xapi_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS xapi_outbox_failed ON xapi_outbox (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS xapi_outbox_delivered ON xapi_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
"""

_ENQUEUE = """
INSERT INTO xapi_outbox (session_id, rev, statement, enqueued_at) VALUES (?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET rev = excluded.rev, statement = excluded.statement
WHERE excluded.rev > xapi_outbox.rev AND xapi_outbox.delivered_at IS NULL AND xapi_outbox.failed_at IS NULL
"""
_UNDELIVERED = "delivered_at IS NULL AND failed_at IS NULL"


class SQLiteOutbox(Outbox):
    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-outbox")

        def connect() -> None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            self._conn = conn

        await self._run(connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def enqueue(self, entries: Sequence[Entry]) -> None:
        rows = [(e.session_id, e.rev, e.statement, e.enqueued_at) for e in entries]

        def write() -> None:
            with self._db:
                self._db.executemany(_ENQUEUE, rows)

        await self._run(write)

    async def claim(self, now: float, limit: int, lease: float) -> list[Entry]:
        def take() -> list[Entry]:
            with self._db:
                rows = self._db.execute(
                    "SELECT session_id, rev, statement, enqueued_at, attempts, next_attempt_at"
                    f" FROM xapi_outbox WHERE {_UNDELIVERED} AND next_attempt_at <= ?"
                    " ORDER BY next_attempt_at, enqueued_at LIMIT ?",
                    (now, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE xapi_outbox SET next_attempt_at = ? WHERE session_id = ?",
                    [(now + lease, row[0]) for row in rows],
                )
            return [Entry(*row) for row in rows]

        return await self._run(take)

    async def delivered(self, session_id: str, now: float) -> None:
        await self._update("delivered_at = ?, last_error = NULL", (now,), session_id)

    async def retry(self, session_id: str, attempts: int, at: float, error: str) -> None:
        await self._update(
            "attempts = ?, next_attempt_at = ?, last_error = ?", (attempts, at, error), session_id
        )

    async def fail(self, session_id: str, now: float, error: str) -> None:
        await self._update("failed_at = ?, last_error = ?", (now, error), session_id)

    async def stats(self) -> OutboxStats:
        def read() -> OutboxStats:
            waiting, oldest = self._db.execute(
                f"SELECT COUNT(*), MIN(enqueued_at) FROM xapi_outbox WHERE {_UNDELIVERED}"
            ).fetchone()
            (failed,) = self._db.execute(
                "SELECT COUNT(*) FROM xapi_outbox WHERE failed_at IS NOT NULL"
            ).fetchone()
            return OutboxStats(waiting, oldest, failed)

        return await self._run(read)

    async def purge(self, before: float) -> int:
        def delete() -> int:
            with self._db:
                return self._db.execute("DELETE FROM xapi_outbox WHERE delivered_at < ?", (before,)).rowcount

        return await self._run(delete)

    async def _update(self, assignments: str, values: tuple, session_id: str) -> None:
        # ``assignments`` is one of this module's constant clauses; values are bound.
        def write() -> None:
            with self._db:
                self._db.execute(
                    f"UPDATE xapi_outbox SET {assignments} WHERE session_id = ?", (*values, session_id)
                )

        await self._run(write)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite outbox is not open")
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        return await run_on(self._executor, fn, "the SQLite outbox")

"""Report queries on the SQLite store, through a read-only connection of their own.

The server's writer thread keeps its connection; reports run on a second
thread with a ``mode=ro`` connection. The database is in WAL mode, so a long
report neither blocks nor is blocked by checkpoints being written. Query
plans (``EXPLAIN QUERY PLAN``, checked in tests/test_reports.py): the
course reports search ``study_sessions_course_started`` by ``course_id``,
the learner reports ``study_sessions_user_course`` by ``user_id``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from reports.params import Window
from reports.source import GroupBy, GroupSum, ReportSource, Scope, Span
from tracking.session import SessionRecord

from ..base import StoreUnavailable
from . import policylog
from .schema import COLUMNS, record_from_row

T = TypeVar("T")

_GROUP_COLUMN = {"user_id": "user_id", "course_id": "course_id"}  # never from input
_SPAN = "user_id, course_id, started_at, credited_until, seconds, ended_at IS NULL"


def scope_clauses(scope: Scope) -> tuple[list[str], list]:
    clauses, params = [], []
    if scope.user_id is not None:
        clauses.append("user_id = ?")
        params.append(scope.user_id)
    if scope.course_id is not None:
        clauses.append("course_id = ?")
        params.append(scope.course_id)
    return clauses, params


def in_window(window: Window) -> tuple[list[str], list]:
    """SQL for :func:`reports.split.in_window`: overlaps the range, or starts in it."""
    clauses, params = [], []
    if window.bounded_end:
        clauses.append("started_at < ?")
        params.append(window.end)
    if window.bounded_start:
        clauses.append("(credited_until > ? OR started_at >= ?)")
        params += [window.start, window.start]
    return clauses, params


def contained(window: Window) -> tuple[list[str], list]:
    clauses, params = in_window(window)
    if window.bounded_start:
        clauses.append("started_at >= ?")
        params.append(window.start)
    if window.bounded_end:
        clauses.append("credited_until <= ?")
        params.append(window.end)
    return clauses, params


def crossing(window: Window) -> tuple[list[str], list] | None:
    clauses, params = in_window(window)
    edges, edge_params = [], []
    if window.bounded_start:
        edges.append("started_at < ?")
        edge_params.append(window.start)
    if window.bounded_end:
        edges.append("credited_until > ?")
        edge_params.append(window.end)
    if not edges:
        return None
    clauses.append(f"({' OR '.join(edges)})")
    return clauses, params + edge_params


def where(*parts: tuple[list[str], list]) -> tuple[str, tuple]:
    clauses = [c for part in parts for c in part[0]]
    params = [p for part in parts for p in part[1]]
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


class SQLiteReports(ReportSource):
    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reports")
        self._conn: sqlite3.Connection | None = None

    async def contained(self, scope: Scope, window: Window, by: GroupBy) -> list[GroupSum]:
        column = _GROUP_COLUMN[by]
        clause, params = where(scope_clauses(scope), contained(window))
        # CAST(seconds * 1e6 + 0.5 AS INTEGER) per session is
        # reports.split.micros() (credit is never negative): integer sums,
        # exact whatever order the rows are added in. (ROUND() is 4x slower.)
        sql = (
            f"SELECT {column}, SUM(CAST(seconds * 1000000 + 0.5 AS INTEGER)), COUNT(*),"
            f" MIN(started_at), MAX(credited_until), MAX(ended_at IS NULL)"
            f" FROM study_sessions {clause} GROUP BY {column}"
        )
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [GroupSum(k, int(m), n, first, last, bool(o)) for k, m, n, first, last, o in rows]

    async def learners(self, scope: Scope, window: Window) -> dict[str, int]:
        clause, params = where(scope_clauses(scope), in_window(window))
        sql = f"SELECT course_id, COUNT(DISTINCT user_id) FROM study_sessions {clause} GROUP BY course_id"
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return {course: int(n) for course, n in rows}

    async def crossing(self, scope: Scope, window: Window) -> list[Span]:
        edges = crossing(window)
        if edges is None:
            return []
        clause, params = where(scope_clauses(scope), edges)
        sql = f"SELECT {_SPAN} FROM study_sessions {clause}"
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [Span(u, c, s, e, sec, bool(o)) for u, c, s, e, sec, o in rows]

    async def spans(self, scope: Scope, window: Window, batch: int = 10_000) -> AsyncIterator[list[Span]]:
        clause, params = where(scope_clauses(scope), in_window(window))
        sql = f"SELECT {_SPAN} FROM study_sessions {clause}"
        cursor = await self._run(lambda: self._db.execute(sql, params))
        try:
            while True:
                rows = await self._run(lambda: cursor.fetchmany(batch))
                if not rows:
                    return
                yield [Span(u, c, s, e, sec, bool(o)) for u, c, s, e, sec, o in rows]
        finally:
            await self._run(cursor.close)

    async def records(self, scope: Scope, window: Window, limit: int, offset: int) -> list[SessionRecord]:
        clause, params = where(scope_clauses(scope), in_window(window))
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM study_sessions {clause}"
            " ORDER BY started_at, session_id LIMIT ? OFFSET ?"
        )
        rows = await self._run(lambda: self._db.execute(sql, (*params, limit, offset)).fetchall())
        return [record_from_row(row) for row in rows]

    async def record_batches(
        self, scope: Scope, window: Window, offset: int = 0, batch: int = 1000
    ) -> AsyncIterator[list[SessionRecord]]:
        # One cursor for the whole export: no OFFSET re-scans as the file grows.
        clause, params = where(scope_clauses(scope), in_window(window))
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM study_sessions {clause}"
            " ORDER BY started_at, session_id LIMIT -1 OFFSET ?"
        )
        cursor = await self._run(lambda: self._db.execute(sql, (*params, offset)))
        try:
            while True:
                rows = await self._run(lambda: cursor.fetchmany(batch))
                if not rows:
                    return
                yield [record_from_row(row) for row in rows]
        finally:
            await self._run(cursor.close)

    async def explain(self, sql_kind: str, scope: Scope, window: Window) -> list[str]:
        """The query plan of a report query (for tests and docs)."""
        if sql_kind == "contained":
            clause, params = where(scope_clauses(scope), contained(window))
            sql = f"SELECT user_id, SUM(seconds) FROM study_sessions {clause} GROUP BY user_id"
        else:
            clause, params = where(scope_clauses(scope), in_window(window))
            sql = f"SELECT {_SPAN} FROM study_sessions {clause}"
        rows = await self._run(lambda: self._db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        return [row[-1] for row in rows]

    async def policies(self) -> list[tuple[float, str]]:
        return await self._run(lambda: policylog.read(self._db))

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not os.path.exists(self.path):
                raise StoreUnavailable(f"no SQLite database at {self.path}")
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error: {exc}") from exc

"""The embedded store: study records in one SQLite file.

SQLite calls block, so they run on one dedicated thread that owns the
connection; the IOLoop only awaits their results. The database is in WAL
mode, so readers (a reporting query in the ``sqlite3`` shell) do not block
the server's writes, and writes do not block readers.

One read is the exception: a learner's running total, read at every
opening (:meth:`SQLiteStore.total_seconds_now`). It is a primary-key lookup
of one row that takes microseconds, far less than handing it to the store's
thread and back, so it runs on the IOLoop's thread, on a read-only
connection of its own that never waits for a lock (docs/storage.md,
"Reading a total at an opening").

Only one server process may use a database file: a second one would close
the first one's open sessions as "left by a crash". An exclusive ``flock``
on ``<file>.lock`` enforces it; tools that only read next to a running
server (reports, tests) open the store with ``exclusive=False``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import operator
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from tracking.session import EndReason, SessionRecord

from ..base import Store, StoreError, StoreUnavailable
from .schema import BUILD_TOTALS, COLUMNS, SCHEMA, SCHEMA_VERSION, record_from_row

log = logging.getLogger("study_time.store")

_TOTAL = "SELECT seconds FROM study_totals WHERE user_id = ? AND course_id = ?"
#: A record's row, its fields in the order of COLUMNS.
_ROW = operator.attrgetter(*COLUMNS)

#: The database and the files SQLite and this store keep next to it. They
#: hold learners' addresses and user agents: owner-only, whatever the umask.
FILE_SUFFIXES = ("", "-wal", "-shm", ".lock")
FILE_MODE = 0o600

T = TypeVar("T")


async def run_on(executor: ThreadPoolExecutor | None, fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on the database's own thread (``executor``; None: ``what`` is not open).

    SQLite's errors become :class:`StoreUnavailable`, as every store's do.
    """
    if executor is None:
        raise StoreUnavailable(f"{what} is not open")
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite error: {exc}") from exc


# Built from the constant column list (schema.py), never from input.
_UPSERT = f"""
INSERT INTO study_sessions ({", ".join(COLUMNS)})
VALUES ({", ".join("?" for _ in COLUMNS)})
ON CONFLICT (session_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "session_id")}
WHERE excluded.rev > study_sessions.rev
"""


#: How much lower the store's thread runs than the IOLoop's (added to its nice value, Linux only).
STORE_THREAD_NICE = 10


def give_way_to_the_ioloop() -> None:
    """Run the calling thread (the store's) at a lower CPU priority than the IOLoop's.

    A checkpoint's SQLite work takes about 12 µs of CPU a row. Where the
    store's thread and the IOLoop share a core (one core per process), the
    kernel otherwise gives them turns, and heartbeats wait for the store's:
    at 19,000 connections the IOLoop stalled for about half of every
    checkpoint (docs/performance.md, "checkpoint pauses"). At nice +10 the
    store's thread still gets the core whenever the IOLoop is idle, and about
    a tenth of it when the IOLoop never is. Linux sets a nice value per thread
    (``setpriority`` on the thread's id); elsewhere that id is not a process
    id, so nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:  # relative to the priority it was started with (the IOLoop's thread's)
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + STORE_THREAD_NICE)
        )
    except OSError as exc:  # a sandbox that forbids it: run at the default priority
        log.warning("could not lower the SQLite store thread's CPU priority: %s", exc)


def path_from_url(url: str) -> str:
    """The file of ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"invalid SQLite store URL {url!r}: expected sqlite:///PATH")
    return url[len(prefix) :]


class SQLiteStore(Store):
    """Study records in a SQLite database file."""

    # A transaction holds the GIL on the store's thread while it binds rows,
    # and heartbeats wait meanwhile: a checkpoint is written in slices of this
    # many (the latency this bought is in docs/performance.md).
    save_slice = 1000

    def __init__(self, path: str, *, exclusive: bool = True) -> None:
        self.path = path
        self.exclusive = exclusive
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # The IOLoop's own read-only connection for totals (None: not in WAL mode, or closed).
        self._reader: sqlite3.Connection | None = None
        self._wal = False
        self._lock_fd: int | None = None
        #: Running totals built by the upgrade at the last :meth:`open` (docs/storage.md, "SQLite").
        self.upgraded = 0

    async def open(self) -> None:
        self._make_files_owner_only()
        if self.exclusive:
            self._take_file_lock()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite", initializer=give_way_to_the_ioloop
        )
        try:
            await self._run(self._connect)
            # After _connect: the schema exists and any upgrade is committed.
            self._reader = self._open_reader() if self._wal else None
        except (StoreUnavailable, sqlite3.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._executor is not None:
            if self._conn is not None:
                await self._run(self._conn.close)
                self._conn = None
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def ping(self) -> None:
        await self._run(lambda: self._db.execute("SELECT 1").fetchone())

    async def save(self, records: Sequence[SessionRecord]) -> None:
        def write() -> None:
            # Built on the store's thread, not the IOLoop: building a large
            # checkpoint's rows there stalled heartbeats every flush.
            nonlocal records
            # (attrgetter: in C, a fifth of the time a generator per row took, and
            # this thread holds the GIL while it runs, delaying heartbeats.)
            rows = list(map(_ROW, records))
            # Let go of the records before the IOLoop is told the write is done.
            # The executor's work item keeps this closure until the store's thread
            # next gets the GIL, which on a busy machine is after the writer has
            # taken the next slice: two slices of snapshots alive instead of one.
            records = ()
            with self._db:
                self._db.executemany(_UPSERT, rows)

        await self._run(write)

    async def total_seconds(self, user_id: str, course_id: str) -> float:
        def read() -> float:
            row = self._db.execute(_TOTAL, (user_id, course_id)).fetchone()
            return float(row[0]) if row else 0.0

        return await self._run(read)

    def total_seconds_now(self, user_id: str, course_id: str) -> float | None:
        """The running total, read on the calling thread (the IOLoop's) without waiting, or None.

        The reader connection never waits for a lock (``busy_timeout`` 0): in
        WAL mode a write transaction on the store's thread does not block it
        (it reads the last committed total), and anything that would (a
        database that is not in WAL mode, WAL recovery after a crash, a
        closed store) returns None at once, and the caller awaits
        :meth:`total_seconds` on the store's thread instead.
        """
        reader = self._reader
        if reader is None:
            return None
        try:
            row = reader.execute(_TOTAL, (user_id, course_id)).fetchone()
        except sqlite3.Error:
            return None
        return float(row[0]) if row else 0.0

    async def expire(self, ended_before: float) -> int:
        def delete() -> int:
            with self._db:  # no trigger on delete: the running totals stay
                return self._db.execute(
                    "DELETE FROM study_sessions WHERE ended_at IS NOT NULL AND ended_at < ?", (ended_before,)
                ).rowcount

        return await self._run(delete)

    async def recover(self, now: float) -> list[SessionRecord]:
        if not self.exclusive:
            raise StoreError("only the server that holds the SQLite file may recover its sessions")

        # The file lock guarantees no other live process owns open sessions
        # here, so every open session was left by a crash.
        def close_orphans() -> list[SessionRecord]:
            with self._db:
                orphans = self._select("WHERE ended_at IS NULL", ())
                self._db.execute(
                    "UPDATE study_sessions SET ended_at = credited_until, end_reason = ?,"
                    " rev = rev + 1 WHERE ended_at IS NULL",
                    (EndReason.SERVER_LOST.value,),
                )
            return [
                replace(r, ended_at=r.credited_until, end_reason=EndReason.SERVER_LOST.value, rev=r.rev + 1)
                for r in orphans
            ]

        return await self._run(close_orphans)

    # Internals: everything below runs on the store's thread, except _open_reader and _run.

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._conn

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        # WAL unless the file system cannot (then SQLite keeps the rollback
        # journal, and totals are read on this thread only: a reader there
        # would be locked out of every commit).
        self._wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        # NORMAL in WAL mode survives a process crash (only an OS crash or
        # power loss can lose the last commits), which matches the durability
        # promise: a crash loses at most one checkpoint interval.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            # Written by an earlier version (or new): build the running totals once.
            conn.executescript(f"BEGIN; {BUILD_TOTALS} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            self.upgraded = conn.execute("SELECT COUNT(*) FROM study_totals").fetchone()[0]
        self._conn = conn

    def _open_reader(self) -> sqlite3.Connection:
        """The read-only connection of :meth:`total_seconds_now` (opened and used on the IOLoop's thread)."""
        # check_same_thread=False only so that close() may run on any thread;
        # it is used on the IOLoop's alone.
        reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            reader.execute("PRAGMA busy_timeout=0")  # never wait: the caller has a slower path
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            reader.close()
            raise
        return reader

    def _select(self, where: str, params: tuple) -> list[SessionRecord]:
        # ``where`` is one of this module's constant clauses; values are bound parameters.
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM study_sessions {where} ORDER BY started_at, session_id",
            params,
        ).fetchall()
        return [record_from_row(row) for row in rows]

    def _make_files_owner_only(self) -> None:
        """Create the database file 0600 before SQLite opens it; tighten existing files.

        SQLite creates ``-wal`` and ``-shm`` with the permissions of the
        database file (and corrects them for the umask), so a database file
        created 0600 here makes every file of the store 0600. Files an older
        version (or another tool) left readable by others are tightened, with
        a warning saying so.
        """
        try:
            # A directory created here is the owner's only; an existing one is left as it is.
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            for suffix in FILE_SUFFIXES:
                path = self.path + suffix
                try:
                    mode = stat.S_IMODE(os.stat(path).st_mode)
                except FileNotFoundError:
                    continue
                if mode & 0o077:
                    os.chmod(path, FILE_MODE)
                    log.warning("%s was open to others (%o): made it owner-only (%o)", path, mode, FILE_MODE)
            # os.open's mode is filtered by the umask, which cannot add bits to 0600.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        except OSError as exc:
            raise StoreError(f"cannot use {self.path}: {exc.strerror}") from exc

    def _take_file_lock(self) -> None:
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot use {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.path} is in use by another server process; the SQLite store"
                " serves one process (use a mongodb:// store for several)"
            ) from None
        self._lock_fd = fd

    async def _run(self, fn: Callable[[], T]) -> T:
        return await run_on(self._executor, fn, "the SQLite store")

"""The store interface: the little the tracker needs from a database.

A store persists :class:`~tracking.session.SessionRecord` snapshots, one
study record per session, and keeps each learner's total per course with
them (a running total, so that opening a session reads one row or
document whatever the history: docs/storage.md). Starting, checkpointing and
finishing a session are all the same operation, :meth:`Store.save` of the
session's latest snapshot: it is an idempotent upsert keyed by
``session_id`` that never lets a snapshot with a lower ``rev`` overwrite a
higher one, so a retried or reordered write can never count twice or go
backwards.

Every store passes ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from tracking.session import SessionRecord


class StoreError(Exception):
    """A store cannot be used as configured (bad URL, locked file): a start-up error."""


class StoreUnavailable(Exception):
    """The store cannot be reached right now; the operation may succeed later."""


class Store(ABC):
    """Persistence for study records."""

    #: The most records the writer passes to one :meth:`save` (None: no limit).
    #: A store whose writes run on a thread sets it, so that the IOLoop gets
    #: the GIL between slices of a large checkpoint.
    save_slice: int | None = None

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create the schema and indexes if they are missing (idempotent)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and locks."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""

    @abstractmethod
    async def save(self, records: Sequence[SessionRecord]) -> None:
        """Upsert each record by ``session_id`` unless the stored ``rev`` is already higher."""

    @abstractmethod
    async def total_seconds(self, user_id: str, course_id: str) -> float:
        """The credit of every stored session of this user and course, fractions included."""

    def total_seconds_now(self, user_id: str, course_id: str) -> float | None:
        """:meth:`total_seconds` read at once on the calling (the IOLoop's) thread, or None.

        For a store whose total is a lookup that takes microseconds and never
        waits (SQLite: one row, docs/storage.md). None says it cannot be read
        that way now, or not at all (the default; MongoDB): the caller awaits
        :meth:`total_seconds` instead. It never raises and never blocks.
        """
        return None

    @abstractmethod
    async def expire(self, ended_before: float) -> int:
        """Delete the records of sessions that ended before this server time; return how many.

        Running totals are kept (``--keep-sessions-days``): only the
        session-level history goes.
        """

    async def retain(self, seconds: float) -> bool:
        """Have the database itself delete the records of sessions ended ``seconds`` ago (0: none).

        Called once at start with ``--keep-sessions-days``; returns whether the
        database now expires records by itself, so that nobody need call
        :meth:`expire`. A store that cannot (SQLite; MongoDB without TTL
        indexes) returns False and is expired hourly by the writer.
        """
        return False

    async def upgrade(self) -> int:
        """Bring data written by an earlier version to this schema (idempotent); return what was built."""
        return 0

    @abstractmethod
    async def recover(self, now: float) -> list[SessionRecord]:
        """Close the sessions left open by a server that is gone; return them as closed.

        Each keeps the credit of its last checkpoint, ends at its
        ``credited_until`` and gets ``end_reason`` ``server_lost``.
        """

"""The query interface reports need from a store; each backend implements it (``storage/*/reports.py``).

A report is computed in two parts so that the heavy part runs inside the
database: sessions **contained** in the range are summed there (grouped by
learner or course, one indexed aggregation), and the few sessions that
**cross** a range boundary are fetched and cut exactly by
:mod:`reports.split`. The daily breakdown streams the sessions of its range
as compact :class:`Span` rows and splits them by day in the service (neither
store can compute a local calendar day of an IANA zone in its query language
as FerretDB supports it).

Report sources use their own connections, read only: a long report never
holds up the writer of heartbeat checkpoints, and the command-line report
can read a database a running server is using.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from tracking.session import SessionRecord

from .params import Window

GroupBy = Literal["user_id", "course_id"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose sessions a report covers: one learner, one course, both, or (None, None) everyone."""

    user_id: str | None = None
    course_id: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSum:
    """The sessions of one learner or course that lie wholly inside a report's range."""

    key: str
    micros: int  # their credit, microseconds
    sessions: int
    first: float | None  # earliest started_at (None: left to ReportSource.extents)
    last: float | None  # latest credited_until
    open: bool  # one of them is still open


@dataclass(frozen=True, slots=True)
class Span:
    """The part of a study record reports need to place its credit in time."""

    user_id: str
    course_id: str
    started_at: float
    credited_until: float
    seconds: float
    open: bool


class ReportSource(ABC):
    """Read-only report queries over the study records of one store.

    Membership of a session in a range ``[start, end)`` is defined once, in
    :func:`reports.split.in_window`; every implementation must select
    exactly those sessions (``tests/test_reports.py``
    ``test_contained_and_crossing_sessions_are_exactly_the_sessions_in_range`` checks it).
    """

    @abstractmethod
    async def contained(self, scope: Scope, window: Window, by: GroupBy) -> list[GroupSum]:
        """Sums of the sessions wholly inside ``window``, one per learner or course."""

    async def extents(
        self, scope: Scope, window: Window, by: GroupBy, keys: list[str]
    ) -> dict[str, tuple[float, float]]:
        """(earliest ``started_at``, latest ``credited_until``) of the contained sessions of ``keys``.

        Only called for groups :meth:`contained` returned without them: a
        database that cannot take a minimum in a group (FerretDB 1.24 has
        only ``$sum`` and ``$count``) finds them for the rows of one page.
        """
        raise NotImplementedError

    @abstractmethod
    async def learners(self, scope: Scope, window: Window) -> dict[str, int]:
        """How many distinct learners each course has among the sessions in ``window``."""

    @abstractmethod
    async def crossing(self, scope: Scope, window: Window) -> list[Span]:
        """The sessions in ``window`` that cross one of its boundaries (empty if it has none)."""

    @abstractmethod
    def spans(self, scope: Scope, window: Window, batch: int = 10_000) -> AsyncIterator[list[Span]]:
        """Every session in ``window``, in batches."""

    @abstractmethod
    async def records(self, scope: Scope, window: Window, limit: int, offset: int) -> list[SessionRecord]:
        """One page of the study records in ``window``, by ``started_at`` then ``session_id``."""

    async def record_batches(
        self, scope: Scope, window: Window, offset: int = 0, batch: int = 1000
    ) -> AsyncIterator[list[SessionRecord]]:
        """The study records in ``window`` from ``offset`` on, in the same order, batch by batch (for CSV)."""
        while True:
            rows = await self.records(scope, window, batch, offset)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            offset += batch

    async def policies(self) -> list[tuple[float, str]]:
        """``(from, policy)`` for each change of ``--overlap-policy``, oldest first; before the first
        (and with none), the default ``each-course`` recorded the time."""
        return []

    @abstractmethod
    async def close(self) -> None:
        """Release the connection."""

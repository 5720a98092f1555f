"""The figures of each report, computed from a :class:`~reports.source.ReportSource` by :mod:`reports.split`.

Every report places credit with the same rule, so they agree: the daily
rows of a learner in a course add up to the learner's total for the course
over the same range, which for an unbounded range is what ``studyTime``
shows over the socket. Open sessions count with the credit of their last
checkpoint (at most ``--flush-interval`` old) and are marked ``open``.

Who may read them is not decided here: every request goes through
:meth:`reports.usecase.ReportDesk.answer` first.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from tracking.session import SessionRecord

from .params import Window
from .source import GroupBy, ReportSource, Scope
from .split import DayGrid, credit_in, spread_whole_seconds


@dataclass(slots=True)
class Total:
    """One learner's (or one course's) study in a range."""

    key: str
    micros: int = 0
    sessions: int = 0
    first: float = math.inf  # first studied, within the range
    last: float = -math.inf  # last studied, within the range
    open: bool = False
    # Contained sessions whose first/last times the source left to extents().
    unplaced: bool = False
    learners: int = 0  # distinct learners, for a course's total (the course list)


@dataclass(frozen=True, slots=True)
class Day:
    date: date
    micros: int
    seconds: int  # whole seconds, spread so that a column of days sums to the total's


@dataclass(frozen=True, slots=True)
class LearnerDays:
    """One learner's credit in a course on each day of a report's dates."""

    user_id: str
    micros: int
    seconds: list[int]  # whole seconds per date, summing to whole_seconds(micros)
    day_micros: list[int]  # the exact credit per date, for a dashboard to round once, where it shows it


class Reports:
    def __init__(self, source: ReportSource) -> None:
        self.source = source

    async def totals(self, scope: Scope, window: Window, by: GroupBy) -> dict[str, Total]:
        """Totals per learner or course: the database's sums, plus the exact cut of boundary sessions."""
        totals: dict[str, Total] = {}
        for group in await self.source.contained(scope, window, by):
            unplaced = group.first is None or group.last is None
            totals[group.key] = Total(
                group.key,
                group.micros,
                group.sessions,
                math.inf if group.first is None else group.first,
                -math.inf if group.last is None else group.last,
                group.open,
                unplaced,
            )
        for span in await self.source.crossing(scope, window):
            key = span.user_id if by == "user_id" else span.course_id
            total = totals.get(key)
            if total is None:
                total = totals[key] = Total(key)
            total.micros += credit_in(
                span.started_at, span.credited_until, span.seconds, window.start, window.end
            )
            total.sessions += 1
            total.first = min(total.first, max(span.started_at, window.start))
            total.last = max(total.last, min(span.credited_until, window.end))
            total.open = total.open or span.open
        return totals

    async def place(self, scope: Scope, window: Window, by: GroupBy, rows: list[Total]) -> list[Total]:
        """Fill in first/last study times the source could not compute in its aggregation."""
        keys = [t.key for t in rows if t.unplaced]
        if keys:
            extents = await self.source.extents(scope, window, by, keys)
            for total in rows:
                if total.key in extents:
                    first, last = extents[total.key]
                    total.first, total.last = min(total.first, first), max(total.last, last)
                    total.unplaced = False
        return rows

    async def learner_courses(self, user_id: str, window: Window) -> list[Total]:
        """A learner's courses, by course id."""
        scope = Scope(user_id=user_id)
        totals = await self.totals(scope, window, "course_id")
        return await self.place(scope, window, "course_id", sorted(totals.values(), key=lambda t: t.key))

    async def course_learners(
        self, course_id: str, window: Window, limit: int | None = None, offset: int = 0
    ) -> tuple[list[Total], int]:
        """One page of a course's learners, most study first, then by user id (a stable
        leaderboard order), and how many learners there are in all."""
        scope = Scope(course_id=course_id)
        totals = await self.totals(scope, window, "user_id")
        board = sorted(totals.values(), key=lambda t: (-t.micros, t.key))
        end = len(board) if limit is None else offset + limit
        return await self.place(scope, window, "user_id", board[offset:end]), len(board)

    async def courses(
        self, window: Window, covers: Callable[[str], bool], limit: int | None = None, offset: int = 0
    ) -> tuple[list[Total], int]:
        """One page of the courses ``covers`` admits, most study first, then by course id, and how
        many there are in all; each with its number of distinct learners."""
        scope = Scope()
        totals = await self.totals(scope, window, "course_id")
        board = sorted((t for t in totals.values() if covers(t.key)), key=lambda t: (-t.micros, t.key))
        end = len(board) if limit is None else offset + limit
        page = await self.place(scope, window, "course_id", board[offset:end])
        if page:
            learners = await self.source.learners(scope, window)
            for total in page:
                total.learners = learners.get(total.key, 0)
        return page, len(board)

    async def daily_learners(
        self,
        course_id: str,
        window: Window,
        dates: list[date],
        tz: ZoneInfo,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[LearnerDays], int]:
        """Every learner of a course with their credit on each of ``dates`` (the window's days in
        ``tz``), from one pass over the course's sessions in the window; ordered like
        :meth:`course_learners`. Returns one page and how many learners there are in all."""
        grid = DayGrid(tz)
        index = {d: i for i, d in enumerate(dates)}
        by_user: dict[str, list[int]] = {}
        async for batch in self.source.spans(Scope(course_id=course_id), window):
            for span in batch:
                days = by_user.get(span.user_id)
                if days is None:
                    days = by_user[span.user_id] = [0] * len(dates)
                for day, part in grid.split(
                    span.started_at, span.credited_until, span.seconds, window.start, window.end
                ):
                    days[index[day]] += part
        board = sorted(((sum(days), user) for user, days in by_user.items()), key=lambda t: (-t[0], t[1]))
        end = len(board) if limit is None else offset + limit
        page = [
            LearnerDays(user, total, spread_whole_seconds(by_user[user]), by_user[user])
            for total, user in board[offset:end]
        ]
        return page, len(board)

    async def daily(self, scope: Scope, window: Window, tz: ZoneInfo) -> list[Day]:
        """Credit per local calendar day in ``tz``, for the days that have any session."""
        grid = DayGrid(tz)
        by_day: dict[date, int] = {}
        async for batch in self.source.spans(scope, window):
            for span in batch:
                for day, part in grid.split(
                    span.started_at, span.credited_until, span.seconds, window.start, window.end
                ):
                    by_day[day] = by_day.get(day, 0) + part
        days = sorted(by_day)
        parts = [by_day[d] for d in days]
        return [Day(d, m, s) for d, m, s in zip(days, parts, spread_whole_seconds(parts), strict=True)]

    async def sessions(self, scope: Scope, window: Window, limit: int, offset: int) -> list[SessionRecord]:
        return await self.source.records(scope, window, limit, offset)

    def session_batches(
        self, scope: Scope, window: Window, offset: int = 0
    ) -> AsyncIterator[list[SessionRecord]]:
        return self.source.record_batches(scope, window, offset)

    async def close(self) -> None:
        await self.source.close()

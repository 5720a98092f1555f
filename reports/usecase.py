"""The one report use case: a request (who, what, range, zone, format) in, rows or a JSON body out.

Both the HTTP endpoints (``handlers/reports.py``) and the command line
(``reports/cli.py``) build a :class:`ReportRequest` and hand it, with the
:class:`~auth.base.Identity` of whoever asks, to :meth:`ReportDesk.answer`.
That is the only place a report is authorised (:func:`authorize`, on the
policy of :mod:`auth.access`), and the only place a report's figures are
turned into rows (:mod:`reports.rows`) and bodies (:mod:`reports.responses`),
so the endpoint and ``server.py report --format=json|csv`` answer the same
request with the same bytes.

JSON is one body (with ``asOf``, the time its figures were read, taken
after authorising and before reading). CSV and the CLI's table are
:attr:`Answer.rows`, batches of rows: the sessions report streams them from
the store batch by batch; every other report is computed whole first (one
row per course, learner or day: bounded by the courses or learners in
scope, and by ``params.MAX_DAYS`` days) and handed out in batches of
:data:`CSV_BATCH`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo

from auth.access import dashboards, may_list_courses, may_read, visible
from auth.base import ADMIN, TEACHER, Identity
from xapi.statements import StatementConfig, statement

from . import responses, rows
from .figures import Reports
from .params import Window
from .source import ReportSource, Scope

#: Rows in one batch of a report computed whole (one CSV flush).
CSV_BATCH = 1000

Kind = Literal[
    "learner-courses", "course-learners", "courses", "daily", "daily-learners", "sessions", "whoami"
]
#: What a report is read as: JSON (a body), CSV or the CLI's table (rows); xAPI statements (sessions only).
Format = Literal["json", "csv", "table", "xapi"]


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What is asked: the report (``kind``), whose data (``scope``), the range, zone and format.

    ``limit`` None is the whole list (CSV and the table only); ``dates`` are
    the calendar days of ``window`` in ``tz``, for the reports that list every
    day (``params.calendar_days``, which bounds them).
    """

    kind: Kind
    scope: Scope
    window: Window
    tz: ZoneInfo
    fmt: Format
    limit: int | None = None
    offset: int = 0
    dates: list[date] | None = None


@dataclass(slots=True)
class Answer:
    """A report's answer: ``body`` for JSON, else ``rows`` in ``columns`` (``name``: the file's)."""

    name: str
    columns: Sequence[str] = ()
    body: dict | None = None
    rows: AsyncIterator[list[dict]] | None = None


def authorize(reader: Identity, request: ReportRequest) -> None:
    """Raise ``AuthError`` unless ``reader`` may read what ``request`` covers: the one check of every report.

    A learner's course list is filtered to the courses a limited credential
    covers (``filtered``); the course list needs the teacher or admin role;
    anyone may ask who they are.
    """
    if request.kind == "whoami":
        return
    if request.kind == "courses":
        may_list_courses(reader)
        return
    scope = request.scope
    may_read(reader, scope.user_id, scope.course_id, filtered=request.kind == "learner-courses")


class ReportDesk:
    """Answers report requests from one report source.

    ``anonymous`` says every reader is the same unnamed admin (``--auth=none``);
    ``zone`` is ``--report-timezone``, for ``whoami``.
    """

    def __init__(
        self,
        source: ReportSource,
        *,
        clock: Callable[[], float],
        zone: str,
        anonymous: bool = False,
        xapi: StatementConfig | None = None,
    ) -> None:
        """``xapi`` makes the statements of ``--format=xapi`` (docs/xapi.md)."""
        self.xapi = xapi
        self.reports = Reports(source)
        self.clock = clock
        self.zone = zone
        self.anonymous = anonymous

    async def answer(self, reader: Identity, request: ReportRequest) -> Answer:
        """Authorise, then read the report: every report request, HTTP or CLI, comes through here."""
        authorize(reader, request)
        # Taken before any figure is read: what the report shows is at least this fresh.
        as_of = self.clock()
        answer = await _ANSWERS[request.kind](self, reader, request)
        if answer.body is not None:
            answer.body = responses.with_as_of(answer.body, as_of, request.tz)
        return answer

    async def close(self) -> None:
        await self.reports.close()

    async def _whoami(self, reader: Identity, request: ReportRequest) -> Answer:
        # Under --auth=none every reader is the same anonymous admin: there is
        # no user to name, and a ?userId= hint is not trusted for reports.
        body = {
            "userId": None if self.anonymous else reader.user_id,
            "roles": sorted(reader.roles),
            "courses": None if reader.courses is None else sorted(reader.courses),
            "admin": reader.has_role(ADMIN),
            "teacher": reader.has_role(TEACHER),
            "timezone": self.zone,
            "dashboards": dashboards(reader, anonymous=self.anonymous),
        }
        return Answer("whoami", body=body)

    async def _learner_courses(self, reader: Identity, request: ReportRequest) -> Answer:
        user_id, window, tz = request.scope.user_id, request.window, request.tz
        assert user_id is not None
        totals = await self.reports.learner_courses(user_id, window)
        found = [rows.learner_course(user_id, t, tz) for t in totals if visible(reader, t.key)]
        if request.fmt == "json":
            return Answer("", body=responses.learner_courses(user_id, window, tz, found))
        return Answer(f"learner-{user_id}-courses", rows.LEARNER_COURSES, rows=chunks(found))

    async def _course_learners(self, reader: Identity, request: ReportRequest) -> Answer:
        course_id, window, tz = request.scope.course_id, request.window, request.tz
        limit, offset = request.limit, request.offset
        assert course_id is not None
        board, total = await self.reports.course_learners(course_id, window, limit, offset)
        found = [rows.course_learner(offset + i + 1, course_id, t, tz) for i, t in enumerate(board)]
        if request.fmt == "json":
            return Answer(
                "", body=responses.course_learners(course_id, window, tz, found, limit, offset, total)
            )
        return Answer(f"course-{course_id}-learners", rows.COURSE_LEARNERS, rows=chunks(found))

    async def _courses(self, reader: Identity, request: ReportRequest) -> Answer:
        window, tz, limit, offset = request.window, request.tz, request.limit, request.offset
        page, total = await self.reports.courses(
            window, lambda course_id: visible(reader, course_id), limit, offset
        )
        found = [rows.course(t, tz) for t in page]
        if request.fmt == "json":
            return Answer("", body=responses.courses(window, tz, found, limit, offset, total))
        return Answer("courses", rows.COURSES, rows=chunks(found))

    async def _daily(self, reader: Identity, request: ReportRequest) -> Answer:
        scope, window, tz = request.scope, request.window, request.tz
        days = await self.reports.daily(scope, window, tz)
        found = [rows.day(d) for d in days]
        if request.fmt == "json":
            policies = responses.policy_periods(await self.reports.source.policies(), window, tz)
            return Answer("", body=responses.daily(scope, window, tz, days, found, policies))
        return Answer("daily", rows.DAILY, rows=chunks(found))

    async def _daily_learners(self, reader: Identity, request: ReportRequest) -> Answer:
        course_id, window, tz, dates = request.scope.course_id, request.window, request.tz, request.dates
        limit, offset = request.limit, request.offset
        assert course_id is not None and dates is not None
        page, total = await self.reports.daily_learners(course_id, window, dates, tz, limit, offset)
        if request.fmt == "json":
            learners = [rows.learner_days(r) for r in page]
            body = responses.daily_learners(course_id, window, tz, dates, learners, limit, offset, total)
            return Answer("", body=body)
        found = [r for learner in page for r in rows.learner_day_rows(learner, dates)]
        return Answer(f"course-{course_id}-daily-learners", rows.DAILY_LEARNERS, rows=chunks(found))

    async def _sessions(self, reader: Identity, request: ReportRequest) -> Answer:
        scope, window, tz, limit, offset = (
            request.scope,
            request.window,
            request.tz,
            request.limit,
            request.offset,
        )
        if request.fmt == "xapi":
            return Answer("statements", rows=self._statements(request))
        if request.fmt != "json":
            return Answer("sessions", rows.SESSIONS, rows=self._session_rows(request))
        assert limit is not None
        # One more than asked says whether there is a next page.
        found = await self.reports.sessions(scope, window, limit + 1, offset)
        page = [rows.session(r, tz) for r in found[:limit]]
        return Answer("", body=responses.sessions(scope, window, tz, page, limit, offset, len(found) > limit))

    async def _session_rows(self, request: ReportRequest) -> AsyncIterator[list[dict]]:
        """The sessions' rows, batch by batch as the store yields them, at most ``request.limit``.

        Stopping at the limit closes the store's stream here (``aclosing``), while the store is
        still open: left to the garbage collector, its cursor would be closed after the store,
        and fail ("Cannot operate on a closed database") on stderr.
        """
        left, tz = request.limit, request.tz
        batches = self.reports.session_batches(request.scope, request.window, request.offset)
        async with aclosing(batches) as stream:
            async for batch in stream:
                if left is not None:
                    batch, left = batch[:left], left - min(left, len(batch))
                yield [rows.session(r, tz) for r in batch]
                if left == 0:
                    return

    async def _statements(self, request: ReportRequest) -> AsyncIterator[list[dict]]:
        """The xAPI statements of the ended sessions in the range (open ones have no duration yet)."""
        if self.xapi is None:
            raise ValueError("xAPI statements need the --xapi-* settings")
        config = self.xapi
        batches = self.reports.session_batches(request.scope, request.window, request.offset)
        async with aclosing(batches) as stream:
            async for batch in stream:
                yield [statement(r, config) for r in batch if not r.is_open]


_ANSWERS = {
    "whoami": ReportDesk._whoami,
    "learner-courses": ReportDesk._learner_courses,
    "course-learners": ReportDesk._course_learners,
    "courses": ReportDesk._courses,
    "daily": ReportDesk._daily,
    "daily-learners": ReportDesk._daily_learners,
    "sessions": ReportDesk._sessions,
}


async def chunks(items: list[dict]) -> AsyncIterator[list[dict]]:
    """A report computed whole, in batches of :data:`CSV_BATCH` rows."""
    for start in range(0, len(items), CSV_BATCH):
        yield items[start : start + CSV_BATCH]

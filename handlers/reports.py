"""``/api/reports/...``: study time per learner, per course and per day, as JSON or CSV.

Thin adapters on Tornado's hooks. :meth:`ReportHandler.prepare` does what
every endpoint shares, once: the time zone, the window, the output format,
who is asking and whether they may read what the endpoint covers (its
:meth:`~ReportHandler.scope`). ``get`` then fetches the numbers from
:class:`reports.service.Reports` and writes the rows of :mod:`reports.rows`.
Every refusal is one error type, :class:`ApiError`, rendered in one place
(:meth:`ReportHandler.write_error`) as ``{"error": {"code", "parameter",
"message"}}``. CSV is written and flushed batch by batch, never built whole
in memory. Every JSON report carries ``asOf``, the server time its figures
were read. Browsers on the origins of ``--allowed-origins`` may read the
reports cross-origin (CORS, :meth:`ReportHandler.options` for preflights);
responses are gzip-compressed by the application (``compress_response``).
See docs/reports.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from tornado.web import HTTPError, RequestHandler

from auth import AuthError, Identity, auth_request
from auth.access import dashboards, may_list_courses, may_read, visible
from auth.base import ADMIN, TEACHER
from reports import params, responses, rows
from reports.params import ParameterError, Window
from reports.source import Scope
from service import Service, StoreUnavailable

from .base import ServiceHandlerMixin, listed_origin

log = logging.getLogger("study_time.reports")

#: Rows written between two flushes of a CSV response.
CSV_BATCH = 1000
#: How long a browser may keep a preflight answer (seconds).
CORS_MAX_AGE = 600


class ApiError(HTTPError):
    """A report request refused: rendered as the JSON error body by :meth:`ReportHandler.write_error`.

    An ``HTTPError`` with no log message, so Tornado logs nothing for it
    beyond the access line.
    """

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(status)
        self.code, self.message, self.parameter = code, message, parameter


class ReportHandler(ServiceHandlerMixin, RequestHandler):
    """What every report endpoint shares: parameters, authorisation, errors and output."""

    #: Whether a learner's course list drops the courses a limited credential does not cover.
    filtered = False
    #: Whether the endpoint takes ``limit`` and ``offset``.
    paged = False
    #: Whether the endpoint lists every day of its window (then a bounded one is required).
    lists_days = False

    def initialize(self, service: Service) -> None:
        self.service = service
        self.reader: Identity
        self.set_cors_headers()  # Tornado sets the default headers before the service is known

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if hasattr(self, "service"):  # again when an error replaces the response
            self.set_cors_headers()

    def set_cors_headers(self) -> None:
        """``Vary: Origin``, and ``Access-Control-Allow-Origin`` for an origin in ``--allowed-origins``.

        Errors carry them too, so a page on an allowed origin can read why it
        was refused. Never ``Access-Control-Allow-Credentials``: the reports
        take a bearer credential, not cookies, so ``*`` (when configured)
        exposes nothing a credential does not already unlock.
        """
        self.set_header("Vary", "Origin")
        origin = self.cors_origin()
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)

    def cors_origin(self) -> str | None:
        """The ``Access-Control-Allow-Origin`` for this request, or None for no CORS headers."""
        origin = self.request.headers.get("Origin")
        allowed = self.service.settings.allowed_origins
        if origin is None or allowed is None or not listed_origin(allowed, origin):
            return None
        return origin if origin.rstrip("/").lower() in allowed else "*"

    def options(self, *_: str) -> None:
        """A CORS preflight: 204 with what a cross-origin GET may send, or 403 for other origins."""
        if self.cors_origin() is None:
            raise ApiError(403, "forbidden", "this origin may not read the reports (see --allowed-origins)")
        self.set_header("Access-Control-Allow-Methods", "GET")
        self.set_header("Access-Control-Allow-Headers", "Authorization")
        self.set_header("Access-Control-Max-Age", str(CORS_MAX_AGE))
        self.set_status(204)
        self.finish()

    async def prepare(self) -> None:
        """Parse the shared parameters and check access, before ``get`` runs."""
        if self.request.method == "OPTIONS":
            return  # a preflight carries no credential and no parameters to check
        try:
            self.scope = self.read_scope()
            value = self.arg("tz")
            self.tz: ZoneInfo = params.timezone(value if value else self.service.settings.report_timezone)
            self.window: Window = params.window(self.arg("from"), self.arg("to"), self.tz)
            if self.lists_days:
                self.dates = params.calendar_days(self.window, self.tz)
            self.fmt = params.output_format(self.arg("format"), self.request.headers.get("Accept"))
            self.limit, self.offset = self.page() if self.paged else (None, 0)
        except ParameterError as exc:
            raise ApiError(400, "invalid_parameter", exc.message, exc.parameter) from None
        try:
            self.reader = await self.service.identify(auth_request(self.request))
            self.authorize()
        except AuthError as exc:
            raise ApiError(401 if exc.code == "unauthorized" else 403, exc.code, exc.reason) from None
        # Taken before any figure is read: what the report shows is at least this fresh.
        self.as_of = self.service.clock()

    def read_scope(self) -> Scope:
        """Whose data the request covers, from its path and query (``ParameterError`` if invalid)."""
        return query_scope(self)

    def authorize(self) -> None:
        """Raise ``AuthError`` unless :attr:`reader` may read what the request covers."""
        may_read(self.reader, self.scope.user_id, self.scope.course_id, filtered=self.filtered)

    def arg(self, name: str) -> str | None:
        return self.get_query_argument(name, None)

    def page(self) -> tuple[int | None, int]:
        """``limit``/``offset``; a CSV without them is the whole list."""
        limit, offset = params.page(self.arg("limit"), self.arg("offset"))
        if self.fmt == "csv" and self.arg("limit") in (None, ""):
            return None, offset
        return limit, offset

    # Errors: one type, rendered in one place.

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if self._headers_written:
            # A CSV stream already under way cannot change its status: cut it
            # off, so that the client sees an incomplete download, not a short one.
            self.request.connection.close()  # type: ignore[union-attr]
            return
        super().send_error(status_code, **kwargs)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, StoreUnavailable):
            log.warning("report %s failed: store unavailable: %s", self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.parameter is not None:
                error["parameter"] = exc.parameter
            if status_code == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="study-time"')
        elif isinstance(exc, StoreUnavailable):
            self.set_status(503)
            error = {
                "code": "store_unavailable",
                "message": "the study record store is unavailable, try again later",
            }
        elif isinstance(exc, HTTPError) and status_code < 500:
            # Whatever Tornado itself refuses (a query that is not UTF-8, ...).
            error = {"code": "bad_request", "message": exc.log_message or self._reason}
        else:  # an unexpected bug: still a JSON body, never an HTML page
            error = {"code": "internal_error", "message": "the report failed"}
        self.send_json({"error": error})

    # Output.

    def send_report(self, body: dict) -> None:
        """A JSON report: ``body`` (from :mod:`reports.responses`) with ``asOf``, the server time its
        figures were read."""
        self.send_json(responses.with_as_of(body, self.as_of, self.tz))

    def send_json(self, body: dict) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(responses.json_text(body))

    async def send_csv(self, name: str, columns: Iterable[str], batches: AsyncIterator[list[dict]]) -> None:
        """A CSV download: the header line, then each batch of rows flushed to the client as it comes."""
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}.csv"')
        self.set_header("Cache-Control", "no-store")
        self.write(rows.csv_text(columns, [], header=True))
        async for batch in batches:
            self.write(rows.csv_text(columns, batch, header=False))
            await self.flush()
        self.finish()


async def chunks(items: list[dict]) -> AsyncIterator[list[dict]]:
    for start in range(0, len(items), CSV_BATCH):
        yield items[start : start + CSV_BATCH]


def query_scope(handler: ReportHandler) -> Scope:
    """``userId`` and/or ``courseId`` from the query: at least one."""
    user_id = params.identifier(handler.arg("userId"), "userId", required=False)
    course_id = params.identifier(handler.arg("courseId"), "courseId", required=False)
    if user_id is None and course_id is None:
        raise ParameterError("userId", "give userId, courseId or both")
    return Scope(user_id, course_id)


class LearnerCoursesHandler(ReportHandler):
    """``GET /api/reports/learners/{userId}/courses``: a learner's total per course."""

    filtered = True

    def read_scope(self) -> Scope:
        return Scope(params.identifier(self.path_args[0], "userId"), None)

    async def get(self, _: str) -> None:
        user_id = self.scope.user_id
        assert user_id is not None
        totals = await self.service.reports.learner_courses(user_id, self.window)
        found = [rows.learner_course(user_id, t, self.tz) for t in totals if visible(self.reader, t.key)]
        if self.fmt == "csv":
            await self.send_csv(f"learner-{user_id}-courses", rows.LEARNER_COURSES, chunks(found))
            return
        self.send_report(responses.learner_courses(user_id, self.window, self.tz, found))


class CourseLearnersHandler(ReportHandler):
    """``GET /api/reports/courses/{courseId}/learners``: the course's leaderboard."""

    paged = True

    def read_scope(self) -> Scope:
        return Scope(None, params.identifier(self.path_args[0], "courseId"))

    async def get(self, _: str) -> None:
        course_id = self.scope.course_id
        assert course_id is not None
        limit, offset = self.limit, self.offset
        board, total = await self.service.reports.course_learners(course_id, self.window, limit, offset)
        found = [rows.course_learner(offset + i + 1, course_id, t, self.tz) for i, t in enumerate(board)]
        if self.fmt == "csv":
            await self.send_csv(f"course-{course_id}-learners", rows.COURSE_LEARNERS, chunks(found))
            return
        self.send_report(
            responses.course_learners(course_id, self.window, self.tz, found, limit, offset, total)
        )


class DailyHandler(ReportHandler):
    """``GET /api/reports/daily``: seconds per calendar day in a time zone."""

    async def get(self) -> None:
        days = await self.service.reports.daily(self.scope, self.window, self.tz)
        found = [rows.day(d) for d in days]
        if self.fmt == "csv":
            await self.send_csv("daily", rows.DAILY, chunks(found))
            return
        self.send_report(responses.daily(self.scope, self.window, self.tz, days, found))


class SessionsHandler(ReportHandler):
    """``GET /api/reports/sessions``: the study records themselves, oldest first."""

    paged = True

    async def get(self) -> None:
        scope, window, tz = self.scope, self.window, self.tz
        limit, offset = self.limit, self.offset
        reports = self.service.reports
        if self.fmt == "csv" and limit is None:

            async def batches() -> AsyncIterator[list[dict]]:
                async for batch in reports.session_batches(scope, window, offset):
                    yield [rows.session(r, tz) for r in batch]

            await self.send_csv("sessions", rows.SESSIONS, batches())
            return
        assert limit is not None
        # One more than asked says whether there is a next page.
        found = await reports.sessions(scope, window, limit + 1, offset)
        page = [rows.session(r, tz) for r in found[:limit]]
        if self.fmt == "csv":
            await self.send_csv("sessions", rows.SESSIONS, chunks(page))
            return
        self.send_report(responses.sessions(scope, window, tz, page, limit, offset, len(found) > limit))


class WhoAmIHandler(ReportHandler):
    """``GET /api/reports/whoami``: who the credential is and what it may read."""

    def read_scope(self) -> Scope:
        return Scope()

    def authorize(self) -> None:
        """Any valid credential may ask who it is."""

    async def get(self) -> None:
        reader = self.reader
        # Under --auth=none every reader is the same anonymous admin: there is
        # no user to name, and a ?userId= hint is not trusted for reports.
        anonymous = self.service.settings.auth == "none"
        self.send_report(
            {
                "userId": None if anonymous else reader.user_id,
                "roles": sorted(reader.roles),
                "courses": None if reader.courses is None else sorted(reader.courses),
                "admin": reader.has_role(ADMIN),
                "teacher": reader.has_role(TEACHER),
                "timezone": self.service.settings.report_timezone,
                "dashboards": dashboards(reader, anonymous=anonymous),
            }
        )


class CoursesHandler(ReportHandler):
    """``GET /api/reports/courses``: the courses the reader may see, with their totals."""

    paged = True

    def read_scope(self) -> Scope:
        return Scope()

    def authorize(self) -> None:
        may_list_courses(self.reader)

    async def get(self) -> None:
        limit, offset, reader = self.limit, self.offset, self.reader
        page, total = await self.service.reports.courses(
            self.window, lambda course_id: visible(reader, course_id), limit, offset
        )
        found = [rows.course(t, self.tz) for t in page]
        if self.fmt == "csv":
            await self.send_csv("courses", rows.COURSES, chunks(found))
            return
        self.send_report(responses.courses(self.window, self.tz, found, limit, offset, total))


class CourseDailyLearnersHandler(ReportHandler):
    """``GET /api/reports/courses/{courseId}/daily-learners``: every learner's seconds per day."""

    paged = True
    lists_days = True

    def read_scope(self) -> Scope:
        return Scope(None, params.identifier(self.path_args[0], "courseId"))

    async def get(self, _: str) -> None:
        course_id = self.scope.course_id
        assert course_id is not None
        limit, offset, dates = self.limit, self.offset, self.dates
        page, total = await self.service.reports.daily_learners(
            course_id, self.window, dates, self.tz, limit, offset
        )
        if self.fmt == "csv":
            found = [r for learner in page for r in rows.learner_day_rows(learner, dates)]
            await self.send_csv(f"course-{course_id}-daily-learners", rows.DAILY_LEARNERS, chunks(found))
            return
        learners = [rows.learner_days(r) for r in page]
        self.send_report(
            responses.daily_learners(course_id, self.window, self.tz, dates, learners, limit, offset, total)
        )


ROUTES = [
    (r"/api/reports/whoami", WhoAmIHandler),
    (r"/api/reports/courses", CoursesHandler),
    (r"/api/reports/courses/([^/]+)/daily-learners", CourseDailyLearnersHandler),
    (r"/api/reports/learners/([^/]+)/courses", LearnerCoursesHandler),
    (r"/api/reports/courses/([^/]+)/learners", CourseLearnersHandler),
    (r"/api/reports/daily", DailyHandler),
    (r"/api/reports/sessions", SessionsHandler),
]

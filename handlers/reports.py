"""``/api/reports/...``: study time per learner, per course and per day, as JSON or CSV.

Thin adapters on Tornado's hooks. Each endpoint reads its request (the
report, whose data, the window, time zone, format and page) into a
:class:`reports.usecase.ReportRequest`, asks the auth backend who is calling,
and hands both to :meth:`reports.usecase.ReportDesk.answer`, which authorises
and reads the report: the one path of every report, shared with
``server.py report``. Every refusal is one error type, :class:`ApiError`,
rendered in one place (:meth:`ReportHandler.write_error`) as ``{"error":
{"code", "parameter", "message"}}``. CSV is written and flushed batch by
batch as the answer yields them (the sessions report streams from the store;
the others are computed whole first, see :mod:`reports.usecase`). Every
JSON report carries ``asOf``, the server time its figures were read.
Browsers on the origins of ``--allowed-origins`` may read the reports
cross-origin (CORS, :meth:`ReportHandler.options` for preflights); responses
are gzip-compressed by the application (``compress_response``). See
docs/reports.md.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from tornado.web import HTTPError, RequestHandler

from auth import AuthError, Identity, auth_request
from reports import params, responses, rows
from reports.params import ParameterError
from reports.source import Scope
from reports.usecase import Answer, Kind, ReportRequest
from service import Service, StoreUnavailable

from .base import ServiceHandlerMixin, listed_origin
from .tornado_internals import headers_written, reason

log = logging.getLogger("study_time.reports")

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
    """What every report endpoint shares: the request, errors and output."""

    service: Service
    #: Which report the endpoint answers.
    kind: Kind
    #: Whether the endpoint takes ``limit`` and ``offset``.
    paged = False
    #: Whether the endpoint lists every day of its window (then a bounded one is required).
    lists_days = False

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_cors_headers()  # for every response, and again when an error replaces one

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

    async def get(self, *_: str) -> None:
        """Read the request, identify the caller, and send what the report desk answers."""
        try:
            request = self.report_request()
        except ParameterError as exc:
            raise ApiError(400, "invalid_parameter", exc.message, exc.parameter) from None
        try:
            reader: Identity = await self.service.identify(auth_request(self.request))
            answer = await self.service.reports.answer(reader, request)
        except AuthError as exc:
            raise ApiError(401 if exc.code == "unauthorized" else 403, exc.code, exc.reason) from None
        if answer.body is not None:
            self.send_json(answer.body)
        else:
            await self.send_csv(answer)

    def report_request(self) -> ReportRequest:
        """The request from the path and query (``ParameterError`` if a parameter is invalid)."""
        scope = self.read_scope()
        value = self._arg("tz")
        tz = params.timezone(value if value else self.service.settings.report_timezone)
        window = params.window(self._arg("from"), self._arg("to"), tz)
        dates = params.calendar_days(window, tz) if self.lists_days else None
        fmt = params.output_format(self._arg("format"), self.request.headers.get("Accept"))
        limit, offset = self._page(fmt) if self.paged else (None, 0)
        return ReportRequest(self.kind, scope, window, tz, fmt, limit, offset, dates)  # type: ignore[arg-type]

    def read_scope(self) -> Scope:
        """Whose data the request covers: ``userId`` and/or ``courseId`` from the query, at least one."""
        user_id = params.identifier(self._arg("userId"), "userId", required=False)
        course_id = params.identifier(self._arg("courseId"), "courseId", required=False)
        if user_id is None and course_id is None:
            raise ParameterError("userId", "give userId, courseId or both")
        return Scope(user_id, course_id)

    def _arg(self, name: str) -> str | None:
        return self.get_query_argument(name, None)

    def _page(self, fmt: str) -> tuple[int | None, int]:
        """``limit``/``offset``; a CSV without them is the whole list."""
        limit, offset = params.page(self._arg("limit"), self._arg("offset"))
        if fmt == "csv" and self._arg("limit") in (None, ""):
            return None, offset
        return limit, offset

    # Errors: one type, rendered in one place.

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if headers_written(self):
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
            error = {"code": "bad_request", "message": exc.log_message or reason(self)}
        else:  # an unexpected bug: still a JSON body, never an HTML page
            error = {"code": "internal_error", "message": "the report failed"}
        self.send_json({"error": error})

    # Output.

    def send_json(self, body: dict) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(responses.json_text(body))

    async def send_csv(self, answer: Answer) -> None:
        """A CSV download: the header line, then each batch of rows flushed to the client as it comes."""
        assert answer.rows is not None
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{answer.name}.csv"')
        self.set_header("Cache-Control", "no-store")
        self.write(rows.csv_text(answer.columns, [], header=True))
        async for batch in answer.rows:
            self.write(rows.csv_text(answer.columns, batch, header=False))
            await self.flush()
        self.finish()


class LearnerCoursesHandler(ReportHandler):
    """``GET /api/reports/learners/{userId}/courses``: a learner's total per course."""

    kind = "learner-courses"

    def read_scope(self) -> Scope:
        return Scope(params.identifier(self.path_args[0], "userId"), None)


class CourseLearnersHandler(ReportHandler):
    """``GET /api/reports/courses/{courseId}/learners``: the course's leaderboard."""

    kind = "course-learners"
    paged = True

    def read_scope(self) -> Scope:
        return Scope(None, params.identifier(self.path_args[0], "courseId"))


class DailyHandler(ReportHandler):
    """``GET /api/reports/daily``: seconds per calendar day in a time zone."""

    kind = "daily"


class SessionsHandler(ReportHandler):
    """``GET /api/reports/sessions``: the study records themselves, oldest first."""

    kind = "sessions"
    paged = True


class WhoAmIHandler(ReportHandler):
    """``GET /api/reports/whoami``: who the credential is and what it may read."""

    kind = "whoami"

    def read_scope(self) -> Scope:
        return Scope()


class CoursesHandler(ReportHandler):
    """``GET /api/reports/courses``: the courses the reader may see, with their totals."""

    kind = "courses"
    paged = True

    def read_scope(self) -> Scope:
        return Scope()


class CourseDailyLearnersHandler(ReportHandler):
    """``GET /api/reports/courses/{courseId}/daily-learners``: every learner's seconds per day."""

    kind = "daily-learners"
    paged = True
    lists_days = True

    def read_scope(self) -> Scope:
        return Scope(None, params.identifier(self.path_args[0], "courseId"))


ROUTES = [
    (r"/api/reports/whoami", WhoAmIHandler),
    (r"/api/reports/courses", CoursesHandler),
    (r"/api/reports/courses/([^/]+)/daily-learners", CourseDailyLearnersHandler),
    (r"/api/reports/learners/([^/]+)/courses", LearnerCoursesHandler),
    (r"/api/reports/courses/([^/]+)/learners", CourseLearnersHandler),
    (r"/api/reports/daily", DailyHandler),
    (r"/api/reports/sessions", SessionsHandler),
]

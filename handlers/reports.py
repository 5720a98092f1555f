"""``/api/reports/...``: study time per learner, per course and per day, as JSON or CSV.

Thin adapters: parameters are parsed by :mod:`reports.params`, access is
decided by :mod:`reports.access`, the numbers come from
:class:`reports.service.Reports`, the rows from :mod:`reports.rows`. Every
refusal is a JSON ``{"error": {"code", "parameter", "message"}}`` body. CSV
is written and flushed batch by batch, never built whole in memory. See
docs/reports.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from tornado.web import HTTPError, RequestHandler

from auth.base import AuthError, auth_request
from reports import access, params, rows
from reports.params import ParameterError, Window
from reports.source import Scope
from storage.base import StoreUnavailable

from .base import ServiceHandlerMixin

if TYPE_CHECKING:
    from server import Service

log = logging.getLogger("study_time.reports")

#: Rows written between two flushes of a CSV response.
CSV_BATCH = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.parameter = status, code, message, parameter


class ReportHandler(ServiceHandlerMixin, RequestHandler):
    """What every report endpoint shares: parameters, authentication, errors and output."""

    def initialize(self, service: Service) -> None:
        self.service = service
        self.reader: Any = None

    async def get(self, *path: str) -> None:
        try:
            await self.report(*path)
        except ParameterError as exc:
            self.fail(ApiError(400, "invalid_parameter", exc.message, exc.parameter))
        except ApiError as exc:
            self.fail(exc)
        except StoreUnavailable as exc:
            log.warning("report %s failed: store unavailable: %s", self.request.path, exc)
            self.fail(
                ApiError(503, "store_unavailable", "the study record store is unavailable, try again later")
            )

    async def report(self, *path: str) -> None:
        raise NotImplementedError

    # Parameters.

    def arg(self, name: str) -> str | None:
        return self.get_query_argument(name, None)

    def tz(self) -> ZoneInfo:
        value = self.arg("tz")
        return params.timezone(value if value else self.service.settings.report_timezone)

    def window(self, tz: ZoneInfo) -> Window:
        return params.window(self.arg("from"), self.arg("to"), tz)

    def format(self) -> str:
        return params.output_format(self.arg("format"), self.request.headers.get("Accept"))

    # Authentication and access.

    async def authorize(self, user_id: str | None, course_id: str | None, *, filtered: bool = False) -> None:
        """Identify the caller with the socket's auth backend, then check access.

        ``--auth=none`` identifies every report request as an ``admin``: all readable.
        """
        try:
            self.reader = await self.service.auth.authenticate(auth_request(self.request), None)
        except AuthError as exc:
            raise ApiError(401 if exc.code == "unauthorized" else 403, exc.code, exc.reason) from None
        try:
            access.check(self.reader, user_id, course_id, filtered=filtered)
        except access.Forbidden as exc:
            raise ApiError(403, "forbidden", str(exc)) from None

    # Output.

    def fail(self, error: ApiError) -> None:
        if self._headers_written:
            # A CSV stream already under way cannot change its status: cut it off.
            self.request.connection.close()  # type: ignore[union-attr]
            return
        self.clear()
        self.set_status(error.status)
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.parameter is not None:
            body["parameter"] = error.parameter
        if error.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="study-time"')
        self.send_json({"error": body})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Whatever Tornado itself refuses (a query that is not UTF-8, ...) or
        # an unexpected bug: still a JSON body, never an HTML page.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HTTPError) and status_code < 500:
            self.send_json({"error": {"code": "bad_request", "message": exc.log_message or self._reason}})
        else:
            self.send_json({"error": {"code": "internal_error", "message": "the report failed"}})

    def send_json(self, body: dict) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, separators=(",", ":")))

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


def paged(handler: ReportHandler, fmt: str) -> tuple[int | None, int]:
    """``limit``/``offset``; a CSV without them is the whole list."""
    limit, offset = params.page(handler.arg("limit"), handler.arg("offset"))
    if fmt == "csv" and handler.arg("limit") in (None, ""):
        return None, offset
    return limit, offset


class LearnerCoursesHandler(ReportHandler):
    """``GET /api/reports/learners/{userId}/courses``: a learner's total per course."""

    async def report(self, user_id: str) -> None:  # type: ignore[override]
        user_id = params.identifier(user_id, "userId")  # type: ignore[assignment]
        tz = self.tz()
        window = self.window(tz)
        fmt = self.format()
        await self.authorize(user_id, None, filtered=True)
        totals = await self.service.reports.learner_courses(user_id, window)
        found = [rows.learner_course(user_id, t, tz) for t in totals if access.visible(self.reader, t.key)]
        if fmt == "csv":
            await self.send_csv(f"learner-{user_id}-courses", rows.LEARNER_COURSES, chunks(found))
            return
        self.send_json({"userId": user_id, **range_fields(window, tz), "courses": found})


class CourseLearnersHandler(ReportHandler):
    """``GET /api/reports/courses/{courseId}/learners``: the course's leaderboard."""

    async def report(self, course_id: str) -> None:  # type: ignore[override]
        course_id = params.identifier(course_id, "courseId")  # type: ignore[assignment]
        tz = self.tz()
        window = self.window(tz)
        fmt = self.format()
        limit, offset = paged(self, fmt)
        await self.authorize(None, course_id)
        board, total = await self.service.reports.course_learners(course_id, window, limit, offset)
        found = [rows.course_learner(offset + i + 1, course_id, t, tz) for i, t in enumerate(board)]
        end = offset + len(board)
        if fmt == "csv":
            await self.send_csv(f"course-{course_id}-learners", rows.COURSE_LEARNERS, chunks(found))
            return
        self.send_json(
            {
                "courseId": course_id,
                **range_fields(window, tz),
                "learners": found,
                "limit": limit,
                "offset": offset,
                "total": total,
                "next": end if end < total else None,
            }
        )


def scope_of(handler: ReportHandler) -> Scope:
    user_id = params.identifier(handler.arg("userId"), "userId", required=False)
    course_id = params.identifier(handler.arg("courseId"), "courseId", required=False)
    if user_id is None and course_id is None:
        raise ParameterError("userId", "give userId, courseId or both")
    return Scope(user_id, course_id)


class DailyHandler(ReportHandler):
    """``GET /api/reports/daily``: seconds per calendar day in a time zone."""

    async def report(self) -> None:  # type: ignore[override]
        scope = scope_of(self)
        tz = self.tz()
        window = self.window(tz)
        fmt = self.format()
        await self.authorize(scope.user_id, scope.course_id)
        days = await self.service.reports.daily(scope, window, tz)
        found = [rows.day(d) for d in days]
        if fmt == "csv":
            await self.send_csv("daily", rows.DAILY, chunks(found))
            return
        total = sum(d.micros for d in days)
        self.send_json(
            {
                "userId": scope.user_id,
                "courseId": scope.course_id,
                "tz": tz.key,
                **range_fields(window, tz),
                "seconds": sum(d.seconds for d in days),
                "secondsExact": total / 1_000_000,
                "days": found,
            }
        )


class SessionsHandler(ReportHandler):
    """``GET /api/reports/sessions``: the study records themselves, oldest first."""

    async def report(self) -> None:  # type: ignore[override]
        scope = scope_of(self)
        tz = self.tz()
        window = self.window(tz)
        fmt = self.format()
        limit, offset = paged(self, fmt)
        await self.authorize(scope.user_id, scope.course_id)
        reports = self.service.reports
        if fmt == "csv" and limit is None:

            async def batches() -> AsyncIterator[list[dict]]:
                async for batch in reports.session_batches(scope, window, offset):
                    yield [rows.session(r, tz) for r in batch]

            await self.send_csv("sessions", rows.SESSIONS, batches())
            return
        assert limit is not None
        # One more than asked says whether there is a next page.
        found = await reports.sessions(scope, window, limit + 1, offset)
        page = [rows.session(r, tz) for r in found[:limit]]
        if fmt == "csv":
            await self.send_csv("sessions", rows.SESSIONS, chunks(page))
            return
        self.send_json(
            {
                "userId": scope.user_id,
                "courseId": scope.course_id,
                **range_fields(window, tz),
                "sessions": page,
                "limit": limit,
                "offset": offset,
                "next": offset + limit if len(found) > limit else None,
            }
        )


def range_fields(window: Window, tz: ZoneInfo) -> dict:
    return {"from": rows.iso(window.start, tz), "to": rows.iso(window.end, tz)}


ROUTES = [
    (r"/api/reports/learners/([^/]+)/courses", LearnerCoursesHandler),
    (r"/api/reports/courses/([^/]+)/learners", CourseLearnersHandler),
    (r"/api/reports/daily", DailyHandler),
    (r"/api/reports/sessions", SessionsHandler),
]

"""``GET /api/reports/changes``: a long poll that answers when a session of a scope has ended.

The dashboards show a session within about a second of its socket closing
without asking every few seconds (docs/reports.md, "Changes"). A dashboard
sends ``since``, the ``asOf`` of the figures it shows, and the scope it
shows (``userId`` and/or ``courseId``, authorised like ``/daily``); the
server holds the request until it knows of something newer, then answers
``{"changed": true}``, or after the hold (``wait``, at most
:data:`HOLD_SECONDS`) ``{"changed": false}``. Either way the dashboard reads
its reports again and asks again from their new ``asOf``.

Two ways to learn of a change:

- **This process wrote it.** :class:`SessionEvents` hears of every ended
  session this process writes to the store (``SessionWriter.saved_listeners``),
  after the write, so a report read then has it. It keeps when each was
  written for :data:`KEEP_SECONDS`: an end written after ``since`` answers
  at once, one written while the request waits wakes it.
- **Another process wrote it** (several processes on one MongoDB database).
  Every :data:`CHECK_SECONDS` the waiting request reads the scope's sessions
  of the last minutes (ids and whether open, one small query) and answers
  when they differ from what it read when it began. A session ended on
  another process is therefore shown within CHECK_SECONDS plus its write
  (0.5 s); one written in the instant between the dashboard's reading and
  its long poll's first read is caught when the hold ends (HOLD_SECONDS).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable

from auth import AuthError, Identity, auth_request
from reports import params
from reports.params import ParameterError, Window
from reports.source import Scope
from reports.usecase import ReportRequest
from tracking.session import SessionRecord

from .reports import ApiError, ReportHandler

#: The longest a request is held (seconds); ``wait`` may ask for less.
HOLD_SECONDS = 25
#: How often a held request looks in the store for sessions ended by other processes.
CHECK_SECONDS = 5.0
#: How long this process remembers when it wrote each ended session.
KEEP_SECONDS = 120.0
#: At most this many recent sessions are compared (a busier scope is left to this process's
#: notifications and the end of the hold).
MAX_RECORDS = 1000
#: A session ended this long before ``since`` may still have reached the store after it.
SINCE_MARGIN = 2.0


def in_scope(scope: Scope, user_id: str, course_id: str) -> bool:
    return (scope.user_id is None or scope.user_id == user_id) and (
        scope.course_id is None or scope.course_id == course_id
    )


class SessionEvents:
    """The ended sessions this process has written, for the long polls waiting on them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._recent: deque[tuple[float, str, str]] = deque()  # (written at, user, course)
        self._waiters: dict[asyncio.Future[None], Scope] = {}

    def saved(self, records: Iterable[SessionRecord]) -> None:
        """Records were written to the store (a writer saved-listener): wake who waits on one ended."""
        now = self.clock()
        ended = [(r.user_id, r.course_id) for r in records if not r.is_open]
        if not ended:
            return
        self._recent.extend((now, user, course) for user, course in ended)
        while self._recent and self._recent[0][0] < now - KEEP_SECONDS:
            self._recent.popleft()
        for waiter, scope in self._waiters.items():
            if not waiter.done() and any(in_scope(scope, u, c) for u, c in ended):
                waiter.set_result(None)

    def ended_since(self, scope: Scope, since: float) -> bool:
        """Whether a session of ``scope`` was written ended at ``since`` or later (or that is unknown)."""
        if since < self.clock() - KEEP_SECONDS:
            return True  # older than what is remembered: assume so
        return any(at >= since and in_scope(scope, u, c) for at, u, c in self._recent)

    async def wait(self, scope: Scope, timeout: float, gone: asyncio.Event) -> bool:
        """Until a session of ``scope`` is written ended (True), ``timeout`` passes or ``gone`` is set."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = scope
        leaving = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait((waiter, leaving), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            del self._waiters[waiter]
        return waiter.done()


class ChangesHandler(ReportHandler):
    """``GET /api/reports/changes?since=&userId=&courseId=&wait=``: the long poll of the dashboards.

    Its reads of the store are ``sessions`` reports asked of the report desk
    (:meth:`reports.usecase.ReportDesk.answer`), so they are authorised
    where every report is, the first before anything is held.
    """

    kind = "sessions"

    def initialize(self, events: SessionEvents) -> None:
        self.events = events
        self.gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self.gone.set()  # the dashboard went away: stop waiting for it
        super().on_connection_close()

    async def get(self, *_: str) -> None:
        try:
            scope = self.read_scope()
            value = self._arg("tz")
            tz = params.timezone(value if value else self.service.settings.report_timezone)
            value = self._arg("since")
            if not value:
                raise ParameterError("since", "since is required: the asOf of the figures shown")
            since = params.instant(value, "since", tz)
            hold = params.count(
                self._arg("wait"), "wait", default=HOLD_SECONDS, minimum=0, maximum=HOLD_SECONDS
            )
        except ParameterError as exc:
            raise ApiError(400, "invalid_parameter", exc.message, exc.parameter) from None
        start = since - SINCE_MARGIN - self.service.settings.heartbeat_timeout
        recent = ReportRequest("sessions", scope, Window(start, math.inf), tz, "json", MAX_RECORDS + 1)
        try:
            reader: Identity = await self.service.identify(auth_request(self.request))
            seen = await self.recent(reader, recent)
        except AuthError as exc:
            raise ApiError(401 if exc.code == "unauthorized" else 403, exc.code, exc.reason) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        changed = self.events.ended_since(scope, since)
        while not changed and not self.gone.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            changed = await self.events.wait(scope, min(CHECK_SECONDS, left), self.gone)
            if not changed and not self.gone.is_set():
                changed = await self.recent(reader, recent) != seen
        if self.gone.is_set():
            return
        self.send_json({"userId": scope.user_id, "courseId": scope.course_id, "changed": changed})

    async def recent(self, reader: Identity, request: ReportRequest) -> frozenset[tuple[str, bool]] | None:
        """The scope's sessions that may have ended since ``since``, as (id, open); None when too many.

        A session that timed out was credited until its last heartbeat, up to
        the heartbeat timeout before it ended: ``request``'s window reaches back that far.
        """
        answer = await self.service.reports.answer(reader, request)
        assert answer.body is not None
        found = answer.body["sessions"]
        if len(found) > MAX_RECORDS:
            return None
        return frozenset((row["sessionId"], row["open"]) for row in found)

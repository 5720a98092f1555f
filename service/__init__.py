"""The study-time service: one object that builds the parts and hands each to whoever needs it.

:class:`Service` is the composition root. It reads the settings once and
builds the collaborators: the authentication backend, the store and its
write-behind and coordinator (from the ``--store`` backend), the counting
rules, the metrics, and then the pieces that use them, each with one reason
to change:

- :class:`~service.sessions.SessionCore` (``sessions``): a session opens, a
  heartbeat arrives, a session ends. It knows the store only through the
  writer and the coordinator it is given.
- :class:`~service.connections.Connections` (``connections``): open
  connections, the per-address cap, refusals.
- :class:`~service.runtime.Runtime` (``runtime``): start, shutdown, reload,
  the timers.
- :class:`~service.health.Health` (``health``): ``/readyz`` and ``/metrics``.
- :class:`~reports.usecase.ReportDesk` (``reports``): every report request.

The handlers (``handlers/``) translate WebSocket and HTTP events into calls
on those pieces and never reach into the store; ``server.py`` builds the
service and its web application, serves, and shuts down. See
docs/architecture.md.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from tornado.httpserver import HTTPServer

from auth import Authenticator, AuthRequest, Identity, build_authenticator
from metrics import Metrics
from reports.source import ReportSource
from reports.usecase import ReportDesk
from settings import Settings, SettingsError
from storage import StoreUnavailable
from storage.backends import Backend, backend_for
from storage.writer import SessionWriter
from tracking.clock import Clock, WallClock
from tracking.protocol import REFUSAL_CODES
from tracking.session import EndReason
from tracking.tracker import Tracker
from xapi.forwarder import Forwarder, basic_auth
from xapi.statements import config_from

from .connections import Connection, Connections
from .health import Health
from .runtime import CLOSE_GRACE_SECONDS, Runtime
from .sessions import SessionCore

__all__ = ["CLOSE_GRACE_SECONDS", "Connection", "Service", "StoreUnavailable"]

#: Ended sessions are written at most this long after the previous prompt write (storage/writer.py).
ENDED_WRITE_INTERVAL = 0.5


class Service:
    """The running service's parts, built from the settings.

    Tests build one in-process with short intervals and a temporary store;
    ``server.py`` builds one from the command line.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        auth: Authenticator | None = None,
        worker: int = 0,
    ) -> None:
        """``auth`` is the backend ``server.py`` built before binding the port (else built here);
        ``worker`` is this process's index under ``--processes`` (in its metrics)."""
        self.settings = settings
        # Built first: a bad auth setting is a start-up error (SettingsError) naming it.
        self.auth = auth if auth is not None else build_authenticator(settings)
        self.clock = clock or WallClock()
        backend = backend_for(settings.store)
        self.store = backend.store()
        one_course = settings.overlap_policy == "one-course"
        self.tracker = Tracker(
            settings.heartbeat_timeout,
            settings.min_heartbeat_interval,
            settings.max_sessions_per_user,
            one_course_at_a_time=one_course,
        )
        # Ended sessions are written within ENDED_WRITE_INTERVAL, not at the next
        # checkpoint, so reports show them closed at once (storage/writer.py).
        self.writer = SessionWriter(
            self.store,
            max_unsaved=settings.max_unsaved_sessions,
            ended_write_interval=ENDED_WRITE_INTERVAL,
            checkpoint_interval=settings.checkpoint_interval,
            keep_seconds=settings.keep_sessions_days * 86400,
        )
        self.coordinator = backend.coordinator(
            self.store,
            self.writer,
            heartbeat_interval=settings.heartbeat_interval,
            process_timeout=settings.process_timeout,
            one_course=one_course,
        )
        if one_course:  # rule 7 across processes (storage/mongodb/learners.py); nothing for one process
            self.tracker.credit_listener = self.coordinator.credited
        self.metrics = Metrics(
            end_reasons=[r.value for r in EndReason], refusal_codes=REFUSAL_CODES, worker=worker
        )
        self.worker = worker
        self.forwarder = self._forwarder(backend)
        self._note_policy = lambda now: backend.record_policy(self.store, settings.overlap_policy, now)
        self._assemble(backend.report_source())

    def _forwarder(self, backend: Backend) -> Forwarder | None:
        """The xAPI forwarder (docs/xapi.md), or None without ``--xapi-endpoint``."""
        settings = self.settings
        if settings.xapi_endpoint is None:
            return None
        authorization = None
        if settings.xapi_auth_file:
            try:
                with open(settings.xapi_auth_file, encoding="utf-8") as file:
                    credential = file.read().strip()
            except OSError as exc:
                raise SettingsError(f"invalid --xapi-auth-file: cannot read it ({exc.strerror})") from None
            if ":" not in credential:
                raise SettingsError("invalid --xapi-auth-file: expected one line KEY:SECRET")
            authorization = basic_auth(credential)
        config = config_from(settings)
        assert config is not None  # --xapi-home-page is required with --xapi-endpoint (settings.py)
        self.metrics.enable_xapi()
        forwarder = Forwarder(
            backend.outbox(),
            config,
            endpoint=settings.xapi_endpoint,
            authorization=authorization,
            clock=self.clock,
            timeout=settings.xapi_timeout,
            max_retry_delay=settings.xapi_max_retry_delay,
            catch_up=settings.xapi_catch_up,
            source=backend.report_source(),
            metrics=self.metrics,
        )
        self.writer.saved_listeners.append(forwarder.saved)
        return forwarder

    def _assemble(self, report_source: ReportSource) -> None:
        """Build the pieces (sessions, connections, reports, runtime, health) on the collaborators."""
        settings = self.settings
        self.connections = Connections(settings, self.metrics)
        self.sessions = SessionCore(
            settings,
            clock=self.clock,
            auth=self.auth,
            tracker=self.tracker,
            writer=self.writer,
            coordinator=self.coordinator,
            connections=self.connections,
            metrics=self.metrics,
        )
        self.reports = ReportDesk(
            report_source,
            clock=self.clock,
            zone=settings.report_timezone,
            anonymous=settings.auth == "none",
        )
        self.runtime = Runtime(
            settings,
            clock=self.clock,
            auth=self.auth,
            store=self.store,
            writer=self.writer,
            coordinator=self.coordinator,
            sessions=self.sessions,
            connections=self.connections,
            closing=[self.reports],
            forwarder=self.forwarder,
            note_policy=self._note_policy,
        )
        self.health = Health(self.store, self.sessions, self.metrics)
        self.metrics.watch(
            open_connections=lambda: len(self.connections),
            live_sessions=lambda: len(self.tracker),
            unsaved_sessions=lambda: self.writer.unsaved,
            credited_seconds=lambda: self.tracker.credited_seconds,
        )
        self.writer.on_checkpoint = self.metrics.checkpoint

    @property
    def shutting_down(self) -> bool:
        """Whether the server has begun to shut down."""
        return self.sessions.shutting_down

    async def start(self, sockets: Sequence[socket.socket], http_server: HTTPServer) -> None:
        """Open the store and serve (:meth:`Runtime.start`)."""
        await self.runtime.start(sockets, http_server)

    async def shutdown(self) -> bool:
        """Close every session and save everything (:meth:`Runtime.shutdown`); whether all was saved."""
        return await self.runtime.shutdown()

    async def reload(self) -> None:
        """SIGHUP (:meth:`Runtime.reload`)."""
        await self.runtime.reload()

    async def identify(self, request: AuthRequest) -> Identity:
        """Who sends a report request (``AuthError`` if nobody the backend knows)."""
        return await self.auth.authenticate(request, None)

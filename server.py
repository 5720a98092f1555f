"""study-time server: the entry point and the composition of the service.

``python server.py [--setting=value ...]`` starts the service; ``--help``
lists every setting. SIGTERM or SIGINT shut it down gracefully: every open
session is closed with 1001 and saved, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.routing import Rule

import settings as settings_module
import supervisor
from auth import build_authenticator
from handlers.base import StaticFiles, drop_stream_error_traceback, log_request
from handlers.health import HealthHandler
from handlers.hosts import AllowedHosts, HostRefusedHandler, host_check_applies
from handlers.ops import MetricsHandler, ReadyHandler
from handlers.reports import ROUTES as REPORT_ROUTES
from handlers.study_time import StudyTimeSocket
from metrics import Metrics
from reports.service import Reports
from settings import Settings, SettingsError
from storage import Store, StoreError, StoreUnavailable
from storage.backends import backend_for
from storage.writer import SessionWriter
from tracking.clock import Clock, WallClock
from tracking.limits import KeyedLimit
from tracking.protocol import REFUSAL_CODES, refusal
from tracking.session import EndReason, Session
from tracking.tracker import Tracker

log = logging.getLogger("study_time")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

# Python's cyclic garbage collector runs a young collection every 700 net
# allocations of tracked objects; Tornado allocates several (a Task and
# Futures) per WebSocket message, so at thousands of heartbeats a second it
# ran hundreds of collections a second (bench/, docs/performance.md). The
# service keeps almost nothing cyclic, so collect young objects 70x less often.
GC_YOUNG_THRESHOLD = 50_000

# Once closes are sent at shutdown, wait at most this long for clients to
# answer them before the process exits.
CLOSE_GRACE_SECONDS = 1.0

# HTTP limits. No endpoint takes a request body and WebSocket frames are at
# most --max-message-size, so Tornado's defaults (100 MB buffers and bodies,
# an hour to send a request head) only serve abuse.
MAX_HEADER_BYTES = 32 * 1024  # request line + headers, a token in the query included
MAX_BODY_BYTES = 64 * 1024
MAX_READ_BUFFER_BYTES = 1024 * 1024


class Service:
    """The running service: tracker, writer, store, HTTP server and timers.

    Tests build one in-process with short intervals and a temporary store;
    :func:`main` builds one from the command line.
    """

    def __init__(self, settings: Settings, *, store: Store | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        # Built first: a bad auth setting is a start-up error (SettingsError) naming it.
        self.auth = build_authenticator(settings)
        self.clock = clock or WallClock()
        backend = backend_for(settings.store)
        self.store = store if store is not None else backend.store()
        self.tracker = Tracker(
            settings.heartbeat_timeout, settings.min_heartbeat_interval, settings.max_sessions_per_user
        )
        self.writer = SessionWriter(self.store, max_unsaved=settings.max_unsaved_sessions)
        self.coordinator = backend.coordinator(
            self.store,
            self.writer,
            heartbeat_interval=settings.heartbeat_interval,
            process_timeout=settings.process_timeout,
        )
        self.reports = Reports(backend.report_source())
        self.connections: set[StudyTimeSocket] = set()
        #: Open connections per client address (``request.remote_ip``), against the cap.
        self.connections_per_address = KeyedLimit(settings.max_connections_per_address)
        self.metrics = Metrics(end_reasons=[r.value for r in EndReason], refusal_codes=REFUSAL_CODES)
        self.metrics.watch(
            open_connections=lambda: len(self.connections),
            live_sessions=lambda: len(self.tracker),
            unsaved_sessions=lambda: self.writer.unsaved,
            credited_seconds=lambda: self.tracker.credited_seconds,
        )
        self.writer.on_checkpoint = self.metrics.checkpoint
        self._no_connections = asyncio.Event()
        self.shutting_down = False
        self.app = make_app(self)
        self.http_server: _HTTPServer | None = None
        self._timers: list[PeriodicCallback] = []

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        """Open the store, close what a crash left open, and serve on ``sockets``."""
        await self.store.open()
        recovered = await self.store.recover(self.clock())
        if recovered:
            log.warning(
                "closed %d sessions left open by a previous process (server_lost), keeping %.1fs of credit",
                len(recovered),
                sum(r.seconds for r in recovered),
            )
        try:
            await self.coordinator.start(self.clock())
        except StoreUnavailable as exc:
            raise StoreError(f"cannot register this process in the store: {exc}") from exc
        settings = self.settings
        self.http_server = _HTTPServer(
            self.app,
            xheaders=settings.trust_proxy_headers,
            idle_connection_timeout=settings.http_idle_timeout,
            body_timeout=settings.http_idle_timeout,
            max_header_size=MAX_HEADER_BYTES,
            max_body_size=MAX_BODY_BYTES,
            max_buffer_size=MAX_READ_BUFFER_BYTES,
        )
        self.http_server.add_sockets(sockets)
        self._timers = [
            PeriodicCallback(self.sweep, settings.sweep_interval * 1000),
            PeriodicCallback(self.writer.flush, settings.flush_interval * 1000),
        ]
        if self.coordinator.poll_interval is not None:
            self._timers.append(PeriodicCallback(self.coordinate, self.coordinator.poll_interval * 1000))
        for timer in self._timers:
            timer.start()

    async def opening_total(self, session: Session) -> float:
        """Claim a new session's (user, course) and read the total it continues from.

        Raises :class:`StoreUnavailable` (the connection is then refused with 1013).
        """
        try:
            elsewhere = await self.coordinator.claim(session)
            return await self.writer.total_seconds(session.user_id, session.course_id) + elsewhere
        except StoreUnavailable:
            self.coordinator.ended(session)
            raise

    async def coordinate(self) -> None:
        """Act on what other processes did: takeovers of our sessions, our presumed death."""
        now = self.clock()
        result = await self.coordinator.poll(now)
        for session, at in result.takeovers:
            if session.is_open:
                self.tracker.end(session, now, EndReason.REPLACED, credit_until=at)
                self.session_ended(session)
                session.connection.refuse(  # type: ignore[union-attr]
                    refusal("replaced", "a newer connection for this user and course took over")
                )
            else:
                # It ended here after the takeover instant: write it again
                # without the overlap, so no second counts twice.
                stored = session.seconds
                if self.tracker.cap(session, at):
                    self.writer.corrected(session, stored)
        if result.presumed_dead:
            for session in self.tracker:
                if self.tracker.end(session, now, EndReason.SERVER_LOST):
                    self.session_ended(session)
                    session.connection.refuse(  # type: ignore[union-attr]
                        refusal("store_unavailable", "this server lost the study record store, reconnect")
                    )
        if result.recovered:
            log.warning(
                "closed %d sessions of server processes presumed dead (server_lost), keeping %.1fs of credit",
                len(result.recovered),
                sum(r.seconds for r in result.recovered),
            )

    def sweep(self) -> None:
        """End the sessions whose heartbeat deadline has passed (the tracker finds only those)."""
        for session in self.tracker.expire(self.clock()):
            self.session_ended(session)
            session.connection.refuse(  # type: ignore[union-attr]
                refusal("heartbeat_timeout", "no heartbeat within the heartbeat timeout")
            )

    def session_ended(self, session: Session) -> None:
        """Record an ended session: queue its final snapshot and log it."""
        self.writer.ended(session)
        self.coordinator.ended(session)
        self.metrics.session_closed(session.end_reason)  # type: ignore[arg-type]
        log.info(
            "session closed user=%s course=%s session=%s remote=%s reason=%s credited=%.3fs total=%ds",
            session.user_id,
            session.course_id,
            session.session_id,
            session.remote_addr,
            session.end_reason,
            session.seconds,
            session.study_time,
            extra={
                "event": "session_closed",
                "user": session.user_id,
                "course": session.course_id,
                "session": session.session_id,
                "remote": session.remote_addr,
                "reason": session.end_reason,
                "credited_seconds": round(session.seconds, 3),
                "total_seconds": session.study_time,
            },
        )

    async def shutdown(self) -> bool:
        """Close every session with 1001, save everything; return whether all was saved."""
        self.shutting_down = True
        if self.http_server is not None:
            self.http_server.stop()
        for timer in self._timers:
            timer.stop()
        now = self.clock()
        for session in self.tracker:
            if self.tracker.end(session, now, EndReason.SERVER_SHUTDOWN):
                self.session_ended(session)
                session.connection.refuse(  # type: ignore[union-attr]
                    refusal("server_shutdown", "the server is shutting down, reconnect shortly")
                )
        saved = await self.writer.drain(self.settings.shutdown_timeout)
        if not saved:
            log.error(
                "shutdown: the store did not take %d sessions within %gs (--shutdown-timeout)",
                self.writer.unsaved,
                self.settings.shutdown_timeout,
            )
        await self._wait_for_connections(CLOSE_GRACE_SECONDS)
        if self.http_server is not None:
            await self.http_server.close_all_connections()
        await self.coordinator.stop(saved=saved)
        await self.reports.close()
        await self.store.close()
        return saved

    def forget_connection(self, handler: StudyTimeSocket) -> None:
        self.connections.discard(handler)
        if not self.connections:
            self._no_connections.set()

    async def _wait_for_connections(self, timeout: float) -> None:
        if self.connections:
            self._no_connections.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_connections.wait(), timeout)


class _HTTPServer(HTTPServer):
    """Tornado's HTTP server, freeing each connection's stream when the connection ends."""

    def on_close(self, server_conn: object) -> None:
        # A keep-alive connection reset by its client leaves its stream in a
        # reference cycle; a WebSocket's stream is handed over at the upgrade,
        # before this runs, and StudyTimeSocket frees it.
        super().on_close(server_conn)
        drop_stream_error_traceback(getattr(server_conn, "stream", None))


def make_app(service: Service) -> tornado.web.Application:
    settings = service.settings
    routes: list = [
        (r"/api/study-time", StudyTimeSocket, {"service": service}),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, {"service": service}),
        (r"/metrics", MetricsHandler, {"service": service}),
        *((pattern, handler, {"service": service}) for pattern, handler in REPORT_ROUTES),
        (r"/(.*)", StaticFiles, {"path": STATIC_DIR, "default_filename": "index.html"}),
    ]
    if host_check_applies(settings):
        # Every route only for an allowed Host; any other Host gets 403 (DNS rebinding, handlers/hosts.py).
        hosts = AllowedHosts(settings.allowed_hosts)
        routes = [Rule(hosts, routes), (r".*", HostRefusedHandler, {"hosts": hosts})]
    return tornado.web.Application(
        routes,
        websocket_max_message_size=settings.max_message_size,
        log_function=log_request,
    )


async def serve(settings: Settings, sockets: Sequence[socket.socket]) -> int:
    """Run the service until SIGTERM or SIGINT; return the exit status."""
    try:
        service = Service(settings)
        await service.start(sockets)
    except SettingsError as exc:  # an auth setting the backend cannot work with
        print(f"server.py: error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 1
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = sockets[0].getsockname()[:2]
    log.info("authentication: %s", service.auth.describe())
    log.info("listening on http://%s:%d (store %s)", host, port, settings.store.split(":", 1)[0])
    await stop.wait()
    log.info("shutting down: closing %d sessions", len(service.tracker))
    saved = await service.shutdown()
    log.info("stopped")
    return 0 if saved else 1


def tune_gc() -> None:
    """Tune the garbage collector once start-up is done (see GC_YOUNG_THRESHOLD).

    ``gc.freeze`` moves everything alive after start-up (modules, settings,
    the app) out of the collector's reach, so full collections only scan what
    connections created.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        from reports.cli import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["tokens"]:
        from auth.tokens import cli

        return cli(argv[1:])
    try:
        settings = settings_module.load(argv)
    except SettingsError as exc:
        print(f"server.py: error: {exc}", file=sys.stderr)
        return 2
    settings_module.configure_logging(settings.log_level, settings.log_format)
    try:
        processes = supervisor.resolve(settings.processes)
        if processes > 1 and not backend_for(settings.store).supports_many_processes:
            raise StoreError(
                f"--processes={settings.processes} starts {processes} processes, but the SQLite store"
                " serves one process; use --processes=1 or a mongodb:// store"
            )
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        # Bound before the IOLoop starts (and before any fork), so that
        # several processes can share them.
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    if processes > 1:
        status = supervisor.Workers(processes).run()
        if status is not None:  # the parent, once every worker has exited
            return status
    return asyncio.run(serve(settings, sockets))


if __name__ == "__main__":
    sys.exit(main())

"""The study-time service: what happens when a session opens, a heartbeat arrives, a session ends.

:class:`Service` composes the counting core (:mod:`tracking`) with the store
and its write-behind (:mod:`storage`), authentication (:mod:`auth`), the
reports and the metrics, and its methods say what happens to a learner's
session. The handlers (``handlers/``) translate WebSocket and HTTP events
into these calls and never reach into the collaborators; ``server.py``
builds the service and its web application, serves, and shuts down.

Every way a session ends (the client closes or drops, a heartbeat timeout,
a replacement here or by another process, a flood, the store lost, the
server shutting down) goes through one path, :meth:`Service.end_session`:
the tracker ends the session, its end is recorded, and its connection, if
it is still there, is closed with the cause's code. The service keeps the
map from a session to its connection; :mod:`tracking` never sees a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from auth import Authenticator, AuthError, AuthRequest, Identity, build_authenticator
from auth.access import may_study
from auth.revocation import revoked_sessions
from metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from metrics import Metrics
from reports.service import Reports
from settings import Settings
from storage import Store, StoreError, StoreUnavailable
from storage.backends import backend_for
from storage.writer import SessionWriter
from tracking.clock import Clock, WallClock
from tracking.limits import KeyedLimit
from tracking.protocol import REFUSAL_CODES, Close, closing
from tracking.ratelimit import TokenBucket
from tracking.session import EndReason, Session
from tracking.tracker import Tracker, Verdict

__all__ = ["Connection", "Service", "StoreUnavailable"]

log = logging.getLogger("study_time.service")

# Once closes are sent at shutdown, wait at most this long for clients to
# answer them before the process exits.
CLOSE_GRACE_SECONDS = 1.0
#: Ended sessions are written at most this long after the previous prompt write (storage/writer.py).
ENDED_WRITE_INTERVAL = 0.5

#: Why a session's connection is closed, by the reason the session ended.
#: Ends the client caused (it closed or went away) need no close from us.
_CLOSE_FOR_END: dict[EndReason, Close] = {
    EndReason.TIMEOUT: closing("heartbeat_timeout", "no heartbeat within the heartbeat timeout"),
    EndReason.REPLACED: closing("replaced", "a newer connection for this user and course took over"),
    EndReason.SERVER_SHUTDOWN: closing("server_shutdown", "the server is shutting down, reconnect shortly"),
    EndReason.SERVER_LOST: closing("store_unavailable", "this server lost the study record store, reconnect"),
    EndReason.RATE_LIMITED: closing(
        "too_many_messages", "too many messages; send one heartbeat per interval"
    ),
    EndReason.REVOKED: closing(
        "unauthorized", "the credential this session opened with no longer stands; connect with a valid one"
    ),
}


class Connection(Protocol):
    """A client's connection as the service sees it (``handlers.study_time.StudyTimeSocket``)."""

    @property
    def closed(self) -> bool:
        """Whether the client has gone (or the connection is closing)."""

    def close_with(self, close: Close) -> None:
        """Send ``close``'s ``error`` message, then close with its code and reason."""


class Service:
    """The running service: sessions, their credit and records, and the timers that keep them.

    Tests build one in-process with short intervals and a temporary store;
    ``server.py`` builds one from the command line.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
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
        self.store = store if store is not None else backend.store()
        self.tracker = Tracker(
            settings.heartbeat_timeout, settings.min_heartbeat_interval, settings.max_sessions_per_user
        )
        # Ended sessions are written within ENDED_WRITE_INTERVAL, not at the next
        # checkpoint, so reports show them closed at once (storage/writer.py).
        self.writer = SessionWriter(
            self.store, max_unsaved=settings.max_unsaved_sessions, ended_write_interval=ENDED_WRITE_INTERVAL
        )
        self.coordinator = backend.coordinator(
            self.store,
            self.writer,
            heartbeat_interval=settings.heartbeat_interval,
            process_timeout=settings.process_timeout,
        )
        self.reports = Reports(backend.report_source())
        #: Every open client connection, with or without a session.
        self.connections: set[Connection] = set()
        #: Open connections per client address, against ``--max-connections-per-address``.
        self.connections_per_address = KeyedLimit(settings.max_connections_per_address)
        # The connection of each live session: the one place that knows both.
        self._connection_of: dict[str, Connection] = {}
        self.worker = worker
        self.metrics = Metrics(
            end_reasons=[r.value for r in EndReason], refusal_codes=REFUSAL_CODES, worker=worker
        )
        self.metrics.watch(
            open_connections=lambda: len(self.connections),
            live_sessions=lambda: len(self.tracker),
            unsaved_sessions=lambda: self.writer.unsaved,
            credited_seconds=lambda: self.tracker.credited_seconds,
        )
        self.writer.on_checkpoint = self.metrics.checkpoint
        self._no_connections = asyncio.Event()
        self.shutting_down = False
        self.http_server: HTTPServer | None = None
        self._timers: list[PeriodicCallback] = []

    # Starting and stopping.

    async def start(self, sockets: Sequence[socket.socket], http_server: HTTPServer) -> None:
        """Open the store, close what a crash left open, and serve on ``sockets`` with ``http_server``."""
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
        self.http_server = http_server
        http_server.add_sockets(sockets)
        settings = self.settings
        self._timers = [
            PeriodicCallback(self.sweep, settings.sweep_interval * 1000),
            PeriodicCallback(self.writer.flush, settings.flush_interval * 1000),
        ]
        if self.coordinator.poll_interval is not None:
            self._timers.append(PeriodicCallback(self.coordinate, self.coordinator.poll_interval * 1000))
        for timer in self._timers:
            timer.start()

    async def shutdown(self) -> bool:
        """Close every session with 1001, save everything; return whether all was saved."""
        self.shutting_down = True
        if self.http_server is not None:
            self.http_server.stop()
        for timer in self._timers:
            timer.stop()
        now = self.clock()
        for session in self.tracker:
            self.end_session(session, EndReason.SERVER_SHUTDOWN, now)
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

    async def reload(self) -> None:
        """SIGHUP: read again what the service reads from outside while it runs, and log what.

        That is the authentication backend's files and key sets
        (:meth:`auth.Authenticator.reload`). Then the sessions whose
        credential no longer stands (a revoked token, a withdrawn key:
        :mod:`auth.revocation`) end with 4401, credited up to now; the others
        are not touched. Settings are read once at start (a changed log level
        or store needs a restart).
        """
        try:
            done = await self.auth.reload()
        except Exception as exc:  # a plugin's bug must not take the server down
            log.error("reload: auth backend %s failed: %s", self.auth.name, type(exc).__name__)
            done = f"--auth={self.auth.name} failed, kept as it was"
            lapsed = []
        else:
            lapsed = self._revoked_sessions()
        now = self.clock()
        for session, reason in lapsed:
            log.warning(
                "closing a session whose credential no longer stands user=%s course=%s session=%s: %s",
                session.user_id,
                session.course_id,
                session.session_id,
                reason,
                extra={"event": "session_revoked", "user": session.user_id, "course": session.course_id},
            )
            self.end_session(session, EndReason.REVOKED, now)
        log.info(
            "reloaded on SIGHUP: %s; %d sessions kept open%s",
            done or f"nothing to reload for --auth={self.auth.name}",
            len(self.tracker),
            f", {len(lapsed)} closed (credential revoked)" if lapsed else "",
            extra={"event": "reloaded"},
        )

    def _revoked_sessions(self) -> list[tuple[Session, str]]:
        """The open sessions whose credential lapsed, by the backend's word (a plugin's bug: none)."""
        try:
            return revoked_sessions(self.auth, list(self.tracker))
        except Exception as exc:
            log.error(
                "reload: auth backend %s failed to check sessions: %s", self.auth.name, type(exc).__name__
            )
            return []

    async def readiness(self, timeout: float) -> tuple[str, str] | None:
        """Why this process cannot take connections now, as (reason, message), or None when it can.

        The store must answer a ping within ``timeout`` seconds (``/readyz``).
        """
        if self.shutting_down:
            return "shutting_down", "the server is shutting down"
        try:
            await asyncio.wait_for(self.store.ping(), timeout)
        except TimeoutError:
            return "store_unavailable", f"the store did not answer within {timeout:g}s"
        except StoreUnavailable:
            # The store's own message is not echoed: it may name hosts or users.
            return "store_unavailable", "the store is unavailable"
        if self.shutting_down:  # began while the store was pinged
            return "shutting_down", "the server is shutting down"
        return None

    def render_metrics(self) -> tuple[str, bytes]:
        """Every metric in the Prometheus text format (``/metrics``), with its content type."""
        return METRICS_CONTENT_TYPE, self.metrics.render()

    # A connection arrives and leaves.

    def connected(self, connection: Connection, address: str) -> bool:
        """A client connected from ``address``; False (and refused, 4431) over the address's cap.

        Counted before its ids and credential are looked at, so an address
        over its cap costs no authentication work.
        """
        self.connections.add(connection)
        if self.connections_per_address.full(address):
            self._refuse_over_cap(
                connection,
                closing(
                    "too_many_connections",
                    f"{self.settings.max_connections_per_address} connections from this address"
                    " are open already; try again later",
                ),
                "--max-connections-per-address",
                address,
            )
            return False
        self.connections_per_address.add(address)
        return True

    def disconnected(
        self, connection: Connection, address: str | None, session: Session | None, *, clean: bool
    ) -> None:
        """The client's connection is gone: end its session, if still open.

        ``address`` is what :meth:`connected` counted (None if it refused the
        connection); ``clean`` says whether the client sent a close frame (a
        clean end earns the time since the last heartbeat; a drop does not).
        """
        self.connections.discard(connection)
        if not self.connections:
            self._no_connections.set()
        if address is not None:
            self.connections_per_address.remove(address)
        if session is not None:
            self.end_session(session, EndReason.CLIENT_CLOSED if clean else EndReason.CONNECTION_LOST)

    def refuse(self, connection: Connection, close: Close) -> None:
        """Refuse a connection that has no session: counted by its code, then closed."""
        self.metrics.refused(close.code)
        connection.close_with(close)

    def flood_limit(self, now: float) -> TokenBucket:
        """The message allowance of a new connection (``--flood-rate``, ``--flood-burst``)."""
        return TokenBucket(self.settings.flood_rate, self.settings.flood_burst, now)

    async def identify(self, request: AuthRequest) -> Identity:
        """Who sends a report request (``AuthError`` if nobody the backend knows)."""
        return await self.auth.authenticate(request, None)

    # A session opens.

    async def open_session(
        self,
        connection: Connection,
        request: AuthRequest,
        user_id: str,
        course_id: str,
        *,
        user_agent: str | None,
    ) -> Session | None:
        """Authenticate, take over the (user, course), and start a session on ``connection``.

        Returns the session, or None when the connection was refused (the
        client has been told why) or went away meanwhile.
        """
        identity = await self._authenticate(connection, request, user_id, course_id)
        if identity is None:
            return None
        if self.shutting_down:
            self.refuse(connection, closing("server_shutdown", "the server is shutting down"))
            return None
        if self.writer.full:
            self.refuse(
                connection, closing("store_unavailable", "too much study time is waiting for the store")
            )
            return None
        if not self.tracker.admits(user_id, course_id):
            self._refuse_over_cap(
                connection,
                closing(
                    "too_many_sessions",
                    f"this learner already has {self.settings.max_sessions_per_user} sessions open"
                    " in other courses; close one and try again",
                ),
                "--max-sessions-per-user",
                request.remote_addr,
                user=user_id,
                course=course_id,
            )
            return None
        # No await between the cap's check and the opening: nothing can take the slot meanwhile.
        now = self.clock()
        session, replaced = self.tracker.open(
            user_id,
            course_id,
            now,
            session_id=uuid.uuid4().hex,
            remote_addr=request.remote_addr,
            user_agent=user_agent,
        )
        session.grant = identity.grant  # asked about again on a reload
        self._connection_of[session.session_id] = connection
        if replaced is not None:
            self._ended(replaced)
        try:
            # The replaced session's final credit is in the writer (or, from
            # another process, estimated), so the total includes it whether or
            # not it has been flushed.
            elsewhere = await self.coordinator.claim(session)
            base = await self.writer.total_seconds(user_id, course_id) + elsewhere
        except StoreUnavailable as exc:
            log.warning(
                "store unavailable opening a session for user=%s course=%s: %s", user_id, course_id, exc
            )
            self.coordinator.ended(session)
            self.tracker.discard(session)
            self._connection_of.pop(session.session_id, None)
            self.refuse(
                connection,
                closing("store_unavailable", "the study record store is unavailable, try again later"),
            )
            return None
        if not session.is_open:
            return None  # replaced or disconnected while the total was read
        session.base_seconds = base
        self.writer.changed(session)
        log.info(
            "session opened user=%s course=%s session=%s remote=%s",
            user_id,
            course_id,
            session.session_id,
            session.remote_addr,
            extra={
                "event": "session_opened",
                "user": user_id,
                "course": course_id,
                "session": session.session_id,
                "remote": session.remote_addr,
                "total_seconds": session.study_time,
            },
        )
        return session

    # A heartbeat arrives.

    def heartbeat(self, session: Session, now: float, client_time: datetime | None) -> Verdict:
        """Credit a heartbeat (or say why not); a session found timed out is ended and closed (4408)."""
        verdict = self.tracker.heartbeat(session, now, client_time)
        self.metrics.heartbeats[verdict.value] += 1
        if verdict is Verdict.ACCEPTED:
            self.writer.changed(session)
        elif verdict is Verdict.EXPIRED:  # the tracker has ended it as a timeout
            self._ended(session)
        return verdict

    def invalid_heartbeat(self) -> None:
        """A heartbeat whose timestamp could not be read (answered with an error, no credit)."""
        self.metrics.heartbeats["invalid_timestamp"] += 1

    def slow_reader(self, session: Session | None, address: str | None) -> None:
        """A client stopped reading its replies: its session ends as a lost connection.

        The caller drops the TCP connection (a close frame would only queue
        behind the unread replies).
        """
        self.metrics.slow_readers.inc()
        log.warning(
            "dropping a connection that does not read its replies user=%s course=%s remote=%s",
            session.user_id if session else None,
            session.course_id if session else None,
            address,
        )
        if session is not None:
            self.end_session(session, EndReason.CONNECTION_LOST)

    # A session ends.

    def end_session(self, session: Session, reason: EndReason, now: float | None = None) -> None:
        """End ``session`` for ``reason``: the one path every cause takes.

        The tracker ends it (and may decide it timed out instead), the end is
        recorded (final snapshot, lease, metrics, log), and its connection,
        if still there, is closed with the cause's code. Ending a session
        that has already ended does nothing.
        """
        if self.tracker.end(session, self.clock() if now is None else now, reason):
            self._ended(session)

    def sweep(self) -> None:
        """End the sessions whose heartbeat deadline has passed (the tracker finds only those)."""
        for session in self.tracker.expire(self.clock()):
            self._ended(session)

    async def coordinate(self) -> None:
        """Act on what other processes did: takeovers of our sessions, our presumed death."""
        now = self.clock()
        result = await self.coordinator.poll(now)
        for session, at in result.takeovers:
            if session.is_open:
                if self.tracker.end(session, now, EndReason.REPLACED, credit_until=at):
                    self._ended(session)
            else:
                # It ended here after the takeover instant: write it again
                # without the overlap, so no second counts twice.
                stored = session.seconds
                if self.tracker.cap(session, at):
                    self.writer.corrected(session, stored)
        if result.presumed_dead:
            for session in self.tracker:
                self.end_session(session, EndReason.SERVER_LOST, now)
        if result.recovered:
            log.warning(
                "closed %d sessions of server processes presumed dead (server_lost), keeping %.1fs of credit",
                len(result.recovered),
                sum(r.seconds for r in result.recovered),
            )

    def _ended(self, session: Session) -> None:
        """Record a session the tracker has ended, and close its connection with the cause's code."""
        self.writer.ended(session)
        self.coordinator.ended(session)
        reason = session.end_reason
        assert reason is not None
        self.metrics.session_closed(reason)
        log.info(
            "session closed user=%s course=%s session=%s remote=%s reason=%s credited=%.3fs total=%ds",
            session.user_id,
            session.course_id,
            session.session_id,
            session.remote_addr,
            reason,
            session.seconds,
            session.study_time,
            extra={
                "event": "session_closed",
                "user": session.user_id,
                "course": session.course_id,
                "session": session.session_id,
                "remote": session.remote_addr,
                "reason": reason,
                "credited_seconds": round(session.seconds, 3),
                "total_seconds": session.study_time,
            },
        )
        connection = self._connection_of.pop(session.session_id, None)
        close = _CLOSE_FOR_END.get(reason)
        if connection is not None and close is not None and not connection.closed:
            connection.close_with(close)

    # Internals.

    async def _authenticate(
        self, connection: Connection, request: AuthRequest, user_id: str, course_id: str
    ) -> Identity | None:
        """Ask the auth backend who this is and whether it may study ``course_id`` as ``user_id``.

        On refusal, log why (never the credential), close with 4401/4403 and return None.
        """
        try:
            identity = await self.auth.authenticate(request, user_id)
            may_study(identity, user_id, course_id)
        except AuthError as exc:
            # An expired or missing token is routine; a valid one used for
            # someone else's id or course deserves attention.
            level = logging.INFO if exc.code == "unauthorized" else logging.WARNING
            log.log(
                level,
                "auth refused user=%s course=%s remote=%s code=%s reason=%s",
                user_id,
                course_id,
                request.remote_addr,
                exc.code,
                exc.reason,
                extra={
                    "event": "auth_refused",
                    "user": user_id,
                    "course": course_id,
                    "remote": request.remote_addr,
                    "reason": exc.code,
                },
            )
            self.refuse(connection, closing(exc.code, exc.reason))
            return None
        except Exception as exc:  # a plugin's bug must not take the server down
            log.error(
                "auth backend %s failed for user=%s course=%s: %s",
                self.auth.name,
                user_id,
                course_id,
                type(exc).__name__,
            )
            self.refuse(connection, closing("unauthorized", "authentication is unavailable, try again later"))
            return None
        return None if connection.closed else identity  # the client may have gone meanwhile

    def _refuse_over_cap(
        self,
        connection: Connection,
        close: Close,
        setting: str,
        address: str | None,
        user: str | None = None,
        course: str | None = None,
    ) -> None:
        """Refuse a connection over one of the caps, with a log line naming the setting."""
        log.info(
            "refused user=%s course=%s remote=%s code=%s (see %s)",
            user,
            course,
            address,
            close.code,
            setting,
            extra={
                "event": "over_cap",
                "user": user,
                "course": course,
                "remote": address,
                "reason": close.code,
            },
        )
        self.refuse(connection, close)

    async def _wait_for_connections(self, timeout: float) -> None:
        if self.connections:
            self._no_connections.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_connections.wait(), timeout)

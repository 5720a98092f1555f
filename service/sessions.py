"""The session core: a session opens, a heartbeat arrives, a session ends.

:class:`SessionCore` holds the intents and nothing else. It is given what it
works with: the counting rules (:class:`~tracking.tracker.Tracker`), the
authentication backend, the connections (``service/connections.py``), and
the storage side as two interfaces, the write-behind
(:class:`~storage.writer.SessionWriter`) and the coordinator of the server
processes sharing the store (:class:`~storage.coordination.Coordinator`).
It never builds a store or reads a ``--store`` URL: ``service/__init__.py``
does, so a change of store touches the backend, not the core.

Every way a session ends (the client closes or drops, a heartbeat timeout,
a replacement here or by another process, a flood, the store lost, the
server shutting down) goes through :meth:`SessionCore.end` or, when the
tracker has ended it already, :meth:`SessionCore._ended`: its end is
recorded and its connection told once (``Connection.session_ended``), with
the cause's close code. The core keeps the map from a session to its
connection; :mod:`tracking` never sees a socket.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from auth import Authenticator, AuthError, AuthRequest, Identity
from auth.access import may_study
from auth.revocation import revoked_sessions
from metrics import Metrics
from settings import Settings
from storage import StoreUnavailable
from storage.coordination import Coordinator
from storage.writer import SessionWriter
from tracking.clock import Clock
from tracking.protocol import Close, closing
from tracking.session import EndReason, Session
from tracking.tracker import Tracker, Verdict

from .connections import Connection, Connections

log = logging.getLogger("study_time.service")

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


class SessionCore:
    """The intents of a learner's session, on injected collaborators."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        auth: Authenticator,
        tracker: Tracker,
        writer: SessionWriter,
        coordinator: Coordinator,
        connections: Connections,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.auth = auth
        self.tracker = tracker
        self.writer = writer
        self.coordinator = coordinator
        self.connections = connections
        self.metrics = metrics
        #: Set once the server begins to shut down: no session opens after that.
        self.shutting_down = False
        # The connection of each live session: the one place that knows both.
        self._connection_of: dict[str, Connection] = {}

    # A session opens.

    async def open(
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
        if not self._admits(connection, request, user_id, course_id):
            return None
        # No await between the cap's check and the opening: nothing can take the slot meanwhile.
        session, replaced = self.tracker.open(
            user_id,
            course_id,
            self.clock(),
            session_id=uuid.uuid4().hex,
            remote_addr=request.remote_addr,
            user_agent=user_agent,
        )
        session.grant = identity.grant  # asked about again on a reload (end_revoked)
        self._connection_of[session.session_id] = connection
        if replaced is not None:
            self._ended(replaced)
        try:
            # One call: the total includes the replaced session's credit whether
            # or not it has been written (storage/coordination.py).
            base = await self.coordinator.claim(session)
        except StoreUnavailable as exc:
            self._abandon(connection, session, exc)
            return None
        if not session.is_open:
            return None  # replaced or disconnected while the total was read
        session.base_seconds = base
        self.writer.changed(session)
        _log_opened(session)
        return session

    def _admits(self, connection: Connection, request: AuthRequest, user_id: str, course_id: str) -> bool:
        """Whether a session may open now; if not, the connection is refused with the reason."""
        if self.shutting_down:
            self.connections.refuse(connection, closing("server_shutdown", "the server is shutting down"))
            return False
        if self.writer.full:
            self.connections.refuse(
                connection, closing("store_unavailable", "too much study time is waiting for the store")
            )
            return False
        if not self.tracker.admits(user_id, course_id):
            self.connections.refuse_over_cap(
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
            return False
        return True

    def _abandon(self, connection: Connection, session: Session, exc: StoreUnavailable) -> None:
        """Undo an opening whose total could not be read, and refuse the connection."""
        log.warning(
            "store unavailable opening a session for user=%s course=%s: %s",
            session.user_id,
            session.course_id,
            exc,
        )
        self.coordinator.ended(session)
        self.tracker.discard(session)
        self._connection_of.pop(session.session_id, None)
        self.connections.refuse(
            connection,
            closing("store_unavailable", "the study record store is unavailable, try again later"),
        )

    # A heartbeat arrives.

    def heartbeat(self, session: Session, now: float, client_time: datetime | None) -> Verdict:
        """Credit a heartbeat (or say why not); a session found timed out is ended and closed (4408)."""
        verdict = self.tracker.heartbeat(session, now, client_time)
        if verdict is Verdict.ACCEPTED:
            # The status named directly: an Enum's ``value`` is a descriptor
            # call (half a microsecond, per heartbeat).
            self.metrics.heartbeats["accepted"] += 1
            self.writer.changed(session)
            return verdict
        self.metrics.heartbeats[verdict.value] += 1
        if verdict is Verdict.EXPIRED:  # the tracker has ended it as a timeout
            self._ended(session)
        return verdict

    def invalid_heartbeat(self) -> None:
        """A heartbeat whose timestamp could not be read (answered with an error, no credit)."""
        self.metrics.heartbeats["invalid_timestamp"] += 1

    # A connection goes.

    def disconnected(
        self,
        connection: Connection,
        address: str | None,
        session: Session | None,
        *,
        clean: bool,
        reason: str | None = None,
    ) -> None:
        """The client's connection is gone: end its session, if it still has one.

        ``address`` is what ``Connections.connected`` counted (None if it
        refused the connection); ``clean`` says whether the client sent a
        close frame (a clean end earns the time since the last heartbeat; a
        drop does not), and ``reason`` is that frame's text: a pause the
        client names (``EndReason.client_closed``) ends the session as such.
        """
        self.connections.gone(connection, address)
        if session is not None:
            self.end(session, EndReason.client_closed(reason) if clean else EndReason.CONNECTION_LOST)

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
            self.end(session, EndReason.CONNECTION_LOST)

    # A session ends.

    def end(self, session: Session, reason: EndReason, now: float | None = None) -> None:
        """End ``session`` for ``reason``: the one path every cause takes.

        The tracker ends it (and may decide it timed out instead), the end is
        recorded (final snapshot, lease, metrics, log), and its connection,
        if still there, is told once and closed with the cause's code.
        Ending a session that has already ended does nothing.
        """
        if self.tracker.end(session, self.clock() if now is None else now, reason):
            self._ended(session)

    def end_revoked(self) -> int:
        """End, with 4401, the sessions whose credential no longer stands after a reload.

        The backend decides (:mod:`auth.revocation`: a revoked token, a
        withdrawn key); each is credited up to now. A plugin's bug ends none.
        Returns how many ended.
        """
        try:
            lapsed = revoked_sessions(self.auth, list(self.tracker))
        except Exception as exc:
            log.error(
                "reload: auth backend %s failed to check sessions: %s", self.auth.name, type(exc).__name__
            )
            return 0
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
            self.end(session, EndReason.REVOKED, now)
        return len(lapsed)

    def end_all(self, reason: EndReason, now: float) -> None:
        """End every live session for ``reason`` (shutdown, the store lost)."""
        for session in self.tracker:
            self.end(session, reason, now)

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
        self._take_back(result.overlaps)
        if result.presumed_dead:
            self.end_all(EndReason.SERVER_LOST, now)
        if result.recovered:
            log.warning(
                "closed %d sessions of server processes presumed dead (server_lost), keeping %.1fs of credit",
                len(result.recovered),
                sum(r.seconds for r in result.recovered),
            )

    async def settle(self, timeout: float) -> None:
        """Shutting down, after the last sessions ended: apply what checking their credit found."""
        self._take_back(await self.coordinator.settle(timeout))

    def _take_back(self, overlaps: list[tuple[Session, float]]) -> None:
        """Rule 7 across processes: take back credit another process gave the learner first."""
        for session, seconds in overlaps:
            stored = session.seconds
            # An open session pays from its next credits (written with them); an ended one now.
            if self.tracker.take_back(session, seconds):
                self.writer.corrected(session, stored)  # its final snapshot is written again

    def _ended(self, session: Session) -> None:
        """Record a session the tracker has ended, and tell its connection with the cause's code."""
        self.writer.ended(session)
        self.coordinator.ended(session)
        reason = session.end_reason
        assert reason is not None
        self.metrics.session_closed(reason)
        _log_closed(session, reason)
        connection = self._connection_of.pop(session.session_id, None)
        if connection is not None:
            connection.session_ended(_CLOSE_FOR_END.get(reason))

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
            _log_refused(exc, user_id, course_id, request.remote_addr)
            self.connections.refuse(connection, closing(exc.code, exc.reason))
            return None
        except Exception as exc:  # a plugin's bug must not take the server down
            log.error(
                "auth backend %s failed for user=%s course=%s: %s",
                self.auth.name,
                user_id,
                course_id,
                type(exc).__name__,
            )
            self.connections.refuse(
                connection, closing("unauthorized", "authentication is unavailable, try again later")
            )
            return None
        return None if connection.closed else identity  # the client may have gone meanwhile


def _log_refused(exc: AuthError, user_id: str, course_id: str, remote: str | None) -> None:
    # An expired or missing token is routine; a valid one used for
    # someone else's id or course deserves attention.
    level = logging.INFO if exc.code == "unauthorized" else logging.WARNING
    log.log(
        level,
        "auth refused user=%s course=%s remote=%s code=%s reason=%s",
        user_id,
        course_id,
        remote,
        exc.code,
        exc.reason,
        extra={
            "event": "auth_refused",
            "user": user_id,
            "course": course_id,
            "remote": remote,
            "reason": exc.code,
        },
    )


def _log_opened(session: Session) -> None:
    log.info(
        "session opened user=%s course=%s session=%s remote=%s",
        session.user_id,
        session.course_id,
        session.session_id,
        session.remote_addr,
        extra={
            "event": "session_opened",
            "user": session.user_id,
            "course": session.course_id,
            "session": session.session_id,
            "remote": session.remote_addr,
            "total_seconds": session.study_time,
        },
    )


def _log_closed(session: Session, reason: EndReason) -> None:
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

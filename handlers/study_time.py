"""``/api/study-time``: the WebSocket a course page keeps open.

The handler is an adapter: it reads the connection's ids and credential,
turns frames into calls on the session core (:class:`service.sessions.SessionCore`: a session opens,
a heartbeat arrives, the client goes away), and turns the answers into
protocol messages. The counting rules live in ``tracking/``, what happens
to a session in ``service/sessions.py``. See ``docs/protocol.md``.
"""

from __future__ import annotations

import logging

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError

from auth import SUBPROTOCOL, auth_request
from service import Service
from tracking import protocol
from tracking.protocol import Close, ProtocolError, closing
from tracking.ratelimit import TokenBucket
from tracking.session import EndReason, Session
from tracking.tracker import Verdict

from .base import ServiceHandlerMixin, listed_origin
from .frames import text_frame
from .tornado_internals import (
    Opening,
    ReleasingSocket,
    keep_reading,
    release_upgrade_request,
    socket_closing,
    socket_stream,
    write_now,
)

log = logging.getLogger("study_time.socket")

MAX_USER_AGENT = 256

#: Replies a client may leave unread (queued in our memory because the kernel's
#: socket buffers are already full) before the connection is dropped. A client
#: that reads gets each reply in microseconds and never has more than one or two
#: queued; one that never reads would otherwise make the server buffer every
#: reply without bound. About 150 bytes a reply: a few KB per connection at most.
MAX_UNREAD_REPLIES = 32


class StudyTimeSocket(ServiceHandlerMixin, ReleasingSocket):
    """One learner studying one course over one connection (a :class:`service.Connection`)."""

    # In slots, not the instance __dict__ (see ReleasingSocket).
    __slots__ = ("_address", "_unread", "bucket", "service", "session", "sessions")
    service: Service

    def initialize(self) -> None:
        self.sessions = self.service.sessions
        self.session: Session | None = None
        self.bucket: TokenBucket | None = None
        self._unread = 0  # replies written while earlier ones were still queued in our memory
        self._address: str | None = None  # counted against the address's cap until on_close

    def open(self) -> Opening:  # type: ignore[override]
        """Read the ids and start a session, or refuse the connection.

        Tornado reads no frame until the returned awaitable is done, so no
        heartbeat can race the opening. It is an :class:`Opening` rather than
        the coroutine itself, which Tornado would keep for the connection's
        lifetime.
        """
        return Opening(self._open())

    async def _open(self) -> None:
        try:
            await self._start_session()
        finally:
            # Whatever the outcome, the upgrade request has told us all we need.
            release_upgrade_request(self.request)

    async def _start_session(self) -> None:
        service = self.service
        connections = service.connections
        self.bucket = connections.flood_limit(service.clock())
        address = self.request.remote_ip or ""
        if not connections.connected(self, address):
            return
        self._address = address
        try:
            # strip=False: Tornado would otherwise trim whitespace (and control
            # characters, which it turns into spaces), so " alice\x00" would be
            # credited to "alice". An id is validated exactly as it was sent.
            user_id, course_id = protocol.parse_ids(
                self.get_query_argument("userId", None, strip=False),
                self.get_query_argument("courseId", None, strip=False),
            )
        except ValueError as exc:
            connections.refuse(self, closing("invalid_params", str(exc)))
            return
        except HTTPError:  # a query argument that is not UTF-8 (Tornado raises 400 for it)
            connections.refuse(self, closing("invalid_params", "userId and courseId must be UTF-8 text"))
            return
        session = await self.sessions.open(
            self,
            auth_request(self.request),
            user_id,
            course_id,
            user_agent=(self.request.headers.get("User-Agent") or "")[:MAX_USER_AGENT] or None,
        )
        if session is None:
            return
        self.session = session
        settings = service.settings
        self.send(
            protocol.connected(
                session.session_id,
                session.study_time,
                settings.heartbeat_interval,
                settings.heartbeat_timeout,
            )
        )
        # From now on frames are read as they come: the socket stays registered for reading.
        keep_reading(socket_stream(self))

    def get_compression_options(self) -> None:
        """No permessage-deflate: replies are a few dozen bytes, and :meth:`send` writes plain frames."""
        return None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Answer ``study-time.v1`` when offered; never echo a ``bearer.*`` credential back."""
        return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None

    def check_origin(self, origin: str) -> bool:
        """Let browsers connect only from ``--allowed-origins`` (default: this host).

        Tornado calls this only when the request has an Origin header and
        answers 403 before the upgrade when it returns False; requests with no
        Origin (non-browser clients) are judged by their credential alone.
        """
        allowed = self.service.settings.allowed_origins
        ok = super().check_origin(origin) if allowed is None else listed_origin(allowed, origin)
        if not ok:
            log.warning(
                "refused a socket from origin %r remote=%s (see --allowed-origins)",
                origin[:200],
                self.request.remote_ip,
            )
        return ok

    def on_message(self, message: str | bytes) -> None:
        session = self.session
        if session is None or not session.is_open:
            return  # ending: nothing more is counted or answered
        service, sessions = self.service, self.sessions
        now = service.clock()
        if not self.bucket.allow(now):  # type: ignore[union-attr]
            sessions.end(session, EndReason.RATE_LIMITED, now)
            return
        try:
            heartbeat = protocol.parse_client_message(message)
        except ProtocolError as exc:
            if exc.code == "invalid_timestamp":
                sessions.invalid_heartbeat()
                self.send(protocol.heartbeat_error(exc.code, exc.message, session.study_time))
            else:
                self.send(protocol.error(exc.code, exc.message))
            return
        verdict = sessions.heartbeat(session, now, heartbeat.timestamp)
        if verdict is Verdict.ACCEPTED:
            self.send(protocol.heartbeat_ok(session.study_time))
        elif verdict is Verdict.TOO_FREQUENT:
            self.send(
                protocol.heartbeat_error(
                    "too_frequent",
                    f"heartbeats must be at least {service.settings.min_heartbeat_interval:g}s apart",
                    session.study_time,
                )
            )
        # Verdict.EXPIRED: the service has ended the session and closed the connection (4408)
        # through session_ended, once.

    def on_ping(self, data: bytes) -> None:
        # Tornado answers pings itself; they count toward the flood limit.
        session = self.session
        if session is not None and session.is_open:
            now = self.service.clock()
            if not self.bucket.allow(now):  # type: ignore[union-attr]
                self.sessions.end(session, EndReason.RATE_LIMITED, now)

    def on_close(self) -> None:
        # A close frame from the client is a clean end, with or without a status
        # code in it; none is a lost connection. Its reason text may name a pause
        # (idle, page_hidden). A session the service has already ended
        # (session_ended) is not reported again.
        session, self.session = self.session, None
        address, self._address = self._address, None
        self.bucket = None  # nothing more is counted against it
        clean = self.client_closed_cleanly()
        reason = self.close_reason if clean else None
        self.sessions.disconnected(self, address, session, clean=clean, reason=reason)

    # What the service needs of a connection (service.Connection).

    @property
    def closed(self) -> bool:
        """Whether the client has gone or the connection is closing."""
        return socket_closing(self)

    def session_ended(self, close: Close | None) -> None:
        """The service ended this connection's session: forget it, and close with ``close`` if given."""
        self.session = None
        if close is not None and not self.closed:
            self.close_with(close)

    def close_with(self, close: Close) -> None:
        """Tell the client why in an ``error`` message, then close with the matching code."""
        self.send(protocol.error(close.code, close.message))
        self.close(close.close_code, close.reason)

    def send(self, message: str) -> None:
        """Send one protocol message (JSON text); a connection that is closing gets nothing.

        The frame goes straight to the connection's stream instead of through
        ``write_message``, which wraps every write in an asyncio Task (a
        coroutine, a Task and two more IOLoop callbacks per reply) only to
        turn ``StreamClosedError`` into ``WebSocketClosedError``. That was
        the largest per-message cost of ours that bare Tornado does not have
        too, at one reply per heartbeat (docs/performance.md); and while
        nothing is queued it goes straight to the socket (:func:`write_now`).
        The frame is
        the one ``write_message`` would build: text, unmasked, uncompressed
        (this handler negotiates no compression, see
        :meth:`get_compression_options`), and it goes through the same
        stream, in order with Tornado's own pings and close frames.
        """
        stream = socket_stream(self)
        if stream is None:
            return
        # The stream is "writing" while bytes wait in our memory because the
        # kernel's socket buffer is full: the client is not reading. Count the
        # replies written meanwhile, and drop a client that lets them pile up.
        if stream.writing():
            self._unread += 1
            if self._unread > MAX_UNREAD_REPLIES:
                self._drop_slow_reader()
                return
        else:
            self._unread = 0
        try:
            # Any Future IOStream makes needs no waiting: it retrieves its own error.
            write_now(stream, text_frame(message))
        except StreamClosedError:
            return  # the connection is gone: on_close ends the session

    def _drop_slow_reader(self) -> None:
        """End the session as a lost connection and drop the TCP connection.

        No close frame: it would only queue behind the unread replies.
        """
        self.sessions.slow_reader(self.session, self.request.remote_ip)
        self.drop_connection()

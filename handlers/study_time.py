"""``/api/study-time``: the WebSocket a course page keeps open.

The handler is an adapter: it reads the connection's ids and credential,
turns frames into calls on the :class:`~service.Service` (a session opens,
a heartbeat arrives, the client goes away), and turns the answers into
protocol messages. The counting rules live in ``tracking/``, what happens
to a session in ``service.py``. See ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
from asyncio import Future

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from auth import SUBPROTOCOL, auth_request
from service import Service
from tracking import protocol
from tracking.protocol import Close, ProtocolError, closing
from tracking.ratelimit import TokenBucket
from tracking.session import EndReason, Session
from tracking.tracker import Verdict

from .base import ServiceHandlerMixin, drop_stream_error_traceback, listed_origin
from .frames import text_frame

log = logging.getLogger("study_time.socket")

MAX_USER_AGENT = 256

#: Replies a client may leave unread (queued in our memory because the kernel's
#: socket buffers are already full) before the connection is dropped. A client
#: that reads gets each reply in microseconds and never has more than one or two
#: queued; one that never reads would otherwise make the server buffer every
#: reply without bound. About 150 bytes a reply: a few KB per connection at most.
MAX_UNREAD_REPLIES = 32


class _Protocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, noting whether the client sent a close frame.

    Tornado's ``close_code`` is None both for a connection lost without a
    close frame and for a close frame with no status code, which is what
    ``ws.close()`` sends from a browser (and from the API document's own
    example). The first forfeits the time since the last heartbeat, the
    second is the client closing and earns it, so they must be told apart.
    """

    client_sent_close = False

    def _handle_message(self, opcode: int, data: bytes) -> Future[None] | None:
        if opcode == 0x8:  # a close frame, whatever its payload
            self.client_sent_close = True
        return super()._handle_message(opcode, data)


class StudyTimeSocket(ServiceHandlerMixin, WebSocketHandler):
    """One learner studying one course over one connection (a :class:`service.Connection`)."""

    def initialize(self, service: Service) -> None:
        self.service = service
        self.session: Session | None = None
        self.bucket: TokenBucket | None = None
        self._unread = 0  # replies written while earlier ones were still queued in our memory
        self._address: str | None = None  # counted against the address's cap until on_close
        self._protocol: WebSocketProtocol | None = None  # see on_ws_connection_close

    async def open(self) -> None:
        """Read the ids and start a session, or refuse the connection.

        Tornado reads no frame until this coroutine returns, so no heartbeat
        can race the opening.
        """
        service = self.service
        self.bucket = service.flood_limit(service.clock())
        address = self.request.remote_ip or ""
        if not service.connected(self, address):
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
            service.refuse(self, closing("invalid_params", str(exc)))
            return
        except HTTPError:  # a query argument that is not UTF-8 (Tornado raises 400 for it)
            service.refuse(self, closing("invalid_params", "userId and courseId must be UTF-8 text"))
            return
        session = await service.open_session(
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
        service = self.service
        now = service.clock()
        if not self.bucket.allow(now):  # type: ignore[union-attr]
            service.end_session(session, EndReason.RATE_LIMITED, now)
            return
        try:
            heartbeat = protocol.parse_client_message(message)
        except ProtocolError as exc:
            if exc.code == "invalid_timestamp":
                service.invalid_heartbeat()
                self.send(protocol.heartbeat_error(exc.code, exc.message, session.study_time))
            else:
                self.send(protocol.error(exc.code, exc.message))
            return
        verdict = service.heartbeat(session, now, heartbeat.timestamp)
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
        # Verdict.EXPIRED: the service has ended the session and closed the connection (4408).

    def on_ping(self, data: bytes) -> None:
        # Tornado answers pings itself; they count toward the flood limit.
        session = self.session
        if session is not None and session.is_open:
            now = self.service.clock()
            if not self.bucket.allow(now):  # type: ignore[union-attr]
                self.service.end_session(session, EndReason.RATE_LIMITED, now)

    def on_close(self) -> None:
        # A close frame from the client is a clean end, with or without a status
        # code in it; none is a lost connection.
        session, self.session = self.session, None
        address, self._address = self._address, None
        clean = isinstance(self._protocol, _Protocol) and self._protocol.client_sent_close
        self.service.disconnected(self, address, session, clean=clean)

    # What the service needs of a connection (service.Connection).

    @property
    def closed(self) -> bool:
        """Whether the client has gone or the connection is closing."""
        connection = self.ws_connection
        return connection is None or connection.is_closing()

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol object, noting close frames (:class:`_Protocol`), kept here too.

        :meth:`on_close` asks it whether the client sent a close frame, and
        :meth:`on_ws_connection_close` needs its stream.
        """
        protocol = super().get_websocket_protocol()
        if type(protocol) is WebSocketProtocol13:
            protocol.__class__ = _Protocol
        self._protocol = protocol
        return protocol

    def on_ws_connection_close(self, close_code: int | None = None, close_reason: str | None = None) -> None:
        """Tornado's end of the connection (it calls :meth:`on_close`); then unlink what is left.

        The handler lets go of its session and flood allowance, and of the
        stream: one closed by a socket error is left in a reference cycle
        (:func:`~handlers.base.drop_stream_error_traceback`). The stream is
        reached through our own reference to the protocol: Tornado has
        already dropped ``ws_connection`` if the server began the close.
        """
        super().on_ws_connection_close(close_code, close_reason)
        self.session = None
        self.bucket = None
        protocol, self._protocol = self._protocol, None
        drop_stream_error_traceback(getattr(protocol, "stream", None))

    def on_finish(self) -> None:
        """After a refused upgrade (400), let go of the protocol Tornado made for it.

        Tornado keeps it in ``ws_connection``, and it points back at this
        handler: a cycle, for every malformed upgrade request. A finished
        upgrade (101) keeps it for the connection's lifetime, and Tornado
        drops it when the connection ends.
        """
        if self.get_status() != 101:
            self.ws_connection = None
            self._protocol = None

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
        too, at one reply per heartbeat (docs/performance.md). The frame is
        the one ``write_message`` would build: text, unmasked, uncompressed
        (this handler negotiates no compression, see
        :meth:`get_compression_options`), and it goes through the same
        stream, in order with Tornado's own pings and close frames.
        """
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        stream = connection.stream  # type: ignore[attr-defined]
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
            # The returned Future needs no waiting: IOStream retrieves its
            # error itself.
            stream.write(text_frame(message))
        except StreamClosedError:
            return  # the connection is gone: on_close ends the session

    def _drop_slow_reader(self) -> None:
        """End the session as a lost connection and drop the TCP connection.

        No close frame: it would only queue behind the unread replies.
        """
        self.service.slow_reader(self.session, self.request.remote_ip)
        self.ws_connection.stream.close()  # type: ignore[union-attr]

"""``/api/study-time``: the WebSocket a course page keeps open.

The handler is an adapter: it validates the connection, turns frames into
calls on the :class:`~tracking.tracker.Tracker`, and turns the tracker's
verdicts into protocol messages and close codes. The counting rules live in
``tracking/``; persistence in ``storage/``. See ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import struct
import uuid
from typing import TYPE_CHECKING

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError
from tornado.websocket import WebSocketHandler, WebSocketProtocol

from auth import SUBPROTOCOL, AuthError, auth_request, authorize
from storage import StoreUnavailable
from tracking import protocol
from tracking.protocol import ProtocolError, Refusal, refusal
from tracking.ratelimit import TokenBucket
from tracking.session import EndReason, Session
from tracking.tracker import Verdict

from .base import ServiceHandlerMixin, drop_stream_error_traceback

if TYPE_CHECKING:
    from server import Service

log = logging.getLogger("study_time.socket")

MAX_USER_AGENT = 256

#: Replies a client may leave unread (queued in our memory because the kernel's
#: socket buffers are already full) before the connection is dropped. A client
#: that reads gets each reply in microseconds and never has more than one or two
#: queued; one that never reads would otherwise make the server buffer every
#: reply without bound. About 150 bytes a reply: a few KB per connection at most.
MAX_UNREAD_REPLIES = 32


def text_frame(text: str) -> bytes:
    """``text`` as one unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class StudyTimeSocket(ServiceHandlerMixin, WebSocketHandler):
    """One learner studying one course over one connection."""

    def initialize(self, service: Service) -> None:
        self.service = service
        self.session: Session | None = None
        self.bucket: TokenBucket | None = None
        self._unread = 0  # replies written while earlier ones were still queued in our memory
        self._counted_address: str | None = None  # counted in service.connections_per_address
        self._protocol: WebSocketProtocol | None = None  # see on_ws_connection_close

    async def open(self) -> None:
        """Validate the ids, take over the (user, course), and announce the session.

        Tornado reads no frame until this coroutine returns, so no heartbeat
        can race the opening.
        """
        service = self.service
        settings = service.settings
        now = service.clock()
        self.bucket = TokenBucket(settings.flood_rate, settings.flood_burst, now)
        service.connections.add(self)
        if not self.count_address():
            return
        try:
            # strip=False: Tornado would otherwise trim whitespace (and control
            # characters, which it turns into spaces), so " alice\x00" would be
            # credited to "alice". An id is validated exactly as it was sent.
            user_id, course_id = protocol.parse_ids(
                self.get_query_argument("userId", None, strip=False),
                self.get_query_argument("courseId", None, strip=False),
            )
        except ValueError as exc:
            self.refuse(refusal("invalid_params", str(exc)))
            return
        except HTTPError:  # a query argument that is not UTF-8 (Tornado raises 400 for it)
            self.refuse(refusal("invalid_params", "userId and courseId must be UTF-8 text"))
            return
        if not await self.authenticate(user_id, course_id):
            return
        if service.shutting_down:
            self.refuse(refusal("server_shutdown", "the server is shutting down"))
            return
        if service.writer.full:
            self.refuse(refusal("store_unavailable", "too much study time is waiting for the store"))
            return

        if not service.tracker.admits(user_id, course_id):
            self.refuse_over_cap(
                refusal(
                    "too_many_sessions",
                    f"this learner already has {settings.max_sessions_per_user} sessions open"
                    " in other courses; close one and try again",
                ),
                "--max-sessions-per-user",
                user=user_id,
                course=course_id,
            )
            return
        # No await between the check and the opening: nothing can take the slot meanwhile.
        session, replaced = service.tracker.open(
            user_id,
            course_id,
            now,
            session_id=uuid.uuid4().hex,
            remote_addr=self.request.remote_ip,
            user_agent=(self.request.headers.get("User-Agent") or "")[:MAX_USER_AGENT] or None,
            connection=self,
        )
        self.session = session
        if replaced is not None:
            service.session_ended(replaced)
            replaced.connection.refuse(  # type: ignore[union-attr]
                refusal("replaced", "a newer connection for this user and course took over")
            )
        try:
            # The replaced session's final credit is in the writer (or, from
            # another process, estimated), so the total includes it whether or
            # not it has been flushed.
            base = await service.opening_total(session)
        except StoreUnavailable as exc:
            log.warning(
                "store unavailable opening a session for user=%s course=%s: %s", user_id, course_id, exc
            )
            service.tracker.discard(session)
            self.session = None
            self.refuse(
                refusal("store_unavailable", "the study record store is unavailable, try again later")
            )
            return
        if not session.is_open:
            return  # replaced or disconnected while the total was read
        session.base_seconds = base
        service.writer.changed(session)
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
        self.send(
            protocol.connected(
                session.session_id,
                session.study_time,
                settings.heartbeat_interval,
                settings.heartbeat_timeout,
            )
        )

    async def authenticate(self, user_id: str, course_id: str) -> bool:
        """Ask the auth backend who this is and whether it may study ``course_id`` as ``user_id``.

        On refusal, log why (never the credential) and close with 4401/4403.
        """
        service = self.service
        try:
            identity = await service.auth.authenticate(auth_request(self.request), user_id)
            authorize(identity, user_id, course_id)
        except AuthError as exc:
            # An expired or missing token is routine; a valid one used for
            # someone else's id or course deserves attention.
            level = logging.INFO if exc.code == "unauthorized" else logging.WARNING
            log.log(
                level,
                "auth refused user=%s course=%s remote=%s code=%s reason=%s",
                user_id,
                course_id,
                self.request.remote_ip,
                exc.code,
                exc.reason,
                extra={
                    "event": "auth_refused",
                    "user": user_id,
                    "course": course_id,
                    "remote": self.request.remote_ip,
                    "reason": exc.code,
                },
            )
            self.refuse(refusal(exc.code, exc.reason))
            return False
        except Exception as exc:  # a plugin's bug must not take the server down
            log.error(
                "auth backend %s failed for user=%s course=%s: %s",
                service.auth.name,
                user_id,
                course_id,
                type(exc).__name__,
            )
            self.refuse(refusal("unauthorized", "authentication is unavailable, try again later"))
            return False
        return self.ws_connection is not None  # the client may have gone while the backend answered

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
        if allowed is None:
            ok = super().check_origin(origin)
        else:
            ok = "*" in allowed or origin.rstrip("/").lower() in allowed
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
            self.end(
                now,
                EndReason.RATE_LIMITED,
                refusal("too_many_messages", "too many messages; send one heartbeat per interval"),
            )
            return
        try:
            heartbeat = protocol.parse_client_message(message)
        except ProtocolError as exc:
            if exc.code == "invalid_timestamp":
                service.metrics.heartbeats["invalid_timestamp"] += 1
                self.send(protocol.heartbeat_error(exc.code, exc.message, session.study_time))
            else:
                self.send(protocol.error(exc.code, exc.message))
            return
        verdict = service.tracker.heartbeat(session, now, heartbeat.timestamp)
        service.metrics.heartbeats[verdict.value] += 1
        if verdict is Verdict.ACCEPTED:
            service.writer.changed(session)
            self.send(protocol.heartbeat_ok(session.study_time))
        elif verdict is Verdict.TOO_FREQUENT:
            self.send(
                protocol.heartbeat_error(
                    "too_frequent",
                    f"heartbeats must be at least {service.settings.min_heartbeat_interval:g}s apart",
                    session.study_time,
                )
            )
        else:  # Verdict.EXPIRED: the tracker has ended it as a timeout
            service.session_ended(session)
            self.refuse(refusal("heartbeat_timeout", "no heartbeat within the heartbeat timeout"))

    def on_ping(self, data: bytes) -> None:
        # Tornado answers pings itself; they count toward the flood limit.
        session = self.session
        if session is not None and session.is_open:
            now = self.service.clock()
            if not self.bucket.allow(now):  # type: ignore[union-attr]
                self.end(now, EndReason.RATE_LIMITED, refusal("too_many_messages", "too many pings"))

    def on_close(self) -> None:
        service = self.service
        service.forget_connection(self)
        self.uncount_address()
        session = self.session
        if session is not None and session.is_open:
            # A close frame from the client is a clean end; none is a lost connection.
            reason = EndReason.CLIENT_CLOSED if self.close_code is not None else EndReason.CONNECTION_LOST
            if service.tracker.end(session, service.clock(), reason):
                service.session_ended(session)

    def count_address(self) -> bool:
        """Count this connection against its address's cap, or refuse it (4431) when full.

        Counted before the ids and the credential are looked at, so an address
        over its cap costs no authentication work; released in :meth:`on_close`
        however the connection ends (refused, replaced, timed out, dropped).
        """
        service = self.service
        address = self.request.remote_ip or ""
        if service.connections_per_address.full(address):
            self.refuse_over_cap(
                refusal(
                    "too_many_connections",
                    f"{service.settings.max_connections_per_address} connections from this address"
                    " are open already; try again later",
                ),
                "--max-connections-per-address",
            )
            return False
        service.connections_per_address.add(address)
        self._counted_address = address
        return True

    def uncount_address(self) -> None:
        if self._counted_address is not None:
            self.service.connections_per_address.remove(self._counted_address)
            self._counted_address = None

    def refuse_over_cap(
        self, why: Refusal, setting: str, user: str | None = None, course: str | None = None
    ) -> None:
        """Refuse a connection over one of the caps, with a log line naming the setting."""
        log.info(
            "refused user=%s course=%s remote=%s code=%s (see %s)",
            user,
            course,
            self.request.remote_ip,
            why.code,
            setting,
            extra={
                "event": "over_cap",
                "user": user,
                "course": course,
                "remote": self.request.remote_ip,
                "reason": why.code,
            },
        )
        self.refuse(why)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol object, kept here too: :meth:`on_ws_connection_close` needs its stream."""
        self._protocol = super().get_websocket_protocol()
        return self._protocol

    def on_ws_connection_close(self, close_code: int | None = None, close_reason: str | None = None) -> None:
        """Tornado's end of the connection (it calls :meth:`on_close`); then unlink what is left.

        The handler lets go of its session (:meth:`_release`), and of the
        stream: one closed by a socket error is left in a reference cycle
        (:func:`~handlers.base.drop_stream_error_traceback`). The stream is
        reached through our own reference to the protocol: Tornado has
        already dropped ``ws_connection`` if the server began the close.
        """
        super().on_ws_connection_close(close_code, close_reason)
        self._release()
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

    def _release(self) -> None:
        """Unlink this handler and its session once the connection is over.

        The session points at its connection (for the tracker to refuse it)
        and the handler at its session: a reference cycle. Cut both ways, so
        that the handler, its request and stream, and the session are freed
        by reference counting as soon as the connection ends, not whenever
        the cyclic collector gets round to them (docs/performance.md).
        """
        session = self.session
        if session is not None and session.connection is self:
            session.connection = None
        self.session = None
        self.bucket = None

    def end(self, now: float, reason: EndReason, why: Refusal) -> None:
        """End this connection's session for ``reason`` and close with ``why``."""
        session = self.session
        if session is not None and self.service.tracker.end(session, now, reason):
            self.service.session_ended(session)
        self.refuse(why)

    def refuse(self, why: Refusal) -> None:
        """Tell the client why in an ``error`` message, then close with the matching code."""
        self.service.metrics.refused(why.code)
        self.send(protocol.error(why.code, why.message))
        self.close(why.close_code, why.reason)

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
        service = self.service
        session = self.session
        service.metrics.slow_readers.inc()
        log.warning(
            "dropping a connection that does not read its replies user=%s course=%s remote=%s",
            session.user_id if session else None,
            session.course_id if session else None,
            self.request.remote_ip,
        )
        if session is not None and service.tracker.end(session, service.clock(), EndReason.CONNECTION_LOST):
            service.session_ended(session)
        self.ws_connection.stream.close()  # type: ignore[union-attr]

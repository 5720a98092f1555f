"""Every use of Tornado's private or undocumented names, in one place.

Checked against Tornado 6.6.1 (``requirements.txt``); :data:`CHECKED` lists
the minor versions read, and ``tests/test_tornado_internals.py`` fails when
another is installed or when a name below is gone, so an upgrade is read
again here before it ships. Each use says why the public API is not enough.

- ``WebSocketProtocol13._handle_message`` and swapping a protocol's
  ``__class__`` (:class:`NotingProtocol`): Tornado's ``close_code`` is None
  both for a connection lost without a close frame and for a close frame with
  no status code (what a browser's ``ws.close()`` sends). The first forfeits
  the time since the last heartbeat, the second earns it, so the close frame
  must be seen as it arrives. Tornado builds the protocol object itself, so
  its class is swapped for a subclass that adds only that note.
- ``WebSocketHandler.ws_connection`` and the protocol's ``stream``
  (:func:`socket_stream`): replies are written straight to the stream, as
  ``write_message`` would but without its per-message Task (docs/performance.md),
  a client that does not read is detected by the stream's write buffer, and
  dropped by closing the stream.
- ``WebSocketHandler.on_ws_connection_close`` (:class:`ReleasingSocket`):
  the one hook that runs however a connection ends, after ``on_close``, to
  unlink what would otherwise keep a closed connection's objects alive.
- ``RequestHandler._headers_written`` (:func:`headers_written`): whether an
  error can still change the status of a streamed CSV response.
- ``RequestHandler._reason`` (:func:`reason`): the reason phrase of an error
  Tornado raised itself, for the JSON error body.
- ``RequestHandler._request_summary`` (:class:`QuerylessSummary`): Tornado
  prints it when it logs an uncaught exception; the override keeps the query
  string (which may carry ``?token=``) out of that line.
"""

from __future__ import annotations

from asyncio import Future
from typing import Any

import tornado
from tornado.httpserver import HTTPServer
from tornado.iostream import BaseIOStream, IOStream
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

#: The (major, minor) Tornado versions whose source this module was checked against.
CHECKED: frozenset[tuple[int, int]] = frozenset({(6, 6)})

#: What this module relies on, as (class, attribute) pairs; instance attributes are checked by the test.
RELIED_ON: tuple[tuple[type, str], ...] = (
    (WebSocketProtocol13, "_handle_message"),
    (WebSocketHandler, "get_websocket_protocol"),
    (WebSocketHandler, "on_ws_connection_close"),
    (RequestHandler, "_request_summary"),
)


def missing() -> list[str]:
    """What this module relies on and the installed Tornado lacks (empty when all is there)."""
    gone = [f"{cls.__name__}.{name}" for cls, name in RELIED_ON if not hasattr(cls, name)]
    if tuple(tornado.version_info[:2]) not in CHECKED:
        gone.append(f"a check of Tornado {tornado.version} (this module was read against {sorted(CHECKED)})")
    return gone


class NotingProtocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, noting whether the client sent a close frame (see the module)."""

    client_sent_close = False

    def _handle_message(self, opcode: int, data: bytes) -> Future[None] | None:
        if opcode == 0x8:  # a close frame, whatever its payload
            self.client_sent_close = True
        return super()._handle_message(opcode, data)


def socket_stream(handler: WebSocketHandler) -> IOStream | None:
    """The stream of an open WebSocket connection, or None once it is gone or closing."""
    connection = handler.ws_connection
    if connection is None or connection.is_closing():
        return None
    return connection.stream  # type: ignore[attr-defined]


def socket_closing(handler: WebSocketHandler) -> bool:
    """Whether the client has gone or the connection is closing."""
    connection = handler.ws_connection
    return connection is None or connection.is_closing()


class ReleasingSocket(WebSocketHandler):
    """A WebSocket handler that notes close frames and lets go of everything when its connection ends.

    Subclasses drop their own references in ``on_close`` (which Tornado calls
    however the connection ends) and ask :meth:`client_closed_cleanly` there.
    """

    _protocol: WebSocketProtocol | None = None

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol object with close frames noted (:class:`NotingProtocol`), kept here too.

        :meth:`client_closed_cleanly` asks it whether the client sent a close
        frame, and :meth:`on_ws_connection_close` needs its stream.
        """
        protocol = super().get_websocket_protocol()
        if type(protocol) is WebSocketProtocol13:
            protocol.__class__ = NotingProtocol
        self._protocol = protocol
        return protocol

    def client_closed_cleanly(self) -> bool:
        """Whether the client sent a close frame (with or without a status code)."""
        protocol = self._protocol
        return isinstance(protocol, NotingProtocol) and protocol.client_sent_close

    def on_ws_connection_close(self, close_code: int | None = None, close_reason: str | None = None) -> None:
        """Tornado's end of the connection (it calls ``on_close``); then unlink what is left.

        The handler has let go of its own references in ``on_close``; here it
        lets go of the stream: one closed by a socket error is left in a reference cycle
        (:func:`drop_stream_error_traceback`). The stream is
        reached through our own reference to the protocol: Tornado has
        already dropped ``ws_connection`` if the server began the close.
        """
        super().on_ws_connection_close(close_code, close_reason)
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

    def drop_connection(self) -> None:
        """Close the TCP connection at once, without a close frame."""
        stream = getattr(self._protocol, "stream", None)
        if stream is not None:
            stream.close()


def headers_written(handler: RequestHandler) -> bool:
    """Whether the response's status and headers have been sent (a streamed CSV under way)."""
    return handler._headers_written


def reason(handler: RequestHandler) -> str:
    """The reason phrase of the response's status (``Bad Request``), for an error Tornado raised."""
    return handler._reason


class QuerylessSummary:
    """Requests summarised by path only, in Tornado's own log lines (mixed in before ``RequestHandler``)."""

    request: Any

    def _request_summary(self) -> str:
        request = self.request
        return f"{request.method} {request.path} ({request.remote_ip})"

    def request_summary(self) -> str:
        """The summary Tornado logs for this request: method, path and client, never the query."""
        return self._request_summary()


class ReleasingHTTPServer(HTTPServer):
    """Tornado's HTTP server, freeing each connection's stream when the connection ends.

    ``HTTP1ServerConnection.stream`` is undocumented: a keep-alive connection
    reset by its client leaves its stream in a reference cycle; a WebSocket's
    stream is handed over at the upgrade, before this runs, and
    :class:`ReleasingSocket` frees it.
    """

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        drop_stream_error_traceback(getattr(server_conn, "stream", None))


def drop_stream_error_traceback(stream: BaseIOStream | None) -> None:
    """Cut the reference cycle a stream closed by a socket error is left in.

    Tornado keeps the error in ``stream.error`` (for anyone who asks why it
    closed); its traceback holds the frames of the stream's read loop, and
    they hold the stream. Left alone, every connection reset by its client
    keeps its stream, socket and buffers until the cyclic collector runs,
    which ``server.tune_gc`` makes rare (docs/performance.md). The error
    itself stays; only its traceback goes.
    """
    error = None if stream is None else stream.error
    if error is not None:
        error.__traceback__ = None

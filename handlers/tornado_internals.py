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
- ``RequestHandler._headers``, ``_transforms`` and ``_write_buffer``
  (:meth:`ReleasingSocket.on_finish`): the 101 response's headers and output
  transforms, which Tornado keeps for the connection's lifetime although
  nothing is written through them after the upgrade (docs/performance.md,
  memory per connection).
- ``WebSocketProtocol13._accept_connection`` keeps the value ``open()``
  returned in a local for the connection's lifetime (:class:`Opening`).
- An ``IOStream`` with an empty write queue has written everything it was
  given, so bytes sent on its socket then come in order (:func:`write_now`).
- ``BaseIOStream._handle_events`` takes the socket off the IOLoop's readers
  while bytes wait in its buffer and no read is pending, which after every
  heartbeat frame is the case for a moment; the WebSocket's next read puts
  it back: two changes of the poller per message. :func:`keep_reading`
  gives the stream a view of the IOLoop that keeps it reading while its
  buffer (``_read_buffer_size``) is small, and keeps the stream's note of
  what is registered (``_state``) true.
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
from collections.abc import Coroutine, Generator
from types import MappingProxyType
from typing import Any, NoReturn

import tornado
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.ioloop import IOLoop
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
    (BaseIOStream, "_handle_events"),
    (BaseIOStream, "_add_io_state"),
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


def write_now(stream: IOStream, data: bytes) -> None:
    """Write ``data`` to ``stream``, straight to its socket when nothing is queued before it.

    ``IOStream.write`` makes a Future per write, with a done-callback that the
    IOLoop runs on its next iteration: at one reply per heartbeat, a share of
    the reply's cost that bare Tornado pays too and that we need not
    (docs/performance.md). When the stream has nothing queued, a plain
    stream's own first step is exactly this ``send``; bytes the kernel does
    not take at once, and any error, go through ``IOStream.write`` as before,
    which queues them behind nothing, in order, or closes the stream the way
    Tornado does. A TLS stream (``SSLIOStream``) always goes through ``write``.
    """
    if type(stream) is IOStream and not stream.writing() and not stream.closed():
        try:
            sent = stream.socket.send(data)
        except OSError:  # would block, or the connection is broken: IOStream decides
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    stream.write(data)


#: A stream keeps reading its socket while fewer bytes than this wait in its
#: buffer (Tornado reads 64 KB at most per readable event).
KEEP_READING_BELOW = 64 * 1024


class KeepReadingLoop:
    """The IOLoop as the stream of an open WebSocket sees it: the socket stays among its readers.

    Tornado's stream stops reading its socket whenever bytes wait in its
    buffer and nothing is reading them, which after each frame is the case
    until the WebSocket asks for the next one, an IOLoop iteration later: the
    socket's reader is removed and added back for every message (two
    ``epoll_ctl`` and a libuv handle each time, a sixth of a heartbeat's cost
    in the profile: docs/performance.md). Through this view the stream keeps
    reading while less than :data:`KEEP_READING_BELOW` waits in its buffer;
    beyond that (a client sending faster than its frames are handled: Tornado
    hands over a burst in parts, yielding to other connections in between)
    the stream pauses reading as Tornado would, so what a client can make the
    server hold stays bounded. Everything else is the IOLoop's own. It lasts
    while the stream is registered with the IOLoop: when the stream closes
    (``remove_handler``) the stream gets the IOLoop back, and the view lets
    go of it.
    """

    __slots__ = ("loop", "stream")

    READ = IOLoop.READ
    WRITE = IOLoop.WRITE
    ERROR = IOLoop.ERROR

    def __init__(self, loop: IOLoop, stream: IOStream) -> None:
        self.loop = loop
        self.stream: IOStream | None = stream

    def update_handler(self, fd: Any, events: int) -> None:
        stream = self.stream
        if not events & IOLoop.READ and stream is not None and stream._read_buffer_size < KEEP_READING_BELOW:
            events |= IOLoop.READ
            # The stream's note of what is registered, so that it asks again
            # (and this decides again) when it next wants a change.
            stream._state = events
        self.loop.update_handler(fd, events)

    def remove_handler(self, fd: Any) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.io_loop = self.loop
        self.loop.remove_handler(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


def keep_reading(stream: IOStream | None) -> None:
    """Have ``stream`` keep its socket among the IOLoop's readers (:class:`KeepReadingLoop`).

    For a WebSocket whose session is open, whose frames are read as they
    come. A closed stream, or a TLS one (its reads go through the TLS
    state), is left as it is.
    """
    if type(stream) is not IOStream or stream.closed() or isinstance(stream.io_loop, KeepReadingLoop):
        return
    stream.io_loop = KeepReadingLoop(stream.io_loop, stream)  # type: ignore[assignment]


def socket_closing(handler: WebSocketHandler) -> bool:
    """Whether the client has gone or the connection is closing."""
    connection = handler.ws_connection
    return connection is None or connection.is_closing()


class ReleasingSocket(WebSocketHandler):
    """A WebSocket handler that notes close frames and lets go of everything when its connection ends.

    Subclasses drop their own references in ``on_close`` (which Tornado calls
    however the connection ends) and ask :meth:`client_closed_cleanly` there.
    """

    # Per-connection state lives in slots, not in the instance __dict__: Tornado's
    # own attributes fill CPython's shared-key instance dict (30 names), and one more
    # name turns it into an ordinary dict of about 1.6 KB (docs/performance.md).
    __slots__ = ("_protocol",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._protocol: WebSocketProtocol | None = None
        super().__init__(*args, **kwargs)

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
        """Let go of what the HTTP response needed, once it is written.

        After a refused upgrade (400), the protocol Tornado made for it:
        Tornado keeps it in ``ws_connection``, and it points back at this
        handler: a cycle, for every malformed upgrade request. A finished
        upgrade (101) keeps it for the connection's lifetime, and Tornado
        drops it when the connection ends; what it no longer needs is the
        response's headers, output transforms and template namespace, which
        Tornado would otherwise keep until the connection closes (nothing
        is written through them after the 101: Tornado replaces ``write``,
        ``set_header`` and ``finish`` with methods that raise).
        """
        if self.get_status() != 101:
            self.ws_connection = None
            self._protocol = None
            return
        self._headers = NO_HEADERS  # type: ignore[has-type]
        self._transforms = []  # type: ignore[has-type]
        self._write_buffer = []
        self.ui = None  # what Tornado's own _break_cycles does when the connection ends

    def drop_connection(self) -> None:
        """Close the TCP connection at once, without a close frame."""
        stream = getattr(self._protocol, "stream", None)
        if stream is not None:
            stream.close()


class Opening:
    """The awaitable a handler's ``open()`` returns: its coroutine, let go of once awaited.

    Tornado keeps whatever ``open()`` returned in a local of the coroutine
    that then reads frames until the connection ends. A coroutine object keeps
    its frame's memory (a few hundred bytes for a handler's ``open``) after it
    has finished; this wrapper hands the coroutine to ``await`` and keeps
    nothing itself, so only its own 40 bytes stay per connection.
    """

    __slots__ = ("_coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._coroutine: Coroutine[Any, Any, None] | None = coroutine

    def __await__(self) -> Generator[Any, None, None]:
        coroutine, self._coroutine = self._coroutine, None
        if coroutine is None:
            raise RuntimeError("an opening is awaited once")
        return coroutine.__await__()


class _NoHeaders(HTTPHeaders):
    """An empty, read-only ``HTTPHeaders``: what an upgrade request keeps once its session is open."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("the upgrade request's headers were released when its session opened")

    add = __setitem__ = __delitem__ = parse_line = _refuse  # type: ignore[assignment]


NO_HEADERS: HTTPHeaders = _NoHeaders()
_NO_ARGUMENTS: Any = MappingProxyType({})


def release_upgrade_request(request: HTTPServerRequest) -> None:
    """Let go of what an upgrade request carried once its session has opened (or was refused).

    The handler keeps its request for the connection's lifetime, and with it
    every header the browser sent (cookies, user agent, languages: often
    kilobytes), the query arguments and Tornado's HTTP/1.1 connection object,
    which the upgrade has already detached from the stream. Nothing reads
    them after ``open()``: the session keeps what it needs (ids, address,
    user agent), and Tornado itself reads the request's headers only during
    the handshake. What stays is what a log line names: method, path,
    address (:class:`QuerylessSummary`).
    """
    request.headers = NO_HEADERS
    request.arguments = request.query_arguments = request.body_arguments = _NO_ARGUMENTS
    request.files = _NO_ARGUMENTS
    request.connection = None
    request.server_connection = None


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

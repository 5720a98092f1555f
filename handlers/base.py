"""What every handler shares: logging that never prints a credential."""

from __future__ import annotations

import logging

from tornado.iostream import BaseIOStream
from tornado.web import RequestHandler

access_log = logging.getLogger("tornado.access")


class RedactedLogMixin:
    """Summarise requests by path only.

    Credentials may travel in the query string (``?token=``), so no log line
    may contain the URI's query. Tornado prints ``_request_summary()`` when it
    logs an uncaught exception; this keeps that line free of the query too.
    """

    request: object

    def _request_summary(self) -> str:
        request = self.request
        return f"{request.method} {request.path} ({request.remote_ip})"  # type: ignore[attr-defined]


def log_request(handler: RequestHandler) -> None:
    """The access log line (Tornado's ``log_function``): path only, never the query."""
    status = handler.get_status()
    if status < 400:
        log = access_log.info
    elif status < 500:
        log = access_log.warning
    else:
        log = access_log.error
    request = handler.request
    log(
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        request.path,
        request.remote_ip,
        1000.0 * request.request_time(),
    )


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

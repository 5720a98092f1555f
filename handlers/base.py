"""What every handler shares: logging that never prints a credential."""

from __future__ import annotations

import logging

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

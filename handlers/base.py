"""What every handler shares: logging that never prints a credential, and security headers."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPServerRequest
from tornado.web import Application, HTTPError, RequestHandler, StaticFileHandler

from .tornado_internals import QuerylessSummary

if TYPE_CHECKING:
    from service import Service

access_log = logging.getLogger("tornado.access")
app_log = logging.getLogger("tornado.application")

# Security headers (docs/operations.md, "Threat model").

#: The demo page loads only its own scripts and styles (no inline code), and
#: talks only to its own server: its reports over HTTP(S) and its socket over
#: ws(s). ``'self'`` covers ws:/wss: of the page's host in browsers that follow
#: CSP Level 3; the explicit ``ws://HOST wss://HOST`` covers the others.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'{sockets}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a ?token= in the page's URL never leaves in a Referer
}
#: Instead of Tornado's ``TornadoServer/<version>``.
SERVER_HEADER = "study-time"
# A Host that may be written into the policy: a name or address and a port, nothing else.
_HOST = re.compile(r"(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


@functools.lru_cache(maxsize=256)
def content_security_policy(host: str) -> str:
    """The policy for a page served as ``host`` (cached: one per name a server is reached by)."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return CONTENT_SECURITY_POLICY.format(sockets=sockets)


def listed_origin(allowed: tuple[str, ...], origin: str) -> bool:
    """Whether a browser ``Origin`` is in ``--allowed-origins`` (exact match, or ``*``).

    Settings keep origins lower-case without a trailing slash; a header is
    compared the same way.
    """
    return "*" in allowed or origin.rstrip("/").lower() in allowed


class ServiceHandlerMixin(QuerylessSummary):
    """What every handler of the service inherits, first among its bases.

    Requests are summarised by path only: credentials may travel in the query
    string (``?token=``), so no log line may contain the URI's query
    (:class:`~handlers.tornado_internals.QuerylessSummary` keeps Tornado's
    own line free of it too).

    The service a route gives (``dict(service=...)``) is :attr:`service`
    from the start: Tornado sets the default headers (``clear()``) before
    it calls ``initialize``, and a handler's headers may depend on the
    service's settings (the reports' CORS headers).

    Every response carries the security headers (:data:`SECURITY_HEADERS`,
    the Content-Security-Policy) and a ``Server`` header without Tornado's
    version. ``set_default_headers`` runs for each response and again when an
    error replaces one, so refusals and error pages carry them too.
    """

    request: object
    service: Service

    def __init__(self, application: Application, request: HTTPServerRequest, **kwargs: Any) -> None:
        if "service" in kwargs:  # taken here, so initialize() gets the route's other arguments only
            self.service = kwargs.pop("service")
        super().__init__(application, request, **kwargs)  # type: ignore[call-arg]

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)  # type: ignore[attr-defined]
        self.set_header("Content-Security-Policy", content_security_policy(self.request.host))  # type: ignore[attr-defined]
        self.set_header("Server", SERVER_HEADER)  # type: ignore[attr-defined]

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Tornado's own version also prints ``repr(self.request)``, whose
        # ``uri`` carries the query string: the summary says enough.
        if isinstance(value, HTTPError):
            super().log_exception(typ, value, tb)  # type: ignore[misc]
            return
        app_log.error("Uncaught exception %s", self.request_summary(), exc_info=(typ, value, tb))  # type: ignore[arg-type]


#: What a page on another site needs to embed the client (docs/client.md): the
#: one module it imports, served with CORS to ``--allowed-origins``. Nothing
#: else of static/ (the demo page, the dashboards) is readable cross-origin.
EMBEDDABLE = frozenset({"study-time-client.js"})


class StaticFiles(ServiceHandlerMixin, StaticFileHandler):
    """``static/``, with every odd path answered 404 or 403 and logged once, by the access log.

    Tornado's handler lets a NUL byte in the path (``/%00``, ``/index.html%00.js``)
    reach the file system, which raises ``ValueError``: a 500 with a traceback
    anyone can provoke. Its 403s (``/../settings.py``) also log a second line.

    The browser client (:data:`EMBEDDABLE`) carries ``Access-Control-Allow-Origin``
    for a page on an origin of ``--allowed-origins``, the origins that may also
    open the socket: a course page on the LMS imports it as a module, which a
    browser fetches with CORS.
    """

    def initialize(
        self,
        path: str,
        default_filename: str | None = None,
        allowed_origins: tuple[str, ...] | None = None,
    ) -> None:
        super().initialize(path, default_filename)
        self.allowed_origins = allowed_origins

    def set_extra_headers(self, path: str) -> None:
        if path not in EMBEDDABLE:
            return
        self.set_header("Vary", "Origin")
        origin = self.request.headers.get("Origin")
        allowed = self.allowed_origins
        if origin is not None and allowed is not None and listed_origin(allowed, origin):
            listed = origin.rstrip("/").lower() in allowed
            self.set_header("Access-Control-Allow-Origin", origin if listed else "*")

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if "\x00" in path:  # no file has one; the file system would raise ValueError
            raise HTTPError(404)
        with quiet_refusals():
            return super().get_absolute_path(root, path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        with quiet_refusals():
            return super().validate_absolute_path(root, absolute_path)


@contextlib.contextmanager
def quiet_refusals() -> Iterator[None]:
    """Tornado's refusals without their log message (the access log line says enough); a path the
    file system cannot look up is not found."""
    try:
        yield
    except HTTPError as exc:
        raise HTTPError(exc.status_code) from None
    except ValueError:
        raise HTTPError(404) from None


class NotFound(ServiceHandlerMixin, RequestHandler):
    """404 for every request, with the service's headers (a port without a catch-all route)."""

    def prepare(self) -> None:
        raise HTTPError(404)


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

"""The Tornado application and HTTP server: every route of the service, each handler given the service."""

from __future__ import annotations

import os

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.routing import Rule

from service import Service
from settings import Settings

from .base import NotFound, StaticFiles, log_request
from .health import HealthHandler
from .hosts import AllowedHosts, HostRefusedHandler, host_check_applies
from .ops import MetricsHandler, ReadyHandler
from .report_events import ChangesHandler, SessionEvents
from .reports import ROUTES as REPORT_ROUTES
from .study_time import StudyTimeSocket
from .tornado_internals import ReleasingHTTPServer

# HTTP limits. No endpoint takes a request body and WebSocket frames are at
# most --max-message-size, so Tornado's defaults (100 MB buffers and bodies,
# an hour to send a request head) only serve abuse.
MAX_HEADER_BYTES = 32 * 1024  # request line + headers, a token in the query included
MAX_BODY_BYTES = 64 * 1024
MAX_READ_BUFFER_BYTES = 1024 * 1024

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def make_app(service: Service) -> tornado.web.Application:
    """The application serving ``service``: the socket, reports, operations and the demo page."""
    settings = service.settings
    # Ended sessions this process writes wake the dashboards' long polls (report_events.py).
    events = SessionEvents(service.clock)
    service.writer.saved_listeners.append(events.saved)
    routes: list = [
        (r"/api/study-time", StudyTimeSocket, {"service": service}),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, {"service": service}),
        (r"/metrics", MetricsHandler, {"service": service}),
        *((pattern, handler, {"service": service}) for pattern, handler in REPORT_ROUTES),
        (r"/api/reports/changes", ChangesHandler, {"service": service, "events": events}),
        (
            r"/(.*)",
            StaticFiles,
            {
                "path": STATIC_DIR,
                "default_filename": "index.html",
                "allowed_origins": settings.allowed_origins,
            },
        ),
    ]
    return tornado.web.Application(
        _host_checked(settings, routes),
        websocket_max_message_size=settings.max_message_size,
        # gzip for clients that accept it: reports (CSV flushes stay streamed,
        # each flush a sync-flushed gzip block), static files and the rest. A
        # WebSocket upgrade has no body to compress and its frames bypass it.
        compress_response=True,
        log_function=log_request,
    )


def make_server(service: Service) -> HTTPServer:
    """The HTTP server for ``service``'s application, with the service's limits."""
    settings = service.settings
    return ReleasingHTTPServer(
        make_app(service),
        xheaders=settings.trust_proxy_headers,
        idle_connection_timeout=settings.http_idle_timeout,
        body_timeout=settings.http_idle_timeout,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=MAX_BODY_BYTES,
        max_buffer_size=MAX_READ_BUFFER_BYTES,
    )


def _host_checked(settings: Settings, routes: list) -> list:
    """``routes`` only for an allowed Host when the Host check applies; any other Host gets 403
    (DNS rebinding, hosts.py). The same rule on every port the service listens on."""
    if not host_check_applies(settings):
        return routes
    hosts = AllowedHosts(settings.allowed_hosts)
    return [Rule(hosts, routes), (r".*", HostRefusedHandler, {"hosts": hosts})]


def make_metrics_server(service: Service) -> HTTPServer:
    """An HTTP server answering only ``/metrics`` (``--metrics-port``): one per server process.

    The same Host check, security headers and access log as the main port;
    any other path is the service's own 404, not Tornado's page.
    """
    routes: list = [(r"/metrics", MetricsHandler, {"service": service}), (r".*", NotFound)]
    app = tornado.web.Application(_host_checked(service.settings, routes), log_function=log_request)
    return ReleasingHTTPServer(
        app,
        idle_connection_timeout=service.settings.http_idle_timeout,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=MAX_BODY_BYTES,
        max_buffer_size=MAX_READ_BUFFER_BYTES,
    )

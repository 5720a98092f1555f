"""The Tornado application: every route of the service, each handler given the service."""

from __future__ import annotations

import os

import tornado.web
from tornado.routing import Rule

from service import Service

from .base import StaticFiles, log_request
from .health import HealthHandler
from .hosts import AllowedHosts, HostRefusedHandler, host_check_applies
from .ops import MetricsHandler, ReadyHandler
from .reports import ROUTES as REPORT_ROUTES
from .study_time import StudyTimeSocket

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def make_app(service: Service) -> tornado.web.Application:
    """The application serving ``service``: the socket, reports, operations and the demo page."""
    settings = service.settings
    routes: list = [
        (r"/api/study-time", StudyTimeSocket, {"service": service}),
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, {"service": service}),
        (r"/metrics", MetricsHandler, {"service": service}),
        *((pattern, handler, {"service": service}) for pattern, handler in REPORT_ROUTES),
        (r"/(.*)", StaticFiles, {"path": STATIC_DIR, "default_filename": "index.html"}),
    ]
    if host_check_applies(settings):
        # Every route only for an allowed Host; any other Host gets 403 (DNS rebinding, hosts.py).
        hosts = AllowedHosts(settings.allowed_hosts)
        routes = [Rule(hosts, routes), (r".*", HostRefusedHandler, {"hosts": hosts})]
    return tornado.web.Application(
        routes,
        websocket_max_message_size=settings.max_message_size,
        log_function=log_request,
    )

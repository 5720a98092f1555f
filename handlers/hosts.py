"""The Host check that keeps ``--auth=none`` safe from DNS rebinding.

``--auth=none`` trusts any ``userId`` (and serves every report) because only
this machine can reach a loopback address. A web page on any site can still
reach it through DNS rebinding: its own name (``rebind.attacker.example``)
is made to resolve to 127.0.0.1, and the browser then sends the page's
requests, WebSocket upgrades included, to this server, with
``Host: rebind.attacker.example:PORT`` and the matching ``Origin``. The
``Origin`` check cannot catch it (for Tornado, an Origin whose host equals
the Host header is the server's own), but the ``Host`` header gives it away:
it names the attacker's domain. So under ``none`` every request must name
this server by a loopback name or address (``localhost``, ``*.localhost``,
``127.0.0.0/8``, ``[::1]``, any port) or by a name the operator lists in
``--allowed-hosts``; anything else is refused with 403 before any handler
runs, so before a WebSocket upgrade. Other backends authenticate every
request, so the check applies to them only when ``--allowed-hosts`` is given.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher
from tornado.web import RequestHandler

from settings import Settings, is_loopback

from .base import ServiceHandlerMixin

log = logging.getLogger("study_time.hosts")

#: Distinct refused Host names logged at WARNING; beyond that only the access log records them.
MAX_LOGGED_HOSTS = 100


def normalize_host(name: str) -> str:
    """A host name as compared: lower case, no trailing dot, an IPv6 address without brackets."""
    return name.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


@functools.lru_cache(maxsize=1024)
def is_loopback_name(name: str) -> bool:
    """``localhost``, a name under ``.localhost`` (RFC 6761: always loopback, nobody can
    register it, so it cannot be rebound) or a loopback address."""
    name = normalize_host(name)
    return name.endswith(".localhost") or is_loopback(name)


def host_check_applies(settings: Settings) -> bool:
    return settings.auth == "none" or settings.allowed_hosts is not None


class AllowedHosts(Matcher):
    """Matches a request whose Host is a loopback name or address, or one of ``allowed``."""

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.allowed = frozenset(normalize_host(name) for name in allowed or ())
        self._logged: set[str] = set()

    def allows(self, host_name: str) -> bool:
        return is_loopback_name(host_name) or normalize_host(host_name) in self.allowed

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return {} if self.allows(request.host_name) else None

    def refused(self, request: HTTPServerRequest) -> None:
        """Log a refused Host once (per distinct name, for the first ``MAX_LOGGED_HOSTS``)."""
        host = request.host_name[:100]
        if host in self._logged or len(self._logged) >= MAX_LOGGED_HOSTS:
            return
        self._logged.add(host)
        log.warning(
            "refused requests for Host %r (first from %s): not a loopback name and not in"
            " --allowed-hosts; a DNS rebinding attempt, or a name to add to --allowed-hosts"
            " (logged once per name)",
            host,
            request.remote_ip,
            extra={"event": "host_refused", "host": host, "remote": request.remote_ip},
        )


class HostRefusedHandler(ServiceHandlerMixin, RequestHandler):
    """Every request whose Host :class:`AllowedHosts` did not match: 403 with a JSON error."""

    def initialize(self, hosts: AllowedHosts) -> None:
        self.hosts = hosts

    def prepare(self) -> None:
        self.hosts.refused(self.request)
        self.set_status(403)
        self.finish(  # a dict: written as JSON
            {
                "error": {
                    "code": "host_not_allowed",
                    "message": "this server only answers requests addressed to a loopback name"
                    " (localhost, 127.0.0.1, [::1]) or to a name in its --allowed-hosts",
                }
            }
        )

"""Operations endpoints: ``/metrics`` (Prometheus) and ``/readyz`` (readiness).

``/healthz`` (in ``health.py``) says the process is up; ``/readyz`` says it
should be sent traffic: the store answers and the server is not shutting
down. See ``docs/operations.md``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tornado.web import RequestHandler

from metrics import CONTENT_TYPE
from storage import StoreUnavailable

from .base import ServiceHandlerMixin

if TYPE_CHECKING:
    from server import Service

#: How long ``/readyz`` waits for the store's ping. Short: a load balancer's
#: probe must not hang on a store that does not answer.
READY_TIMEOUT_SECONDS = 2.0


class MetricsHandler(ServiceHandlerMixin, RequestHandler):
    def initialize(self, service: Service) -> None:
        self.service = service

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.write(self.service.metrics.render())


class ReadyHandler(ServiceHandlerMixin, RequestHandler):
    def initialize(self, service: Service) -> None:
        self.service = service

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        service = self.service
        if service.shutting_down:
            self._not_ready("shutting_down", "the server is shutting down")
            return
        try:
            await asyncio.wait_for(service.store.ping(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            self._not_ready(
                "store_unavailable", f"the store did not answer within {READY_TIMEOUT_SECONDS:g}s"
            )
            return
        except StoreUnavailable:
            # The store's own message is not echoed: it may name hosts or users.
            self._not_ready("store_unavailable", "the store is unavailable")
            return
        if service.shutting_down:  # began while the store was pinged
            self._not_ready("shutting_down", "the server is shutting down")
            return
        self.write({"status": "ready"})

    def _not_ready(self, reason: str, message: str) -> None:
        self.set_status(503)
        self.write({"status": "unavailable", "reason": reason, "message": message})

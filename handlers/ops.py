"""Operations endpoints: ``/metrics`` (Prometheus) and ``/readyz`` (readiness).

``/healthz`` (in ``health.py``) says the process is up; ``/readyz`` says it
should be sent traffic: the store answers and the server is not shutting
down. See ``docs/operations.md``.
"""

from __future__ import annotations

from tornado.web import RequestHandler

from .base import ServiceHandlerMixin

#: How long ``/readyz`` waits for the store's ping. Short: a load balancer's
#: probe must not hang on a store that does not answer.
READY_TIMEOUT_SECONDS = 2.0


class MetricsHandler(ServiceHandlerMixin, RequestHandler):
    def get(self) -> None:
        content_type, body = self.service.health.render_metrics()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.write(body)


class ReadyHandler(ServiceHandlerMixin, RequestHandler):
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        not_ready = await self.service.health.readiness(READY_TIMEOUT_SECONDS)
        if not_ready is None:
            self.write({"status": "ready"})
            return
        reason, message = not_ready
        self.set_status(503)
        self.write({"status": "unavailable", "reason": reason, "message": message})

"""Liveness: ``/healthz`` answers 200 while the process is up."""

from __future__ import annotations

from tornado.web import RequestHandler

from .base import ServiceHandlerMixin


class HealthHandler(ServiceHandlerMixin, RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})

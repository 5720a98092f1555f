"""Whether this process should be sent traffic (``/readyz``), and its metrics (``/metrics``)."""

from __future__ import annotations

import asyncio

from metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from metrics import Metrics
from storage import Store, StoreUnavailable

from .sessions import SessionCore


class Health:
    """Readiness and metrics of one server process."""

    def __init__(self, store: Store, sessions: SessionCore, metrics: Metrics) -> None:
        self.store = store
        self.sessions = sessions
        self.metrics = metrics

    async def readiness(self, timeout: float) -> tuple[str, str] | None:
        """Why this process cannot take connections now, as (reason, message), or None when it can.

        The store must answer a ping within ``timeout`` seconds (``/readyz``).
        """
        if self.sessions.shutting_down:
            return "shutting_down", "the server is shutting down"
        try:
            await asyncio.wait_for(self.store.ping(), timeout)
        except TimeoutError:
            return "store_unavailable", f"the store did not answer within {timeout:g}s"
        except StoreUnavailable:
            # The store's own message is not echoed: it may name hosts or users.
            return "store_unavailable", "the store is unavailable"
        if self.sessions.shutting_down:  # began while the store was pinged
            return "shutting_down", "the server is shutting down"
        return None

    def render_metrics(self) -> tuple[str, bytes]:
        """Every metric in the Prometheus text format (``/metrics``), with its content type."""
        return METRICS_CONTENT_TYPE, self.metrics.render()

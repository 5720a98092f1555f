"""The service's Prometheus metrics, served at ``/metrics``.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (tests run several
services in one process, and the global registry would mix them up).

The hot path stays cheap: heartbeats, counted once per message, are plain
ints in a dict (``heartbeats["accepted"] += 1``), read at scrape time; a
prometheus-client counter takes a lock on every increment, which at one
per heartbeat was a measurable share of the reply's cost. Every other
labelled child is bound once here, so counting it never allocates a label.
Values the service already knows (open connections, sessions waiting to be
written, credit given) are read at scrape time through callbacks too.
Everything is counted and scraped on the IOLoop's thread.

This module knows only strings and numbers; the service passes its end
reasons and refusal codes in, so metrics stay independent of ``tracking/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

#: Heartbeat outcomes, the ``status`` label of ``study_time_heartbeats_total``.
HEARTBEAT_STATUSES = ("accepted", "too_frequent", "invalid_timestamp", "expired")

#: Checkpoint latency buckets in seconds: a local SQLite batch takes
#: milliseconds, a remote store tens of them, an outage up to its timeout.
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The xAPI outbox's gauges (docs/xapi.md), set after each delivery round.
XAPI_GAUGES = {
    "study_time_xapi_outbox_waiting": "Statements in the outbox not yet taken by the LRS (all processes).",
    "study_time_xapi_outbox_oldest_age_seconds": "Age of the oldest waiting statement (0: none).",
    "study_time_xapi_outbox_failed": "Statements the LRS refused for good (400, 409), kept in the outbox.",
}

__all__ = ["CONTENT_TYPE", "Metrics"]

#: The text format ``render`` produces (0.0.4 is what every Prometheus version
#: scrapes; every name here is a classic one, so nothing needs 1.0.0).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The ``*_created`` series (when each counter was created) double the output and
# say nothing a scraper needs; Prometheus derives resets from the values.
disable_created_metrics()


class _CallbackCounter(Collector):
    """A counter whose value a callback reads at scrape time (the count lives elsewhere).

    With ``label``, ``read`` returns a mapping of label value -> count instead.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        read: Callable[[], float] | Callable[[], Mapping[str, float]],
        label: str | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read
        self._label = label

    def collect(self) -> Iterator[Metric]:
        if self._label is None:
            yield CounterMetricFamily(self._name, self._documentation, value=self._read())
            return
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for label_value, count in self._read().items():  # type: ignore[union-attr]
            family.add_metric([label_value], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation)


class Metrics:
    """Every metric of one service, with its children bound in advance."""

    def __init__(self, *, end_reasons: Iterable[str], refusal_codes: Iterable[str], worker: int = 0) -> None:
        """``worker`` is this process's index under ``--processes`` (0 for a single process)."""
        self.registry = registry = CollectorRegistry()
        # The standard process_* metrics (open file descriptors bound the
        # connections a process can hold; memory, CPU, start time).
        ProcessCollector(registry=registry)
        # Which process answered a scrape: with --processes=N they share a port.
        Info(
            "study_time_process",
            "the server process that answered: its index under --processes and its pid",
            registry=registry,
        ).info({"worker": str(worker), "pid": str(os.getpid())})
        #: status -> heartbeats so far; ``heartbeats["accepted"] += 1`` on the hot path.
        self.heartbeats: dict[str, int] = dict.fromkeys(HEARTBEAT_STATUSES, 0)
        registry.register(
            _CallbackCounter(
                "study_time_heartbeats",
                "Heartbeats received, by outcome (accepted earns credit; the others do not).",
                lambda: self.heartbeats,
                label="status",
            )
        )
        self._sessions_closed = Counter(
            "study_time_sessions_closed",
            "Sessions ended, by end reason (the end_reason of the study record).",
            ["reason"],
            registry=registry,
        )
        self.sessions_closed = {reason: self._sessions_closed.labels(reason) for reason in end_reasons}
        self._refusals = Counter(
            "study_time_connections_refused",
            "Connections refused before a session opened, with an error message and a close code,"
            " by error code (invalid_params 4400, unauthorized 4401, forbidden 4403,"
            " too_many_sessions 4430, too_many_connections 4431, store_unavailable 1013,"
            " server_shutdown 1001). A session's end is counted in study_time_sessions_closed.",
            ["reason"],
            registry=registry,
        )
        self.refusals = {code: self._refusals.labels(code) for code in refusal_codes}
        self._define_store_metrics(registry)
        self._gauges: dict[str, Gauge] = {}
        self._gauge(
            "study_time_open_connections", "WebSocket connections open now (with or without a session)."
        )
        self._gauge("study_time_live_sessions", "Sessions open now (at most one per learner and course).")
        self._gauge(
            "study_time_unsaved_sessions",
            "Sessions whose latest credit is not yet in the store (waiting for the next checkpoint).",
        )

    def _define_store_metrics(self, registry: CollectorRegistry) -> None:
        """The checkpoints' metrics, and the slow readers dropped."""
        self.checkpoint_seconds = Histogram(
            "study_time_checkpoint_seconds",
            "Time to write one batch of session snapshots to the store (successful or not).",
            buckets=CHECKPOINT_BUCKETS,
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "study_time_checkpoint_failures",
            "Checkpoints the store did not take (the snapshots are kept and retried).",
            registry=registry,
        )
        self.checkpoint_sessions = Counter(
            "study_time_checkpoint_sessions",
            "Session snapshots written to the store by successful checkpoints.",
            registry=registry,
        )
        self.slow_readers = Counter(
            "study_time_slow_reader_drops",
            "Connections dropped because the client stopped reading its replies.",
            registry=registry,
        )

    def watch(
        self,
        *,
        open_connections: Callable[[], float],
        live_sessions: Callable[[], float],
        unsaved_sessions: Callable[[], float],
        credited_seconds: Callable[[], float],
    ) -> None:
        """Read these values from the service at scrape time."""
        self._gauges["study_time_open_connections"].set_function(open_connections)
        self._gauges["study_time_live_sessions"].set_function(live_sessions)
        self._gauges["study_time_unsaved_sessions"].set_function(unsaved_sessions)
        self.registry.register(
            _CallbackCounter(
                "study_time_credited_seconds",
                "Seconds of study time credited to learners by this process, fractions included.",
                credited_seconds,
            )
        )

    def session_closed(self, reason: str) -> None:
        child = self.sessions_closed.get(reason)
        if child is None:  # a reason added after start-up: bind it once
            child = self.sessions_closed[reason] = self._sessions_closed.labels(reason)
        child.inc()

    def refused(self, code: str) -> None:
        """Count a connection refused with error ``code`` before it had a session."""
        child = self.refusals.get(code)
        if child is None:  # a code added after start-up: bind it once
            child = self.refusals[code] = self._refusals.labels(code)
        child.inc()

    def checkpoint(self, sessions: int, seconds: float, ok: bool) -> None:
        """Record one write of ``sessions`` snapshots to the store that took ``seconds``."""
        self.checkpoint_seconds.observe(seconds)
        if ok:
            self.checkpoint_sessions.inc(sessions)
        else:
            self.checkpoint_failures.inc()

    def enable_xapi(self) -> None:
        """Define the xAPI outbox's metrics (only a server forwarding statements has them: docs/xapi.md)."""
        for name, documentation in XAPI_GAUGES.items():
            self._gauge(name, documentation)
        self._xapi_deliveries = Counter(
            "study_time_xapi_deliveries",
            "Statement deliveries to the LRS, by outcome: stored (2xx: new, or already there),"
            " retry (network error, 5xx, 401/403/429...: tried again later), refused (400, 409: given up).",
            ["outcome"],
            registry=self.registry,
        )
        self.xapi_deliveries = {o: self._xapi_deliveries.labels(o) for o in ("stored", "retry", "refused")}

    def xapi_outbox(self, waiting: int, oldest_age: float, failed: int) -> None:
        """The outbox as last read: undelivered entries, the oldest one's age in seconds, given-up entries."""
        values = (waiting, oldest_age, failed)
        for name, value in zip(XAPI_GAUGES, values, strict=True):
            self._gauges[name].set(value)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def _gauge(self, name: str, documentation: str) -> None:
        self._gauges[name] = Gauge(name, documentation, registry=self.registry)

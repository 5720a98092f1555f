"""The writer's monotonic clock, moved by hand (wall time and the event loop's clock stay real)."""

from __future__ import annotations

import time
from types import SimpleNamespace


class WriterClock:
    """Replaces ``storage.writer``'s ``time`` so that checkpoint intervals pass at once."""

    def __init__(self, monkeypatch) -> None:
        import storage.writer

        self.now = 1000.0
        fake = SimpleNamespace(monotonic=lambda: self.now, time=time.time, perf_counter=time.perf_counter)
        monkeypatch.setattr(storage.writer, "time", fake)

    def advance(self, seconds: float) -> None:
        self.now += seconds

"""Server clocks.

Only the server's clock counts (counting rule 1). Credit is measured in wall
clock seconds because study records carry wall clock times that reporting
compares across sessions and processes; to keep a wall clock step (NTP, a
manual change) from ever producing negative credit, :class:`WallClock` never
runs backwards within a process.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that returns the current server time in seconds since the epoch."""

    def __call__(self) -> float: ...


class WallClock:
    """``time.time()`` that never goes backwards."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self) -> float:
        now = time.time()
        if now < self._last:
            return self._last
        self._last = now
        return now

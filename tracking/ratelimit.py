"""A token bucket for the flood limit (close 4429)."""

from __future__ import annotations


class TokenBucket:
    """Allows ``burst`` messages at once and ``rate`` per second sustained.

    A rate of 0 disables the limit (benchmarks that heartbeat in a closed loop).
    """

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        if self.rate <= 0:
            return True
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

"""A clock the tests move by hand, for the counting rules and the server's timers."""

from __future__ import annotations

from fractions import Fraction


class FakeClock:
    """A clock the tests move by hand.

    Its position is an exact fraction, so a thousand ``advance(10.6)`` calls
    land exactly 10,600 s later instead of drifting by float error.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = Fraction(str(start))

    def __call__(self) -> float:
        return float(self._now)

    def advance(self, seconds: float) -> float:
        self._now += Fraction(str(seconds))
        return float(self._now)

"""How a session's credit is divided between a range and between calendar days. Pure.

The rule (docs/reports.md, "Splitting rule"): a session's credit
``seconds`` is spread uniformly over its credited interval
``[started_at, credited_until]``. The credit inside any part ``[lo, hi)`` is
``seconds * overlap / (credited_until - started_at)``. Under the counting
rules every gap between heartbeats is shorter than the heartbeat timeout and
fully credited, so ``seconds`` equals the interval's length and the rule is
exact: each wall clock second of the session lands on the day it happened.

All report arithmetic is in integer **microseconds**, so sums are exact and
do not depend on the order rows arrive in. A session cut into parts is cut
at cumulative points (``cut(t)``, rounded), so its parts always add up to
exactly its whole credit: a session across midnight contributes the same
total to a daily breakdown as to a learner's total.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MICROS = 1_000_000


def micros(seconds: float) -> int:
    """Seconds as whole microseconds, rounded half up (as ``CAST(x * 1e6 + 0.5 AS INTEGER)`` in SQLite)."""
    return math.floor(seconds * MICROS + 0.5)


def whole_seconds(total_micros: int) -> int:
    """The integer ``seconds`` of a report: whole seconds, fractions dropped (as ``studyTime`` does)."""
    return total_micros // MICROS


def exact_seconds(total_micros: int) -> float:
    """The ``secondsExact`` of a report: seconds with the fraction, to the microsecond."""
    return total_micros / MICROS


def _cut(total: int, started: float, until: float, t: float) -> int:
    """The credit (microseconds) earned from ``started`` up to instant ``t``."""
    if t <= started:
        return 0
    if t >= until:
        return total
    return math.floor(total * (t - started) / (until - started) + 0.5)


def credit_in(started: float, until: float, seconds: float, lo: float, hi: float) -> int:
    """The credit (microseconds) of a session that falls in ``[lo, hi)``.

    A session with no length (opened and never credited) has no credit to
    place; it belongs to the part its start falls in.
    """
    total = micros(seconds)
    if started >= lo and until <= hi:
        return total
    if until <= started:
        return total if lo <= started < hi else 0
    return _cut(total, started, until, min(max(hi, started), until)) - _cut(
        total, started, until, min(max(lo, started), until)
    )


def in_window(started: float, until: float, lo: float, hi: float) -> bool:
    """Whether a session belongs to the range ``[lo, hi)``: it overlaps it, or starts in it."""
    return started < hi and (until > lo or started >= lo)


class DayGrid:
    """Local midnights of one IANA time zone, for splitting sessions into calendar days.

    Midnights are computed with ``zoneinfo`` (so days of 23 or 25 hours
    around DST changes are right) and cached in a sorted list, so finding a
    session's day is a binary search, not a time zone conversion.
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._dates: list[date] = []
        self._starts: list[float] = []  # epoch seconds of each date's local midnight

    def day_start(self, day: date) -> float:
        """The instant a local calendar day begins (the first instant after a DST gap at midnight)."""
        return datetime.combine(day, time(0), self.tz).timestamp()

    def date_of(self, instant: float) -> date:
        return datetime.fromtimestamp(instant, self.tz).date()

    def _cover(self, lo: float, hi: float) -> None:
        """Make the cache hold every midnight from the day of ``lo`` to the one after ``hi``."""
        if self._starts and self._starts[0] <= lo and self._starts[-1] > hi:
            return
        first = self.date_of(lo)
        last = self.date_of(hi) + timedelta(days=1)
        if self._dates:
            first = min(first, self._dates[0])
            last = max(last, self._dates[-1])
        days = (last - first).days + 1
        self._dates = [first + timedelta(days=i) for i in range(days)]
        self._starts = [self.day_start(d) for d in self._dates]

    def split(
        self, started: float, until: float, seconds: float, lo: float = -math.inf, hi: float = math.inf
    ) -> Iterator[tuple[date, int]]:
        """The credit (microseconds) of a session on each local day, within ``[lo, hi)``.

        The parts are cut at the same cumulative points as :func:`credit_in`,
        so they add up to exactly ``credit_in(started, until, seconds, lo, hi)``.
        """
        if not in_window(started, until, lo, hi):
            return
        first = max(started, lo)
        last = min(until, hi)
        self._cover(first, max(first, last))
        starts = self._starts
        i = bisect.bisect_right(starts, first) - 1
        total = micros(seconds)
        if last <= started or i + 1 >= len(starts) or last <= starts[i + 1]:
            # The common case: the session (or its part in range) lies within one day.
            yield self._dates[i], credit_in(started, until, seconds, lo, hi)
            return
        done = _cut(total, started, until, first)
        while i < len(starts) - 1 and starts[i] < last:
            end = min(starts[i + 1], last)
            upto = _cut(total, started, until, end)
            yield self._dates[i], upto - done
            done = upto
            i += 1


def spread_whole_seconds(parts: list[int]) -> list[int]:
    """Integer seconds for consecutive parts (days) whose sum is the whole seconds of their total.

    Each part gets the whole seconds its running total crosses, so a column
    of daily ``seconds`` adds up to exactly the integer total a learner's
    report (and ``studyTime``) shows for the same range.
    """
    result, running, shown = [], 0, 0
    for part in parts:
        running += part
        whole = whole_seconds(running)
        result.append(whole - shown)
        shown = whole
    return result

"""``Session.study_time``: the whole seconds a learner is shown, exact near every whole second.

It rounds to the microsecond only within a microsecond below a whole second
(the slow part, done on every reply); everywhere it must show what
``int(round(total, 6))`` shows: a float sum of credits that add up to a
whole second shows that second, and a total a little more than a
microsecond short of it does not.
"""

from __future__ import annotations

import pytest

from tracking.session import Session


def shown(base: float, seconds: float) -> int:
    return Session("s", "u", "c", 0.0, 0.0, base_seconds=base, seconds=seconds).study_time


@pytest.mark.parametrize(
    ("base", "seconds", "expected"),
    [
        (0.0, 0.0, 0),
        (0.0, 120.0, 120),
        (100.0, 20.0, 120),
        (0.0, sum([0.1] * 1200), 120),  # 119.99999999999... : a float sum that adds up to 120
        (60.0, 59.99999999997, 120),
        (0.0, 0.9999996, 1),  # within half a microsecond of 1: rounds up
        (0.0, 0.9999994, 0),  # rounds to 0.999999: still short of 1
        (0.0, 0.9999989, 0),  # more than a microsecond short
        (119.0, 0.9999996, 120),
        (119.0, 0.999998, 119),
        (0.0, 119.5, 119),
        (0.0, 120.000001, 120),
        (1_000_000.0, 0.99999996, 1_000_001),
        (1_000_000.0, 0.25, 1_000_000),
    ],
)
def test_the_shown_total_is_the_whole_seconds_of_the_total_rounded_to_the_microsecond(
    base, seconds, expected
):
    assert shown(base, seconds) == expected == int(round(base + seconds, 6))


def test_every_fraction_near_a_whole_second_shows_what_rounding_to_the_microsecond_shows():
    for whole in (-2, -1, 0, 1, 59, 3_599, 86_399, 10_000_000):
        for tenths_of_a_microsecond in range(-40, 41):
            total = whole + 1 + tenths_of_a_microsecond * 1e-7
            assert shown(0.0, total) == int(round(total, 6)), total
            assert shown(float(whole), total - whole) == int(round(float(whole) + (total - whole), 6)), total

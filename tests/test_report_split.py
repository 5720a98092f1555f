"""The report arithmetic of reports/split.py and reports/params.py: pure, no I/O."""

from __future__ import annotations

import itertools
import math
from datetime import date
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports import params
from reports.params import ParameterError
from reports.split import DayGrid, credit_in, in_window, micros, spread_whole_seconds, whole_seconds
from tests.support.records import at

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def test_a_session_across_midnight_is_split_exactly_between_the_two_days():
    start, end = at("2024-01-31T23:30:00+08:00"), at("2024-02-01T00:45:00+08:00")
    parts = dict(DayGrid(SHANGHAI).split(start, end, end - start))
    assert parts == {date(2024, 1, 31): 1800 * 10**6, date(2024, 2, 1): 2700 * 10**6}


def test_the_same_session_is_one_day_in_utc():
    start, end = at("2024-01-31T23:30:00+08:00"), at("2024-02-01T00:45:00+08:00")
    assert dict(DayGrid(ZoneInfo("UTC")).split(start, end, end - start)) == {date(2024, 1, 31): 4500 * 10**6}


def test_a_range_boundary_cuts_a_session_exactly():
    start = at("2024-01-31T10:00:00+00:00")
    # 100 s of credit, from = 25 s in, to = 60 s in.
    assert credit_in(start, start + 100, 100.0, start + 25, start + 60) == 35 * 10**6
    assert credit_in(start, start + 100, 100.0, start + 100, start + 200) == 0
    assert credit_in(start, start + 100, 100.0, start - 5, start + 100) == 100 * 10**6


def test_credit_is_spread_uniformly_when_it_is_less_than_the_interval():
    # A recovered session can hold less credit than its interval: it is spread evenly.
    assert credit_in(0.0, 100.0, 50.0, 0.0, 50.0) == 25 * 10**6


def test_days_around_a_dst_change_have_their_real_length():
    grid = DayGrid(NEW_YORK)
    start = at("2024-03-10T00:00:00-05:00")  # 23-hour day: clocks jump 02:00 -> 03:00
    end = at("2024-03-11T00:00:00-04:00")
    assert end - start == 23 * 3600
    assert dict(grid.split(start, end, end - start)) == {date(2024, 3, 10): 23 * 3600 * 10**6}
    autumn = at("2024-11-03T00:00:00-04:00")  # 25-hour day
    parts = dict(grid.split(autumn, autumn + 26 * 3600, 26 * 3600.0))
    assert parts == {date(2024, 11, 3): 25 * 3600 * 10**6, date(2024, 11, 4): 3600 * 10**6}


def test_a_zero_length_session_has_no_credit_and_belongs_to_its_start():
    assert credit_in(10.0, 10.0, 0.0, 0.0, 20.0) == 0
    assert list(DayGrid(SHANGHAI).split(10.0, 10.0, 0.0)) == [(date(1970, 1, 1), 0)]


def test_whole_seconds_of_days_add_up_to_the_whole_seconds_of_the_total():
    parts = [1_700_000, 1_700_000, 1_700_000]  # 1.7 s each, 5.1 s in all
    spread = spread_whole_seconds(parts)
    assert spread == [1, 2, 2]
    assert sum(spread) == whole_seconds(sum(parts)) == 5


sessions = st.tuples(
    st.floats(min_value=1.6e9, max_value=1.8e9),
    st.floats(min_value=0, max_value=5 * 86400),
    st.floats(min_value=0, max_value=1),
)
zones = st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])


@given(
    sessions,
    st.floats(min_value=-2 * 86400, max_value=6 * 86400),
    st.floats(min_value=0, max_value=4 * 86400),
    zones,
)
def test_daily_parts_always_add_up_to_the_credit_in_range(session, lo_offset, width, zone):
    start, length, fill = session
    end = start + length
    seconds = length * fill
    lo, hi = start + lo_offset, start + lo_offset + width
    parts = list(DayGrid(ZoneInfo(zone)).split(start, end, seconds, lo, hi))
    assert sum(p for _, p in parts) == credit_in(start, end, seconds, lo, hi)
    assert all(p >= 0 for _, p in parts)
    assert [d for d, _ in parts] == sorted({d for d, _ in parts})
    whole = sum(p for _, p in DayGrid(ZoneInfo(zone)).split(start, end, seconds))
    assert whole == micros(seconds)


@given(sessions, st.lists(st.floats(min_value=-86400, max_value=6 * 86400), min_size=1, max_size=6))
def test_cutting_a_session_at_any_points_loses_and_adds_nothing(session, cuts):
    start, length, fill = session
    points = [-math.inf, *sorted(start + c for c in cuts), math.inf]
    parts = [credit_in(start, start + length, length * fill, a, b) for a, b in itertools.pairwise(points)]
    assert sum(parts) == micros(length * fill)


def test_parameters_are_validated_and_name_themselves():
    utc = ZoneInfo("UTC")
    for call, name in [
        (lambda: params.timezone("Mars/Olympus"), "tz"),
        (lambda: params.timezone("../../etc/passwd"), "tz"),
        (lambda: params.window("2024-02-01", "2024-01-01", utc), "from"),
        (lambda: params.window("yesterday", None, utc), "from"),
        (lambda: params.window(None, "2024-13-01", utc), "to"),
        (lambda: params.page("1001", None), "limit"),
        (lambda: params.page("0", None), "limit"),
        (lambda: params.page("-1", None), "limit"),
        (lambda: params.page(None, "x"), "offset"),
        (lambda: params.identifier("a b", "userId"), "userId"),
        (lambda: params.identifier("x" * 129, "courseId"), "courseId"),
        (lambda: params.output_format("xml", None), "format"),
    ]:
        with pytest.raises(ParameterError) as caught:
            call()
        assert caught.value.parameter == name


def test_dates_are_local_midnights_and_a_date_in_to_is_inclusive():
    window = params.window("2024-01-01", "2024-01-31", SHANGHAI)
    assert window.start == at("2024-01-01T00:00:00+08:00")
    assert window.end == at("2024-02-01T00:00:00+08:00")
    assert params.window("2024-01-01T08:00:00Z", None, SHANGHAI).start == at("2024-01-01T16:00:00+08:00")
    assert params.window("2024-01-01T08:00:00", None, SHANGHAI).start == at("2024-01-01T08:00:00+08:00")
    assert params.output_format(None, "text/csv, */*") == "csv"
    assert params.output_format("json", "text/csv") == "json"


def test_a_daily_breakdown_names_only_the_days_inside_the_range():
    # A session of five Shanghai days, asked for the middle three: no zero rows
    # for the days before `from` or from `to` on.
    grid = DayGrid(SHANGHAI)
    start = at("2024-03-01T12:00:00+08:00")
    end = start + 4 * 86400
    lo, hi = at("2024-03-02T00:00:00+08:00"), at("2024-03-05T00:00:00+08:00")
    parts = list(grid.split(start, end, end - start, lo, hi))
    assert parts == [
        (date(2024, 3, 2), 86400 * 10**6),
        (date(2024, 3, 3), 86400 * 10**6),
        (date(2024, 3, 4), 86400 * 10**6),
    ]


def test_a_range_ending_at_a_midnight_leaves_out_the_day_that_starts_there():
    grid = DayGrid(SHANGHAI)
    start = at("2024-03-01T22:00:00+08:00")
    midnight = at("2024-03-02T00:00:00+08:00")
    assert list(grid.split(start, start + 4 * 3600, 4 * 3600.0, start, midnight)) == [
        (date(2024, 3, 1), 2 * 3600 * 10**6)
    ]


def test_a_session_ending_exactly_at_from_is_not_counted_in_a_range_starting_there():
    grid = DayGrid(SHANGHAI)
    start = at("2024-03-01T23:00:00+08:00")
    lo = at("2024-03-02T00:00:00+08:00")
    assert not in_window(start, lo, lo, lo + 86400)
    assert list(grid.split(start, lo, 3600.0, lo, lo + 86400)) == []
    assert credit_in(start, lo, 3600.0, lo, lo + 86400) == 0
    # ...while one starting exactly at `to` belongs to the next range, not this one.
    assert not in_window(lo + 86400, lo + 90000, lo, lo + 86400)
    assert in_window(lo, lo + 10, lo, lo + 86400)


def test_daily_whole_seconds_go_to_the_day_that_completes_each_second():
    assert spread_whole_seconds([999_999, 1]) == [0, 1]
    assert spread_whole_seconds([1_000_000, 999_999, 1]) == [1, 0, 1]

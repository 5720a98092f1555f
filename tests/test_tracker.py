"""The counting rules, on the pure tracker with a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.clock import FakeClock
from tests.support.stored import live_session, live_sessions
from tracking.session import EndReason
from tracking.tracker import Tracker, Verdict

TIMEOUT = 60.0
MIN_INTERVAL = 10.0


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def tracker():
    return Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=MIN_INTERVAL)


def open_session(tracker, clock, user="u1", course="c1", sid=None):
    session, replaced = tracker.open(user, course, clock(), session_id=sid or f"{user}-{course}-{clock()}")
    return session, replaced


def test_credit_runs_from_the_opening_through_each_accepted_heartbeat(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert session.seconds == 30
    clock.advance(30)
    tracker.heartbeat(session, clock())
    assert session.seconds == 60
    assert session.heartbeats == 2
    assert session.study_time == 60


def test_the_first_heartbeat_is_never_too_frequent(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(0.5)
    assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert session.seconds == 0.5


def test_a_heartbeat_sooner_than_the_minimum_interval_earns_nothing(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    clock.advance(9.9)
    assert tracker.heartbeat(session, clock()) is Verdict.TOO_FREQUENT
    assert session.seconds == 30
    assert session.heartbeats == 1
    # The refused heartbeat does not move the reference point either.
    clock.advance(0.1)
    assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert session.seconds == 40


def test_a_refused_heartbeat_does_not_postpone_the_timeout(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    clock.advance(25)
    tracker.heartbeat(session, clock())  # accepted at 55
    clock.advance(5)
    assert tracker.heartbeat(session, clock()) is Verdict.TOO_FREQUENT
    clock.advance(55)  # 60s after the accepted one at 55
    assert tracker.expire(clock()) == [session]


def test_silence_ends_in_a_timeout_that_earns_nothing_after_the_last_heartbeat(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(20)
    tracker.heartbeat(session, clock())
    clock.advance(59.9)
    assert tracker.expire(clock()) == []
    clock.advance(0.1)
    assert tracker.expire(clock()) == [session]
    assert session.end_reason is EndReason.TIMEOUT
    assert session.seconds == 20
    assert session.credited_until == session.started_at + 20
    assert session.ended_at == session.started_at + 80
    assert live_session(tracker, "u1", "c1") is None


def test_a_heartbeat_arriving_after_the_deadline_times_the_session_out(tracker, clock):
    # The sweep runs every second or so; a heartbeat that beats the sweep to a
    # session already past its deadline must not resurrect it.
    session, _ = open_session(tracker, clock)
    clock.advance(10)
    tracker.heartbeat(session, clock())
    clock.advance(60.5)
    assert tracker.heartbeat(session, clock()) is Verdict.EXPIRED
    assert session.end_reason is EndReason.TIMEOUT
    assert session.seconds == 10


def test_a_clean_close_earns_the_tail_and_a_lost_connection_does_not(tracker, clock):
    clean, _ = open_session(tracker, clock, user="clean")
    lost, _ = open_session(tracker, clock, user="lost")
    clock.advance(30)
    tracker.heartbeat(clean, clock())
    tracker.heartbeat(lost, clock())
    clock.advance(12.25)
    tracker.end(clean, clock(), EndReason.CLIENT_CLOSED)
    tracker.end(lost, clock(), EndReason.CONNECTION_LOST)
    assert clean.seconds == 42.25
    assert lost.seconds == 30


@pytest.mark.parametrize("reason", [EndReason.CLIENT_CLOSED, EndReason.REPLACED, EndReason.SERVER_SHUTDOWN])
def test_reasons_that_earn_the_tail(tracker, clock, reason):
    session, _ = open_session(tracker, clock)
    clock.advance(45)
    tracker.end(session, clock(), reason)
    assert session.seconds == 45
    assert session.end_reason is reason


@pytest.mark.parametrize("reason", [EndReason.CONNECTION_LOST, EndReason.TIMEOUT, EndReason.RATE_LIMITED])
def test_reasons_that_forfeit_the_tail(tracker, clock, reason):
    session, _ = open_session(tracker, clock)
    clock.advance(45)
    tracker.end(session, clock(), reason)
    assert session.seconds == 0


def test_a_clean_close_after_the_deadline_is_a_timeout(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(75)
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    assert session.end_reason is EndReason.TIMEOUT
    assert session.seconds == 0


def test_a_new_connection_replaces_the_old_and_no_second_is_earned_twice(tracker, clock):
    old, _ = open_session(tracker, clock, sid="old")
    clock.advance(30)
    tracker.heartbeat(old, clock())
    clock.advance(7)
    new, replaced = open_session(tracker, clock, sid="new")
    assert replaced is old
    assert old.end_reason is EndReason.REPLACED
    assert old.seconds == 37
    assert old.credited_until == new.started_at  # rule 3: the intervals only touch
    assert live_session(tracker, "u1", "c1") is new
    clock.advance(30)
    tracker.heartbeat(new, clock())
    assert old.seconds + new.seconds == 67  # exactly the wall time since the first opening
    with pytest.raises(ValueError):
        tracker.heartbeat(old, clock())


def test_other_courses_and_users_are_independent(tracker, clock):
    a, _ = open_session(tracker, clock, "u1", "c1")
    b, replaced_b = open_session(tracker, clock, "u1", "c2")
    c, replaced_c = open_session(tracker, clock, "u2", "c1")
    assert replaced_b is None and replaced_c is None
    assert len(tracker) == 3
    assert a.is_open and b.is_open and c.is_open
    # By default (no --overlap-policy) each course earns its own time, even side by side.
    clock.advance(30)
    for session in (a, b, c):
        assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert (a.seconds, b.seconds, c.seconds) == (30, 30, 30)


def test_credit_can_be_capped_at_an_earlier_instant(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.end(session, clock(), EndReason.REPLACED, credit_until=session.started_at + 12)
    assert session.seconds == 12


def test_fractions_are_carried_not_rounded_away(tracker, clock):
    session, _ = open_session(tracker, clock)
    for _ in range(200):
        clock.advance(10.6)
        tracker.heartbeat(session, clock())
    # Rounding each credit down would give 2000s, rounding to nearest 2200s.
    assert session.seconds == pytest.approx(2120)
    assert session.study_time == 2120


def test_study_time_includes_earlier_sessions_and_never_decreases(tracker, clock):
    session, _ = open_session(tracker, clock)
    session.base_seconds = 99.7
    seen = [session.study_time]
    for gap in (10, 10.2, 10.05, 59, 11):
        clock.advance(gap)
        tracker.heartbeat(session, clock())
        seen.append(session.study_time)
    assert seen == sorted(seen)
    assert seen[0] == 99
    assert seen[-1] == int(99.7 + 100.25)


def test_a_clock_stepping_backwards_never_takes_credit_away(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    clock.advance(-3600)  # the wall clock is set back an hour
    assert tracker.heartbeat(session, clock()) is Verdict.TOO_FREQUENT
    assert session.seconds == 30
    clock.advance(3600 + 15)
    assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert session.seconds == 45


def test_the_sweep_visits_only_expired_sessions_in_deadline_order(tracker, clock):
    sessions = []
    for i in range(1000):
        session, _ = open_session(tracker, clock, user=f"u{i}")
        sessions.append(session)
        clock.advance(0.01)
    # Early sessions heartbeat, which moves their deadlines behind the later ones.
    # t = 30: the first half heartbeats, moving its deadlines to t = 90,
    # behind the second half's (opened at t = 5..10, deadlines t = 65..70).
    clock.advance(20)
    for session in sessions[:500]:
        tracker.heartbeat(session, clock())
    clock.advance(37.5)  # t = 67.5: part of the second half has expired
    expired = tracker.expire(clock())
    assert 0 < len(expired) < 500
    assert all(s in sessions[500:] for s in expired)
    assert all(s.is_open for s in sessions[:500])
    clock.advance(12.5)  # t = 80: all of the second half, none of the first
    tracker.expire(clock())
    assert all(not s.is_open for s in sessions[500:])
    assert all(s.is_open for s in sessions[:500])


def test_the_sweep_stops_at_the_first_unexpired_session(tracker, clock):
    # Cost proportional to the expiring sessions: with none expiring, the
    # sweep looks at one session only, however many are live.
    for i in range(10_000):
        open_session(tracker, clock, user=f"u{i}")
    visited = 0
    original = tracker._by_deadline.values

    class CountingView:
        def __iter__(self_inner):
            nonlocal visited
            for session in original():
                visited += 1
                yield session

    tracker._by_deadline.values = CountingView  # type: ignore[method-assign]
    assert tracker.expire(clock()) == []
    assert visited == 1


def test_the_per_learner_cap_counts_live_sessions_across_courses_and_not_replacements(clock):
    tracker = Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=MIN_INTERVAL, max_sessions_per_user=2)
    first, _ = open_session(tracker, clock, course="c1")
    open_session(tracker, clock, course="c2")
    assert live_sessions(tracker, "u1") == 2
    assert not tracker.admits("u1", "c3")
    assert tracker.admits("u2", "c3")  # another learner has slots of their own
    assert tracker.admits("u1", "c1")  # a replacement ends the old session: no extra slot
    clock.advance(1)
    _, replaced = open_session(tracker, clock, course="c1")
    assert replaced is first and live_sessions(tracker, "u1") == 2
    # Every way a session leaves frees its slot: an end, a timeout, a discarded opening.
    tracker.end(live_session(tracker, "u1", "c2"), clock(), EndReason.CLIENT_CLOSED)
    assert live_sessions(tracker, "u1") == 1 and tracker.admits("u1", "c3")
    opening, _ = open_session(tracker, clock, course="c3")
    tracker.discard(opening)
    assert live_sessions(tracker, "u1") == 1
    clock.advance(TIMEOUT)
    assert len(tracker.expire(clock())) == 1
    assert live_sessions(tracker, "u1") == 0 and len(tracker) == 0


def test_a_cap_of_zero_means_no_cap(clock):
    tracker = Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=MIN_INTERVAL, max_sessions_per_user=0)
    for n in range(50):
        assert tracker.admits("u1", f"c{n}")
        open_session(tracker, clock, course=f"c{n}")
    assert live_sessions(tracker, "u1") == 50


def test_a_heartbeat_arriving_exactly_at_the_timeout_deadline_ends_the_session_without_credit(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(20)
    tracker.heartbeat(session, clock())
    clock.advance(TIMEOUT)  # exactly one timeout after the last accepted heartbeat
    assert tracker.heartbeat(session, clock()) is Verdict.EXPIRED
    assert session.end_reason is EndReason.TIMEOUT
    assert session.seconds == 20
    assert session.ended_at == session.started_at + 20 + TIMEOUT


def test_a_heartbeat_just_before_the_timeout_deadline_is_credited_in_full(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(TIMEOUT - 0.001)
    assert tracker.heartbeat(session, clock()) is Verdict.ACCEPTED
    assert session.seconds == pytest.approx(TIMEOUT - 0.001)
    assert session.is_open


def test_the_sweep_ends_a_session_exactly_at_its_deadline(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(TIMEOUT - 0.001)
    assert tracker.expire(clock()) == []
    clock.advance(0.001)
    assert tracker.expire(clock()) == [session]
    assert session.seconds == 0


def test_a_clean_close_exactly_at_the_timeout_deadline_earns_no_tail(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    clock.advance(TIMEOUT)
    assert tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    assert session.end_reason is EndReason.TIMEOUT
    assert session.seconds == 30


def test_a_clean_close_just_before_the_timeout_deadline_earns_the_whole_tail(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(TIMEOUT - 0.5)
    assert tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    assert session.end_reason is EndReason.CLIENT_CLOSED
    assert session.seconds == TIMEOUT - 0.5


@pytest.mark.parametrize("timeout", [0, -1, 0.0])
def test_a_heartbeat_timeout_that_is_not_positive_is_refused(timeout):
    with pytest.raises(ValueError) as refused:
        Tracker(heartbeat_timeout=timeout, min_heartbeat_interval=0)
    assert str(refused.value) == "heartbeat_timeout must be positive"


def test_ending_a_session_that_already_ended_says_so_and_changes_nothing(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    assert tracker.end(session, clock(), EndReason.CLIENT_CLOSED) is True
    ended = session.record()
    clock.advance(20)
    assert tracker.end(session, clock(), EndReason.SERVER_SHUTDOWN) is False
    assert session.record() == ended
    assert tracker.credited_seconds == 30


def test_the_credited_seconds_metric_counts_what_sessions_earned_and_nothing_capped_away(tracker, clock):
    first, _ = open_session(tracker, clock, user="u1")
    second, _ = open_session(tracker, clock, user="u2")
    clock.advance(30)
    tracker.heartbeat(first, clock())
    tracker.heartbeat(second, clock())
    assert tracker.credited_seconds == 60
    clock.advance(5)
    # Taken over elsewhere 2 s after the heartbeat: the 3 s after that never count.
    tracker.end(first, clock(), EndReason.REPLACED, credit_until=first.started_at + 32)
    assert first.seconds == 32
    assert tracker.credited_seconds == 62


def test_capping_at_or_after_the_credited_instant_changes_nothing(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    before = session.record()
    assert tracker.cap(session, session.credited_until) is False
    assert tracker.cap(session, session.credited_until + 10) is False
    assert session.record() == before  # nothing to write again


def test_capping_takes_back_even_a_fraction_of_a_second(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    assert tracker.cap(session, session.started_at + 29.5) is True
    assert session.seconds == 29.5
    assert tracker.cap(session, session.started_at - 10) is True  # never before the start
    assert session.seconds == 0
    assert session.credited_until == session.started_at


def test_a_session_whose_opening_failed_ends_as_lost_with_no_credit(tracker, clock):
    session, _ = open_session(tracker, clock)
    clock.advance(5)
    tracker.discard(session)
    assert session.end_reason is EndReason.CONNECTION_LOST
    assert (session.ended_at, session.seconds) == (session.started_at, 0)
    assert live_session(tracker, "u1", "c1") is None and len(tracker) == 0
    clock.advance(TIMEOUT)
    assert tracker.expire(clock()) == []  # no longer swept either


def test_discarding_a_session_replaced_while_it_was_opening_keeps_the_replacement(tracker, clock):
    # The opening reads the learner's total from the store; a newer connection
    # may replace the session meanwhile, and then the store read fails.
    opening, _ = open_session(tracker, clock, sid="opening")
    clock.advance(1)
    newer, replaced = open_session(tracker, clock, sid="newer")
    assert replaced is opening
    tracker.discard(opening)
    assert opening.end_reason is EndReason.REPLACED
    assert live_session(tracker, "u1", "c1") is newer and newer.is_open


def test_a_tracker_built_without_a_cap_lets_a_learner_study_any_number_of_courses(clock):
    tracker = Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=MIN_INTERVAL)
    for n in range(5):
        assert tracker.admits("u1", f"c{n}")
        open_session(tracker, clock, course=f"c{n}")
    assert live_sessions(tracker, "u1") == 5


@given(
    st.one_of(
        st.floats(min_value=-10.0, max_value=1e9, allow_nan=False),
        # Within a few microseconds of a whole second, where rounding carries.
        st.builds(lambda n, d: n + d, st.integers(0, 10**8), st.floats(-5e-6, 5e-6)),
    ),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
def test_study_time_is_the_total_rounded_to_the_microsecond_then_floored(base, seconds):
    session, _ = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0).open("u", "c", 0.0, session_id="s")
    session.base_seconds, session.seconds = base, seconds
    assert session.study_time == int(round(base + seconds, 6))

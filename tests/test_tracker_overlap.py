"""Rule 7 (``--overlap-policy=one-course``) on the pure tracker, across processes too: fake clock, no I/O.

The cross-process part: each credit is reported to ``credit_listener`` with the
exact wall time it covers, and what another process had already credited is
taken back (``take_back``): from an open session's next credits, so the
``studyTime`` its client sees never decreases, and at once from an ended one,
never below nothing. Fast: part of the mutation run (``[tool.mutmut]``).
"""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock
from tracking.session import EndReason, Session
from tracking.tracker import Tracker, Verdict

TIMEOUT = 60.0


def one_course() -> Tracker:
    return Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=10, one_course_at_a_time=True)


def listening(tracking: Tracker) -> list[tuple[Session, float, float]]:
    """What the tracker tells its credit listener, in order."""
    heard: list[tuple[Session, float, float]] = []
    tracking.credit_listener = lambda session, start, until: heard.append((session, start, until))
    return heard


def test_by_default_each_course_of_a_learner_earns_its_own_time():
    clock = FakeClock()
    tracking = Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=10)
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    heard = listening(tracking)
    clock.advance(30)
    tracking.heartbeat(a, clock())
    tracking.heartbeat(b, clock())
    assert (a.seconds, b.seconds) == (30, 30)
    assert heard == [], "only the one-course policy shares the learner's time across processes"


def test_two_courses_share_the_learners_wall_time_slice_by_slice():
    clock = FakeClock()
    tracking = one_course()
    t0 = clock()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    clock.advance(30)
    tracking.heartbeat(a, clock())  # [t0, t0+30] to A
    tracking.heartbeat(b, clock())  # the same instant: nothing left for B
    assert (a.seconds, b.seconds) == (30, 0)
    assert b.credited_until == t0 + 30, "B's deadline still runs from its own heartbeat"
    clock.advance(20)
    tracking.heartbeat(b, clock())  # [t0+30, t0+50] to B
    clock.advance(20)
    tracking.heartbeat(a, clock())  # A's gap [t0+30, t0+70] minus B's part up to t0+50
    assert (a.seconds, b.seconds) == (50, 20)
    assert tracking.credited_seconds == 70 == clock() - t0, "the learner earned exactly the wall time"
    # An end capped at an earlier instant than the learner's latest credit does not move it back.
    tracking.end(b, clock(), EndReason.CLIENT_CLOSED, credit_until=t0 + 60)
    clock.advance(15)
    tracking.heartbeat(a, clock())
    assert (a.seconds, b.seconds) == (65, 20)


def test_each_credit_is_reported_with_exactly_the_wall_time_it_covers():
    clock = FakeClock()
    tracking = one_course()
    heard = listening(tracking)
    t0 = clock()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    other, _ = tracking.open("u2", "A", clock(), session_id="other")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    clock.advance(0.5)
    tracking.heartbeat(b, clock())  # half a second after A's: B's gap minus A's credit
    tracking.heartbeat(other, clock())  # another learner: their own time
    clock.advance(1)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)  # a one-second tail
    tracking.end(b, clock(), EndReason.CLIENT_CLOSED)  # nothing left: not reported
    assert heard == [
        (a, t0, t0 + 30),
        (b, t0 + 30, t0 + 30.5),
        (other, t0, t0 + 30.5),
        (a, t0 + 30.5, t0 + 31.5),
    ]
    assert (a.seconds, b.seconds, other.seconds) == (31, 0.5, 30.5)


def test_credit_taken_back_from_an_open_session_is_paid_from_its_next_credits_so_study_time_never_drops():
    clock = FakeClock()
    tracking = one_course()
    heard = listening(tracking)
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    assert (a.seconds, a.study_time) == (30, 30)
    assert tracking.take_back(a, 45) == 0, "an open session loses nothing now"
    assert (a.seconds, a.study_time, a.credited_until) == (30, 30, clock())
    shown = []
    for _ in range(4):
        clock.advance(20)
        assert tracking.heartbeat(a, clock()) is Verdict.ACCEPTED
        shown.append(a.seconds)
    # 20 s paid, then 20 more (5 s left over), then 20 s earned again.
    assert shown == [30, 30, 45, 65]
    assert tracking.credited_seconds == 65
    assert a.credited_until == clock(), "its deadline runs from its heartbeats as before"
    assert len(heard) == 5, "each credit is still reported whole: the learner's instant is this course's"
    clock.advance(10)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)
    assert a.seconds == 75, "the debt was paid: the tail is earned in full"


def test_several_take_backs_add_up_and_a_take_back_of_nothing_takes_nothing():
    clock = FakeClock()
    tracking = one_course()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    assert tracking.take_back(a, 0) == 0
    assert tracking.take_back(a, -5) == 0, "a negative take-back gives nothing either"
    assert tracking.take_back(a, 0.5) == 0
    assert tracking.take_back(a, 2) == 0
    clock.advance(30)
    tracking.heartbeat(a, clock())
    assert a.seconds == 57.5
    clock.advance(30)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)
    assert a.seconds == 87.5
    rev = a.rev
    assert tracking.take_back(a, 0) == 0 and tracking.take_back(a, -1) == 0
    assert (a.seconds, a.rev) == (87.5, rev), "nothing taken: the snapshot does not change"


def test_an_ended_session_pays_what_its_credits_had_not_at_its_end_never_below_nothing():
    clock = FakeClock()
    tracking = one_course()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    tracking.take_back(a, 10)
    clock.advance(5)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)  # the tail pays 5, the end takes the other 5
    assert a.seconds == 25 and tracking.credited_seconds == 25
    # Nothing is kept for a session that has ended, nor for a learner with none left.
    assert (tracking._owed, tracking._user_until) == ({}, {})

    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    clock.advance(30)
    tracking.heartbeat(b, clock())
    tracking.take_back(b, 100)
    clock.advance(30)
    tracking.end(b, clock(), EndReason.CONNECTION_LOST)  # no tail: the end pays what it can
    assert b.seconds == 0, "at most all it has"
    assert tracking.credited_seconds == 25
    assert b.credited_until == clock() - 30, "the time was studied, only credited elsewhere"


def test_an_ended_session_loses_what_is_taken_back_at_once_at_most_all_it_has():
    clock = FakeClock()
    tracking = one_course()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    clock.advance(10)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)
    until, rev = a.credited_until, a.rev
    assert tracking.take_back(a, 1.2345678) == 1.2345678
    assert a.seconds == 38.765432, "kept to the microsecond (rule 6)"
    assert a.rev > rev, "its corrected snapshot replaces the stored one"
    assert tracking.credited_seconds == pytest.approx(40 - 1.2345678)
    assert a.credited_until == until
    assert tracking.take_back(a, 0.5) == 0.5 and a.seconds == 38.265432
    assert tracking.take_back(a, 100) == 38.265432 and a.seconds == 0
    assert tracking.credited_seconds == pytest.approx(0, abs=1e-6)
    rev = a.rev
    assert tracking.take_back(a, 5) == 0 and (a.seconds, a.rev) == (0, rev), "nothing left to lose"


def test_a_session_that_never_started_leaves_nothing_behind():
    clock = FakeClock()
    tracking = one_course()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    tracking.take_back(a, 5)
    tracking.discard(a)
    assert (tracking._owed, tracking._user_until, len(tracking)) == ({}, {}, 0)
    assert (a.end_reason, a.seconds) == (EndReason.CONNECTION_LOST, 0)

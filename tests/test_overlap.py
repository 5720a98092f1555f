"""Rule 7, overlapping courses (``--overlap-policy``): the pure tracker with a fake clock."""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock
from tracking.session import EndReason
from tracking.tracker import Tracker

TIMEOUT = 60.0


def tracker(one_course: bool) -> Tracker:
    return Tracker(heartbeat_timeout=TIMEOUT, min_heartbeat_interval=10, one_course_at_a_time=one_course)


def side_by_side(tracking: Tracker, minutes: int = 10) -> tuple[float, float]:
    """Two courses of one learner open at once, heartbeating every 30 s, 15 s apart; closed cleanly."""
    clock = FakeClock()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(15)
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    for _ in range(minutes * 2):
        clock.advance(15)
        tracking.heartbeat(a, clock())
        clock.advance(15)
        tracking.heartbeat(b, clock())
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)
    tracking.end(b, clock(), EndReason.CLIENT_CLOSED)
    return a.seconds, b.seconds


def test_by_default_each_course_earns_its_own_time():
    assert side_by_side(tracker(False)) == (615, 600)


def test_one_course_at_a_time_shares_the_wall_time_between_courses_open_side_by_side():
    a, b = side_by_side(tracker(True))
    assert a + b == 615, "the learner earned more than the wall time"
    # Each heartbeat closes a 15 s slice since the other course's: the first 15 s were A's alone.
    assert (a, b) == (315, 300)


def test_the_slice_between_two_heartbeats_of_different_courses_goes_to_the_later_one():
    clock = FakeClock()
    tracking = tracker(True)
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    clock.advance(20)
    b, _ = tracking.open("u1", "B", clock(), session_id="b")  # opening credits nothing
    clock.advance(10)
    tracking.heartbeat(a, clock())  # t=30: A's gap [0, 30], nobody credited yet
    assert (a.seconds, b.seconds) == (30, 0)
    clock.advance(15)
    tracking.heartbeat(b, clock())  # t=45: B's gap [20, 45] minus [20, 30] credited to A
    assert (a.seconds, b.seconds) == (30, 15)
    clock.advance(30)
    tracking.heartbeat(b, clock())  # t=75: B alone
    assert (a.seconds, b.seconds) == (30, 45)
    clock.advance(10)
    tracking.heartbeat(a, clock())  # t=85: A's gap [30, 85] minus what B had up to 75
    assert (a.seconds, b.seconds) == (40, 45)
    assert a.credited_until == clock(), "the deadline still runs from A's own heartbeat"


def test_a_clean_close_earns_only_the_tail_no_other_course_has_earned():
    clock = FakeClock()
    tracking = tracker(True)
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    clock.advance(30)
    tracking.heartbeat(b, clock())
    clock.advance(10)
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)  # tail [0, 40] minus [0, 30]
    assert (a.seconds, b.seconds) == (10, 30)


def test_one_course_changes_nothing_for_a_single_course_or_between_learners():
    for one_course in (False, True):
        clock = FakeClock()
        tracking = tracker(one_course)
        mine, _ = tracking.open("u1", "A", clock(), session_id="m")
        theirs, _ = tracking.open("u2", "A", clock(), session_id="t")
        for _ in range(4):
            clock.advance(30)
            tracking.heartbeat(mine, clock())
            tracking.heartbeat(theirs, clock())
        assert (mine.seconds, theirs.seconds) == (120, 120)


def test_the_learner_is_forgotten_when_their_last_session_ends():
    clock = FakeClock()
    tracking = tracker(True)
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)
    assert tracking._user_until == {"u1": clock()}
    tracking.end(b, clock(), EndReason.CLIENT_CLOSED)
    assert tracking._user_until == {}


def test_each_credit_is_reported_with_the_wall_time_it_covers_and_can_be_taken_back():
    """Rule 7 across processes: the coordinator hears of each credit and may take part of it back."""
    clock = FakeClock()
    tracking = tracker(True)
    heard = []
    tracking.credit_listener = lambda session, start, until: heard.append((session.course_id, start, until))
    t0 = clock()
    a, _ = tracking.open("u1", "A", clock(), session_id="a")
    b, _ = tracking.open("u1", "B", clock(), session_id="b")
    clock.advance(30)
    tracking.heartbeat(a, clock())
    clock.advance(10)
    tracking.heartbeat(b, clock())
    tracking.end(a, clock(), EndReason.CLIENT_CLOSED)  # nothing left to credit: not reported
    assert heard == [("A", t0, t0 + 30), ("B", t0 + 30, t0 + 40)]
    # Open: paid from its next credits, so what its client is answered never decreases.
    assert tracking.take_back(b, 4) == 0 and b.seconds == 10
    clock.advance(30)
    tracking.heartbeat(b, clock())
    assert b.seconds == 36 and b.credited_until == t0 + 70, "its deadline runs from its heartbeat"
    assert tracking.take_back(b, 50) == 0
    clock.advance(10)
    tracking.end(b, clock(), EndReason.CLIENT_CLOSED)  # the tail pays 10, the end the rest it has
    assert b.seconds == 0, "never below nothing"
    assert tracking.take_back(b, 1) == 0, "nothing left"
    b.seconds = 5
    assert tracking.take_back(b, 2) == 2 and b.seconds == 3, "ended: at once"
    assert len(heard) == 4  # B's heartbeat and tail too
    each = tracker(False)
    each.credit_listener = lambda *credit: heard.append(credit)
    c, _ = each.open("u1", "A", clock(), session_id="c")
    clock.advance(30)
    each.heartbeat(c, clock())
    assert len(heard) == 4, "the default policy reports nothing"


def test_an_unknown_policy_is_refused_naming_the_setting():
    import settings

    with pytest.raises(settings.SettingsError, match="--overlap-policy"):
        settings.load(["--overlap-policy=newest"])


def test_one_course_runs_on_mongodb_with_several_processes_but_sqlite_still_serves_one(tmp_path):
    import settings
    from tests.support.helpers import run_server

    for args in (["--store=mongodb://127.0.0.1:1/st", "--processes=4"], ["--store=mongodb://127.0.0.1:1/st"]):
        assert settings.load(["--overlap-policy=one-course", *args]).overlap_policy == "one-course"
    # SQLite serves one process whatever the policy: refused before binding, naming --processes.
    result = run_server(
        "--port=0", "--processes=2", "--overlap-policy=one-course", f"--store=sqlite:///{tmp_path}/x.db"
    )
    assert result.returncode == 2
    assert (
        "error: invalid --processes" in result.stderr and "SQLite store serves one process" in result.stderr
    )


# Through a real server process (single process, SQLite).


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("policy", ["each-course", "one-course"])
async def test_two_courses_open_at_once_through_a_real_server(policy, tmp_path):
    import asyncio
    import time

    from tests.support.helpers import Client, ServerProcess
    from tests.support.stored import study_records

    url = f"sqlite:///{tmp_path}/study_time.db"
    args = (
        f"--store={url}",
        "--heartbeat-interval=0.4",
        "--heartbeat-timeout=2",
        "--min-heartbeat-interval=0.05",
    )
    with ServerProcess(*args, f"--overlap-policy={policy}") as server:
        started = time.monotonic()
        first = await Client.connect(server.url, "u1", "A")
        await first.connected()
        second = await Client.connect(server.url, "u1", "B")
        await second.connected()
        for _ in range(8):
            await asyncio.sleep(0.1)
            await first.heartbeat()
            await asyncio.sleep(0.1)
            await second.heartbeat()
        await first.close()
        await second.close()
        wall = time.monotonic() - started
        assert server.terminate() == 0  # a graceful stop: every ended session written
    records = await study_records(url, user_id="u1")
    assert len(records) == 2 and all(r.end_reason == "client_closed" for r in records)
    total = sum(r.seconds for r in records)
    if policy == "each-course":
        assert total > 1.5 * 1.6, "each course earns its own time: about twice the wall time"
    else:
        assert total <= wall, f"{total}s credited in {wall}s of wall time"
        assert total >= 1.6 - 0.1
        assert all(r.seconds > 0.5 for r in records), "both courses had their slices"


# Which policy recorded a day: the daily report's overlapPolicy.


def test_policy_periods_are_the_changes_clipped_to_the_range():
    from zoneinfo import ZoneInfo

    from reports.params import Window
    from reports.responses import policy_periods

    utc = ZoneInfo("UTC")
    day = 86400.0
    log = [(10 * day, "one-course"), (12 * day, "each-course")]
    assert policy_periods([], Window(), utc) == [{"policy": "each-course", "from": None, "to": None}]
    assert policy_periods(log, Window(9 * day, 11 * day), utc) == [
        {"policy": "each-course", "from": "1970-01-10T00:00:00+00:00", "to": "1970-01-11T00:00:00+00:00"},
        {"policy": "one-course", "from": "1970-01-11T00:00:00+00:00", "to": "1970-01-12T00:00:00+00:00"},
    ]
    assert policy_periods(log, Window(10.5 * day, 11 * day), utc) == [
        {"policy": "one-course", "from": "1970-01-11T12:00:00+00:00", "to": "1970-01-12T00:00:00+00:00"}
    ]
    assert policy_periods(log, Window(13 * day, 14 * day), utc)[0]["policy"] == "each-course"


def test_the_daily_report_says_which_policy_recorded_the_days(store_url):
    """On each store (SQLite's overlap_policy_log, MongoDB's study_policy_log)."""
    import json
    import subprocess
    import sys

    from tests.support.helpers import ROOT, ServerProcess

    url = store_url
    with ServerProcess(f"--store={url}") as server:  # the default: nothing logged
        assert server.terminate() == 0
    started = __import__("time").time()
    with ServerProcess(f"--store={url}", "--overlap-policy=one-course") as server:
        assert server.terminate() == 0
    with ServerProcess(f"--store={url}", "--overlap-policy=one-course") as server:  # unchanged: no entry
        assert server.terminate() == 0

    def daily() -> dict:
        done = subprocess.run(
            [
                sys.executable,
                "server.py",
                "report",
                "daily",
                "--user=u1",
                "--format=json",
                f"--store={url}",
                "--from=2000-01-01",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    periods = daily()["overlapPolicy"]
    assert [p["policy"] for p in periods] == ["each-course", "one-course"]
    assert periods[0]["from"] == "2000-01-01T00:00:00+00:00"
    switched = __import__("datetime").datetime.fromisoformat(periods[1]["from"]).timestamp()
    assert started <= switched <= started + 30
    assert periods[0]["to"] == periods[1]["from"] and periods[1]["to"] is None

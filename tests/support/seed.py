"""A school's worth of study records for the dashboard tests and screenshots.

``seed(db_path)`` writes, straight into a SQLite store, a course of 30
learners studying over the last 60 days (some sessions crossing midnight in
Asia/Shanghai, one still open), a second course some of them also take and a
third with a few learners, the same records every time for a given ``now``.
Some sessions ended in the browser client's pauses (``idle``, ``page_hidden``),
and the store says ``--overlap-policy=one-course`` has recorded since 09:30
twelve days ago (:func:`one_course_since`): start the server on it with that
policy, or the server logs its own from its start.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from storage.backends import backend_for
from storage.sqlite import policylog
from tests.support.records import record
from tracking.session import SessionRecord

SHANGHAI = ZoneInfo("Asia/Shanghai")
COURSE = "algebra-101"
OTHER = "physics-201"
THIRD = "chem-110"
LEARNERS = [f"learner{n:02d}" for n in range(1, 31)]
DAYS = 60
END_REASONS = ["client_closed"] * 4 + ["idle", "page_hidden", "connection_lost", "timeout", "replaced"]
#: Days before today that --overlap-policy=one-course began (at 09:30 in Asia/Shanghai).
ONE_COURSE_DAYS = 12


def session(
    user: str, course: str, start: float, seconds: float, *, ended: bool = True, reason: str = "client_closed"
):
    # A timed-out session ends a heartbeat timeout (60 s) after its last credit; others when credit stops.
    end = start + seconds + (60 if reason == "timeout" else 0)
    return record(
        user,
        course,
        started=start,
        seconds=seconds,
        ended=ended,
        heartbeats=max(1, int(seconds // 30)),
        rev=3,
        end_reason=reason if ended else None,
        ended_at=end if ended else None,
        user_agent="seed",
        last_client_time=None,
    )


def one_course_since(now: float) -> float:
    """When the seeded store's ``one-course`` policy began: 09:30 :data:`ONE_COURSE_DAYS` days ago."""
    today = datetime.fromtimestamp(now, SHANGHAI).replace(hour=9, minute=30, second=0, microsecond=0)
    return (today - timedelta(days=ONE_COURSE_DAYS)).timestamp()


def records(now: float | None = None) -> list[SessionRecord]:
    """The records: ``now`` (default the current time) is the end of the 60 days."""
    now = time.time() if now is None else now
    rng = random.Random(13)
    today = datetime.fromtimestamp(now, SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    found: list[SessionRecord] = []
    for i, user in enumerate(LEARNERS):
        keen = 0.25 + 0.7 * (len(LEARNERS) - i) / len(LEARNERS)  # learner01 studies most
        courses = (
            [(COURSE, 1.0)] + ([(OTHER, 0.5)] if i % 3 == 0 else []) + ([(THIRD, 0.3)] if i % 7 == 0 else [])
        )
        for back in range(DAYS, 0, -1):
            day = today - timedelta(days=back)
            for course, share in courses:
                if rng.random() > keen * share:
                    continue
                if rng.random() < 0.15:
                    start = day.replace(hour=23, minute=rng.randrange(0, 50))  # across midnight
                else:
                    start = day.replace(
                        hour=rng.choice([8, 10, 14, 16, 19, 20, 21]), minute=rng.randrange(60)
                    )
                seconds = rng.randrange(10, 90) * 60 + rng.random()
                found.append(
                    session(user, course, start.timestamp(), seconds, reason=rng.choice(END_REASONS))
                )
    # Today: learner01 studied this morning, and a session left open (a server starting on the store
    # closes it as server_lost, keeping its last checkpoint: open sessions in tests come from live sockets).
    morning = today.replace(hour=7).timestamp()
    if morning + 1800 < now - 600:
        found.append(session(LEARNERS[0], COURSE, morning, 1500.5))
    found.append(session(LEARNERS[0], COURSE, now - 1200, 1080.0, ended=False))
    return [r for r in one_at_a_time(found, one_course_since(now)) if r.credited_until <= now]


def one_at_a_time(found: list[SessionRecord], since: float) -> list[SessionRecord]:
    """``found`` without the sessions after ``since`` that overlap an earlier one of the same learner.

    Under ``one-course`` a learner's courses share the wall time, so a
    learner's credited sessions from then on do not overlap.
    """
    busy: dict[str, float] = {}  # credited until, per learner
    kept = []
    for r in sorted(found, key=lambda r: (r.started_at, r.session_id)):
        if r.started_at >= since and r.started_at < busy.get(r.user_id, 0.0):
            continue
        busy[r.user_id] = max(busy.get(r.user_id, 0.0), r.credited_until)
        kept.append(r)
    return kept


def seed(db_path: str, now: float | None = None) -> list[SessionRecord]:
    """Write :func:`records` and the change of policy into the SQLite store at ``db_path``; return them."""
    now = time.time() if now is None else now
    made = records(now)

    async def write() -> None:
        store = backend_for(f"sqlite:///{db_path}").store()
        await store.open()
        try:
            await store.save(made)
        finally:
            await store.close()
        await policylog.record(db_path, "one-course", one_course_since(now))

    # In a thread of its own: the caller may be running an event loop (pytest's, Playwright's).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(write())).result()
    return made


if __name__ == "__main__":  # python -m tests.support.seed PATH: a database to try the dashboards on
    import sys

    print(len(seed(sys.argv[1])), "records")

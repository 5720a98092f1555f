"""Totals read at an opening through the writer, on the path that awaits the store.

SQLite reads a total at once on the IOLoop (``Store.total_seconds_now``);
MongoDB cannot, so the writer awaits ``Store.total_seconds`` under its lock
and adds the credit still waiting to be written. Here the real SQLite store
is read that way, so the awaited path is checked without a MongoDB server:
each learner sees exactly their own stored credit plus their own waiting
credit, for their own course.
"""

from __future__ import annotations

import asyncio

import pytest

from storage.sqlite.store import SQLiteStore
from storage.writer import SessionWriter
from tests.support.clock import FakeClock
from tests.support.faulty import FaultyStore
from tracking.tracker import Tracker


class AwaitedTotals(FaultyStore):
    """The real SQLite store, whose totals are only awaited, as MongoDB's are."""

    def total_seconds_now(self, user_id: str, course_id: str) -> float | None:
        return None


@pytest.fixture
def awaited(io_loop, tmp_path):
    store = SQLiteStore(f"{tmp_path}/study_time.db")
    io_loop.run_sync(store.open)
    yield AwaitedTotals(store)
    io_loop.run_sync(store.close)


@pytest.mark.gen_test(timeout=10)
async def test_an_awaited_total_is_the_learners_stored_credit_plus_their_waiting_credit(awaited):
    clock = FakeClock()
    tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=10)
    writer = SessionWriter(awaited)
    a = tracker.open("u1", "c1", clock(), session_id="a")[0]
    b = tracker.open("u2", "c1", clock(), session_id="b")[0]
    c = tracker.open("u1", "c2", clock(), session_id="c")[0]

    def credit(seconds: float, *sessions) -> None:
        clock.advance(seconds)
        for session in sessions:
            tracker.heartbeat(session, clock())
            writer.changed(session)

    credit(30, a, b, c)  # a 30, b 30, c 30: written
    assert await writer.flush()
    credit(20, a, b)  # a 50, b 50: these snapshots wait (the store is down for the flush)
    awaited.down = True
    assert not await writer.flush()
    awaited.down = False
    assert writer.unsaved == 2

    totals = {
        key: await asyncio.wait_for(writer.total_seconds(*key), 5)
        for key in [("u1", "c1"), ("u2", "c1"), ("u1", "c2"), ("u2", "c2")]
    }
    assert totals == {("u1", "c1"): 50, ("u2", "c1"): 50, ("u1", "c2"): 30, ("u2", "c2"): 0}
    assert await writer.flush()  # once written, the same totals, from the store alone
    assert await writer.total_seconds("u1", "c1") == 50
    assert await awaited.total_seconds("u1", "c1") == 50


@pytest.mark.gen_test(timeout=10)
async def test_an_opening_with_nothing_being_written_does_not_wait(awaited):
    """No slice is being written: the total is read at once, never waiting for a write that is not coming."""
    writer = SessionWriter(awaited.store)  # the quick read
    assert await asyncio.wait_for(writer.total_seconds("u1", "c1"), 2) == 0
    writer = SessionWriter(awaited)  # the awaited read
    assert await asyncio.wait_for(writer.total_seconds("u1", "c1"), 2) == 0

"""The write-behind flush of many sessions, which yields to the IOLoop between slices.

Sessions that gain credit or end while a large flush is in progress must
keep their latest state: nothing is lost or overwritten by an older snapshot.
"""

from __future__ import annotations

import asyncio

import pytest

from storage.writer import SNAPSHOT_SLICE, SessionWriter
from tests.support.stored import study_records
from tracking.session import EndReason
from tracking.tracker import Tracker


@pytest.mark.gen_test(timeout=30)
async def test_changes_during_a_sliced_flush_are_kept(store):
    tracker = Tracker(heartbeat_timeout=60.0, min_heartbeat_interval=0.0)
    writer = SessionWriter(store)
    n = 2 * SNAPSHOT_SLICE + 500
    sessions = [tracker.open(f"u{i}", "c", 0.0, session_id=f"s{i}")[0] for i in range(n)]
    for session in sessions:
        writer.changed(session)

    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0)  # the flush has taken its first slice and yielded
    assert not flushing.done()
    late, early = sessions[0], sessions[-1]  # snapshotted after / before this point (taken from the end)
    for session in (early, late):
        tracker.heartbeat(session, 10.0)
        writer.changed(session)
    ended = sessions[1]
    tracker.end(ended, 12.0, EndReason.CLIENT_CLOSED)
    writer.ended(ended)
    assert await flushing
    assert await writer.flush()  # what changed meanwhile goes in the next one

    saved = {r.session_id: r for r in await study_records(store, course_id="c")}
    assert len(saved) == n
    assert saved[early.session_id].seconds == 10.0
    assert saved[late.session_id].seconds == 10.0
    assert saved[ended.session_id].end_reason == "client_closed"
    assert saved[ended.session_id].seconds == 12.0
    assert writer.unsaved == 0

"""The write-behind flush of many sessions, which yields to the IOLoop between slices.

Sessions that gain credit or end while a large flush is in progress must
keep their latest state: nothing is lost or overwritten by an older snapshot.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from storage.writer import DUE_SLOTS, SNAPSHOT_SLICE, SessionWriter
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


def checkpoints_by_flush(writer: SessionWriter) -> list[set[str]]:
    """The ids each successful write held, one set per write (a flush here is one write)."""
    writes: list[set[str]] = []
    writer.saved_listeners.append(lambda batch: writes.append({r.session_id for r in batch}))
    return writes


# A production interval, and one short enough that a coarse schedule (whole
# seconds) would stretch it: each must be kept exactly.
@pytest.mark.parametrize("interval", [60.0, 0.75])  # steps of 5 s and 1/16 s: exact in binary
@pytest.mark.gen_test(timeout=30)
async def test_sessions_opened_together_are_checkpointed_in_even_shares_of_each_interval(
    store, writer_clock, interval
):
    # A class opening its course page at 8:00: without the spread, every one
    # of them would be due in the same flush each interval, and none between.
    tracker = Tracker(heartbeat_timeout=600.0, min_heartbeat_interval=0.0)
    writer = SessionWriter(store, checkpoint_interval=interval)
    writes = checkpoints_by_flush(writer)
    n, flushes_per_interval = 120, 12
    step = interval / flushes_per_interval  # as from a flush every 5 s at a 60 s interval
    sessions = [tracker.open(f"u{i}", "c", 0.0, session_id=f"s{i}")[0] for i in range(n)]
    for session in sessions:
        writer.changed(session)
    assert await writer.flush()
    assert writes.pop() == {s.session_id for s in sessions}  # new sessions at once
    checkpoints = {s.session_id: [0] for s in sessions}  # the flush each checkpoint was written by
    for flush in range(1, 3 * flushes_per_interval + 1):
        writer_clock.advance(step)
        for session in sessions:
            tracker.heartbeat(session, step * flush)
            writer.changed(session)
        assert await writer.flush()
        written = writes.pop() if writes else set()
        # Each flush writes about its share of the class: 10 of 120, not 0 or 120.
        assert 8 <= len(written) <= 12, (flush, len(written))
        for session_id in written:
            checkpoints[session_id].append(flush)
    for session in sessions:
        flushes = checkpoints[session.session_id]
        # The spread only brings the second checkpoint forward; from then on,
        # one an interval, and never more than an interval apart.
        assert [b - a for a, b in itertools.pairwise(flushes[1:])] == [12, 12]
        assert 0 < flushes[1] <= 12
        assert 36 - flushes[-1] < 12
    stored = {r.session_id: r.seconds for r in await study_records(store, course_id="c")}
    assert stored == pytest.approx({sid: step * flushes[-1] for sid, flushes in checkpoints.items()})


# How the writer finds due sessions does not depend on the store; FerretDB
# takes a batch of 5,000 upserts slower than the driver's timeout on a busy machine.
@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.gen_test(timeout=30)
async def test_a_flush_spends_nothing_on_sessions_not_yet_due(store, writer_clock):
    # At a 5 s heartbeat and a 60 s interval, 11 in 12 changed sessions are not
    # due at a flush: looking at each of them held the IOLoop for 7 ms at 19,000.
    tracker = Tracker(heartbeat_timeout=600.0, min_heartbeat_interval=0.0)
    writer = SessionWriter(store, checkpoint_interval=60)
    n = 20 * SNAPSHOT_SLICE
    sessions = [tracker.open(f"u{i}", "c", 0.0, session_id=f"s{i}")[0] for i in range(n)]
    for session in sessions:
        writer.changed(session)
    assert await writer.flush()
    # Filed over the slots of the interval, so a flush looks at a slot's share
    # of them (about n / 64) to find the due ones, not at all of them.
    filed = [ids for ids in writer._due_at.values() if ids]
    assert DUE_SLOTS // 2 <= len(filed) <= DUE_SLOTS + 1
    assert max(map(len, filed)) <= 2 * n // DUE_SLOTS
    # The same instant on the writer's clock: none of them is due again yet.
    for session in sessions:
        tracker.heartbeat(session, 1.0)
        writer.changed(session)

    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0)
    assert flushing.done() and flushing.result()  # in one step: nothing to snapshot
    # What was not due is still waiting, not lost; a forced flush writes it.
    assert writer.unsaved == n and not any(writer.is_saved(s.session_id) for s in sessions)
    assert await writer.flush(force=True) and writer.unsaved == 0
    stored = await study_records(store, course_id="c")
    assert len(stored) == n and {r.seconds for r in stored} == {1.0}

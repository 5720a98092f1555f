"""The write-behind buffer over a real store: batching, totals before a flush, outages."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import re
import time

import pytest

from storage import StoreUnavailable
from storage.writer import SessionWriter
from tests.support.clock import FakeClock
from tests.support.faulty import FaultyStore
from tests.support.helpers import wait_for
from tests.support.records import record
from tests.support.stored import study_records
from tracking.session import EndReason
from tracking.tracker import Tracker


@pytest.fixture
def faulty(store):
    return FaultyStore(store)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def tracker():
    return Tracker(heartbeat_timeout=60, min_heartbeat_interval=10)


@pytest.mark.gen_test
async def test_many_heartbeats_become_one_write_per_session_per_flush(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    sessions = [tracker.open(f"u{i}", "c1", clock(), session_id=f"s{i}")[0] for i in range(50)]
    for _ in range(6):
        clock.advance(10)
        for session in sessions:
            tracker.heartbeat(session, clock())
            writer.changed(session)
    await writer.flush()
    assert (faulty.save_calls, faulty.saved_records) == (1, 50)
    assert await faulty.store.total_seconds("u7", "c1") == 60
    await writer.flush()  # nothing changed: nothing written
    assert faulty.saved_records == 50


@pytest.mark.gen_test
async def test_totals_include_credit_not_yet_flushed(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    first, _ = tracker.open("u1", "c1", clock(), session_id="a")
    writer.changed(first)
    clock.advance(30)
    tracker.heartbeat(first, clock())
    writer.changed(first)
    await writer.flush()  # 30s durable
    clock.advance(12.5)
    tracker.heartbeat(first, clock())
    writer.changed(first)
    clock.advance(3)
    tracker.end(first, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(first)
    # 45.5s credited, 30s of it in the store, 15.5s still here.
    assert await writer.total_seconds("u1", "c1") == pytest.approx(45.5)
    await writer.flush()
    assert await writer.total_seconds("u1", "c1") == pytest.approx(45.5)
    assert await faulty.store.total_seconds("u1", "c1") == pytest.approx(45.5)


@pytest.mark.gen_test
async def test_an_outage_loses_nothing_and_everything_is_written_when_the_store_returns(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty, max_unsaved=3)
    live = [tracker.open(f"u{i}", "c1", clock(), session_id=f"s{i}")[0] for i in range(4)]
    for session in live:
        writer.changed(session)
    await writer.flush()
    faulty.down = True
    clock.advance(20)
    for session in live:
        tracker.heartbeat(session, clock())
        writer.changed(session)
    assert not await writer.flush()
    assert not writer.healthy
    for session in live[:3]:
        clock.advance(1)
        tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
        writer.ended(session)
    assert not await writer.flush()
    assert writer.full  # 4 waiting, bound 3: new connections are refused
    with pytest.raises(StoreUnavailable):
        await writer.total_seconds("u0", "c1")
    faulty.down = False
    assert await writer.flush()
    assert writer.healthy and not writer.full and writer.unsaved == 0
    stored = {r.session_id: r for r in await study_records(faulty.store)}
    assert [stored[f"s{i}"].seconds for i in range(4)] == [21, 22, 23, 20]
    assert [stored[f"s{i}"].end_reason for i in range(4)] == ["client_closed"] * 3 + [None]


@pytest.mark.gen_test
async def test_drain_gives_up_after_its_timeout_when_the_store_stays_down(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    writer.changed(session)
    faulty.down = True
    assert not await writer.drain(0.2)
    faulty.down = False
    assert await writer.drain(1.0)


@pytest.mark.gen_test
async def test_a_large_checkpoint_is_written_in_the_store_s_slices_with_the_collector_paused(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty)
    n = 2_500
    for i in range(n):
        session, _ = tracker.open(f"u{i}", "sliced", clock(), session_id=f"s{i}")
        writer.changed(session)
    assert gc.isenabled()
    faulty.count_snapshots = "sliced"
    assert await writer.flush()
    slice_size = faulty.store.save_slice or n
    assert faulty.save_calls == math.ceil(n / slice_size)
    assert faulty.saved_records == n
    assert faulty.gc_enabled_during_save == [False] * faulty.save_calls
    # Memory: a store that writes in slices is given each as it is taken, so
    # the checkpoint never holds a snapshot of every session at once.
    assert max(faulty.snapshots_alive_during_save) <= slice_size
    assert gc.isenabled()
    assert len(await study_records(faulty.store, course_id="sliced")) == n


# Only SQLite writes a checkpoint in slices (Store.save_slice); MongoDB takes it whole.
@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.gen_test
async def test_a_session_ending_during_a_sliced_checkpoint_is_counted_once(faulty, tracker, clock):
    # A slicing store is written to while the flush is still taking sessions:
    # one that ends meanwhile must not be snapshotted again after its final
    # snapshot landed, or its credit counts twice in the totals read while a
    # later slice waits for the store (found in review: 40 s for 20).
    writer = SessionWriter(faulty)
    n = 2_500
    sessions = [tracker.open(f"u{i}", "c1", clock(), session_id=f"s{i}")[0] for i in range(n)]
    clock.advance(20)
    for session in sessions:
        tracker.heartbeat(session, clock())
        writer.changed(session)
    ending = sessions[::10]

    def during(save_number: int) -> None:
        if save_number == 1:  # the flush has taken one slice at most
            for session in ending:
                tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
                writer.ended(session)
        faulty.down = save_number == 3

    faulty.before_save = during
    await writer.flush()
    faulty.before_save = None
    faulty.down = False
    assert faulty.store.save_slice and writer.unsaved > 0  # a slice failed: some are waiting
    for session in ending:
        assert await writer.total_seconds(session.user_id, "c1") == 20
    assert await writer.flush() and writer.unsaved == 0
    stored = {r.session_id: r for r in await study_records(faulty.store, course_id="c1")}
    assert all(stored[s.session_id].seconds == 20 for s in sessions)
    assert all(stored[s.session_id].end_reason == "client_closed" for s in ending)


@pytest.mark.gen_test
async def test_a_stored_session_capped_after_a_takeover_elsewhere_counts_once_before_the_next_flush(
    faulty, tracker, clock
):
    # Another process took the (user, course) over at t=40, but this one
    # heard of it only after the session had ended here at t=45 and its
    # final snapshot was stored: it is capped and written again. Until that
    # correction lands, the total is the corrected credit, not both copies.
    writer = SessionWriter(faulty)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    writer.changed(session)
    clock.advance(30)
    tracker.heartbeat(session, clock())
    writer.changed(session)
    clock.advance(15)
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(session)
    assert await writer.flush()
    assert await writer.total_seconds("u1", "c1") == 45
    stored = session.seconds
    assert tracker.cap(session, session.started_at + 40)
    writer.corrected(session, stored)
    assert await writer.total_seconds("u1", "c1") == 40
    assert await writer.flush()
    assert await writer.total_seconds("u1", "c1") == 40
    assert await faulty.store.total_seconds("u1", "c1") == 40


@pytest.mark.gen_test
async def test_a_session_corrected_while_its_final_snapshot_is_being_written_counts_once(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    clock.advance(30)
    tracker.heartbeat(session, clock())
    writer.changed(session)
    assert await writer.flush()  # 30 s stored, the session still open
    clock.advance(15)
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(session)
    totals = []

    def correct_during_the_write(save_number: int) -> None:
        if save_number == 2:  # the final snapshot (45 s) is on its way to the store
            stored = session.seconds
            tracker.cap(session, session.started_at + 40)
            writer.corrected(session, stored)

    faulty.before_save = correct_during_the_write
    assert await writer.flush()
    faulty.before_save = None
    totals.append(await writer.total_seconds("u1", "c1"))  # 45 stored, the 40 s correction waiting
    assert await writer.flush()
    totals.append(await writer.total_seconds("u1", "c1"))
    assert totals == [40, 40]
    assert await faulty.store.total_seconds("u1", "c1") == 40


def open_sessions(tracker, clock, writer, n, course="c1", credit=20):
    """``n`` live sessions of ``credit`` seconds each, all changed since the last flush."""
    sessions = [tracker.open(f"u{i}", course, clock(), session_id=f"{course}-s{i}")[0] for i in range(n)]
    clock.advance(credit)
    for session in sessions:
        tracker.heartbeat(session, clock())
        writer.changed(session)
    return sessions


@pytest.mark.gen_test
async def test_a_store_bug_is_logged_with_its_traceback_and_the_credit_waits_for_a_later_flush(
    faulty, tracker, clock, caplog
):
    # Not an outage: the store raised something it should not. The flush must
    # neither crash nor drop the credit; the next flush that works writes it.
    writer = SessionWriter(faulty)
    checkpoints = []
    durations = []

    def checkpoint(sessions: int, seconds: float, ok: bool) -> None:
        checkpoints.append((sessions, ok))
        durations.append(seconds)

    writer.on_checkpoint = checkpoint
    open_sessions(tracker, clock, writer, 2, credit=30)
    faulty.failure = RuntimeError("a bug in the store (test)")
    faulty.down = True
    with caplog.at_level(logging.WARNING, logger="study_time.store"):
        assert await writer.flush() is False
        assert not writer.healthy and writer.unsaved == 2
        faulty.down = False
        assert await writer.flush() is True
    assert writer.healthy and writer.unsaved == 0
    assert checkpoints == [(2, False), (2, True)]
    assert all(0 <= seconds < 60 for seconds in durations)  # the checkpoint-duration metric
    assert [r.seconds for r in await study_records(faulty.store, course_id="c1")] == [30, 30]
    (bug,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert bug.getMessage() == "unexpected error writing 2 sessions"
    assert isinstance(bug.exc_info[1], RuntimeError)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith("store unavailable (a bug in the store (test)): keeping credit in memory")
    assert warnings[1].startswith("store available again after")
    assert warnings[1].endswith("wrote 2 waiting sessions")


@pytest.mark.gen_test
async def test_connections_are_refused_at_exactly_max_unsaved_waiting_and_it_is_logged_once_per_outage(
    faulty, tracker, clock, caplog
):
    writer = SessionWriter(faulty, max_unsaved=3)
    faulty.down = True

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    with caplog.at_level(logging.ERROR, logger="study_time.store"):
        sessions = open_sessions(tracker, clock, writer, 2, course="a")
        assert not await writer.flush()
        assert not writer.full and refusals() == []  # 2 waiting, bound 3: still accepting
        sessions += open_sessions(tracker, clock, writer, 1, course="b")
        assert not await writer.flush()
        assert writer.full  # exactly 3 waiting
        assert not await writer.flush()  # still down: said once, not at every flush
        (refusing,) = refusals()
        match = re.fullmatch(
            r"store unavailable for (\d+)s and 3 sessions are waiting to be written"
            r" \(--max-unsaved-sessions\): refusing new connections until it returns",
            refusing,
        )
        assert match and int(match[1]) < 60
        faulty.down = False
        assert await writer.flush() and not writer.full
        # A later outage that fills up again is reported again.
        faulty.down = True
        clock.advance(10)
        for session in sessions:
            tracker.heartbeat(session, clock())
            writer.changed(session)
        assert not await writer.flush()
        assert writer.full and len(refusals()) == 2


@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.gen_test
async def test_a_sliced_checkpoint_failing_part_way_reports_failure_and_writes_only_the_rest_later(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty)
    n = 2_500
    sessions = open_sessions(tracker, clock, writer, n)
    failed = []

    def second_slice_fails_once(save_number: int) -> None:
        faulty.down = save_number == 2 and not failed
        if faulty.down:
            failed.append(save_number)

    faulty.before_save = second_slice_fails_once
    assert await writer.flush() is False
    slice_size = faulty.store.save_slice
    assert faulty.saved_records == slice_size  # the first slice landed
    assert writer.unsaved == n - slice_size and not writer.healthy
    faulty.down = False
    assert all([await writer.total_seconds(s.user_id, "c1") == 20 for s in sessions[::250]])
    assert await writer.flush() is True
    assert faulty.saved_records == n  # what had landed is not written again
    assert writer.unsaved == 0 and writer.healthy
    stored = await study_records(faulty.store, course_id="c1")
    assert len(stored) == n and all(r.seconds == 20 for r in stored)


@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.parametrize("slicing", [True, False], ids=["sliced", "whole"])
@pytest.mark.gen_test
async def test_a_flush_cancelled_part_way_loses_nothing_and_the_next_one_writes_everything(
    faulty, tracker, clock, slicing
):
    writer = SessionWriter(faulty)
    if not slicing:
        faulty.save_slice = None  # written in one batch, as MongoDB does
    n = 2_500
    open_sessions(tracker, clock, writer, n)
    flushing = asyncio.ensure_future(writer.flush())
    if slicing:
        # Cancelled while the first slice is on its way to the store.
        faulty.before_save = lambda save_number: flushing.cancel()
    else:
        await asyncio.sleep(0)  # the flush has taken its first slice and yielded
        flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    faulty.before_save = None
    assert writer.unsaved == n
    assert await writer.flush() is True
    assert writer.unsaved == 0
    stored = await study_records(faulty.store, course_id="c1")
    assert len(stored) == n and all(r.seconds == 20 for r in stored)


@pytest.mark.gen_test
async def test_drain_at_shutdown_keeps_retrying_through_an_outage_and_writes_when_the_store_returns(
    faulty, tracker, clock, caplog
):
    writer = SessionWriter(faulty)
    open_sessions(tracker, clock, writer, 3)
    attempts = []

    def store_returns_after_three_failures(sessions: int, seconds: float, ok: bool) -> None:
        attempts.append((sessions, ok))
        faulty.down = len(attempts) < 3

    writer.on_checkpoint = store_returns_after_three_failures
    faulty.down = True
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="study_time.store"):
        assert await writer.drain(10.0) is True
    # Retried after 0.05, 0.1 and 0.2 s: shutdown is not held up once the store is back.
    assert time.monotonic() - started < 2.0
    assert attempts == [(3, False), (3, False), (3, False), (3, True)]
    assert writer.unsaved == 0
    assert len(await study_records(faulty.store, course_id="c1")) == 3
    # The operator is told once when the outage starts and once when it ends, with its length.
    down, up = [r.getMessage() for r in caplog.records]
    assert (
        down
        == "store unavailable (outage (test)): keeping credit in memory, 3 sessions waiting to be written"
    )
    match = re.fullmatch(r"store available again after (\d+\.\d)s: wrote 3 waiting sessions", up)
    assert match and float(match[1]) < 2.0


@pytest.mark.gen_test
async def test_a_flush_with_nothing_to_write_succeeds_without_touching_the_store(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    assert await writer.flush() is True
    assert await writer.drain(5.0) is True
    assert faulty.save_calls == 0 and writer.healthy


@pytest.mark.gen_test
async def test_drain_gives_up_within_its_timeout_while_the_store_stays_down(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    open_sessions(tracker, clock, writer, 1)
    attempts = []
    faulty.before_save = attempts.append
    faulty.down = True
    started = time.monotonic()
    assert await writer.drain(0.3) is False
    # It stops retrying before the timeout would be overrun (the last wait would pass it).
    assert time.monotonic() - started < 1.0
    assert writer.unsaved == 1
    # Nor does it hammer the failing store meanwhile: its waits grow (0.05 s, 0.1 s, then
    # 0.2 s would pass the timeout), so at most three tries; fewer on a slow machine.
    assert 1 <= len(attempts) <= 3, attempts


@pytest.mark.gen_test
async def test_drain_also_writes_a_session_that_ends_while_it_is_flushing(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    first, second = open_sessions(tracker, clock, writer, 2)
    tracker.end(first, clock(), EndReason.SERVER_SHUTDOWN)
    writer.ended(first)

    def second_ends_during_the_write(save_number: int) -> None:
        if save_number == 1:
            tracker.end(second, clock(), EndReason.SERVER_SHUTDOWN)
            writer.ended(second)

    faulty.before_save = second_ends_during_the_write
    assert await writer.drain(5.0) is True
    assert writer.unsaved == 0
    stored = {r.session_id: r.end_reason for r in await study_records(faulty.store, course_id="c1")}
    assert stored == {first.session_id: "server_shutdown", second.session_id: "server_shutdown"}


@pytest.mark.gen_test
async def test_a_session_ending_while_another_of_the_same_learner_is_written_stays_in_their_total(
    faulty, tracker, clock
):
    # The learner's first session is being written when their next one ends:
    # the total read before the next flush must include both.
    writer = SessionWriter(faulty)
    (first,) = open_sessions(tracker, clock, writer, 1, credit=30)
    tracker.end(first, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(first)

    def next_session_ends_during_the_write(save_number: int) -> None:
        if save_number == 1:
            second, _ = tracker.open("u0", "c1", clock(), session_id="second")
            clock.advance(15)
            tracker.end(second, clock(), EndReason.CLIENT_CLOSED)
            writer.ended(second)

    faulty.before_save = next_session_ends_during_the_write
    assert await writer.flush()
    faulty.before_save = None
    assert not writer.is_saved("second")
    assert await writer.total_seconds("u0", "c1") == 45
    assert await writer.flush()
    assert await writer.total_seconds("u0", "c1") == 45


@pytest.mark.gen_test
async def test_a_session_is_saved_only_once_nothing_of_it_waits_to_be_written(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    assert writer.is_saved("a")  # nothing asked of the writer yet
    writer.changed(session)
    assert not writer.is_saved("a")
    assert await writer.flush() and writer.is_saved("a")
    clock.advance(20)
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(session)
    assert not writer.is_saved("a")
    faulty.down = True
    assert not await writer.flush()
    assert not writer.is_saved("a")
    faulty.down = False
    assert await writer.flush() and writer.is_saved("a")


@pytest.mark.gen_test
async def test_the_writer_forgets_ended_sessions_once_they_are_written(faulty, tracker, clock):
    # Memory stays as small as the live set: nothing is kept of a session
    # whose final snapshot is in the store.
    writer = SessionWriter(faulty, checkpoint_interval=60)
    sessions = open_sessions(tracker, clock, writer, 10)
    assert await writer.flush()
    for session in sessions[:7]:
        tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
        writer.ended(session)
    assert await writer.flush()
    live = {s.session_id for s in sessions[7:]}
    assert set(writer._durable) == live
    assert set(writer._due_time) == live and set().union(*writer._due_at.values()) == live
    assert (writer._pending, writer._pending_by_key, writer._dirty) == ({}, {}, {})


@pytest.mark.gen_test(timeout=30)
async def test_prompt_writes_of_ended_sessions_are_coalesced_under_churn(store):
    """Sessions ending continuously for about a second: a few writes, each final snapshot once."""
    counting = FaultyStore(store)
    clock = FakeClock()
    tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=1)
    writer = SessionWriter(counting, ended_write_interval=0.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    ended = 0
    for _ in range(60):  # 300 sessions end, five every 10 ms or so
        for _ in range(5):
            session, _ = tracker.open(f"u{ended}", "c1", clock(), session_id=f"s{ended}")
            clock.advance(1)
            tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
            writer.ended(session)
            ended += 1
        await asyncio.sleep(0.01)
    await wait_for(lambda: writer.unsaved == 0, timeout=15, message="the ended sessions written")
    elapsed = loop.time() - began
    # At most one write per 0.5 s (the first at once), however long a busy
    # machine stretched the churn: not one per session end.
    assert counting.save_calls <= 1 + math.ceil(elapsed / 0.5), (ended, counting.save_calls, elapsed)
    assert counting.save_calls * 10 < ended
    assert counting.saved_records == ended
    # Shutting down stops them; drain writes what is left.
    session, _ = tracker.open("last", "c1", clock(), session_id="last")
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.stop_prompt_writes()
    writer.ended(session)
    assert writer.unsaved == 1 and await writer.drain(2) and counting.saved_records == ended + 1


@pytest.mark.gen_test(timeout=30)
async def test_an_ended_session_is_written_within_the_interval_without_waiting_for_a_checkpoint(
    faulty, tracker, clock
):
    # Reports show a session closed within about a second, not a flush interval later.
    writer = SessionWriter(faulty, ended_write_interval=0.2)
    problems = capture_loop_errors()
    loop = asyncio.get_running_loop()
    first, _ = tracker.open("u1", "c1", clock(), session_id="a")
    clock.advance(30)
    tracker.end(first, clock(), EndReason.CLIENT_CLOSED)
    began = loop.time()
    writer.ended(first)
    await wait_for(lambda: writer.is_saved("a"), timeout=5, message="the prompt write")
    assert loop.time() - began < 0.15  # the first one at once
    assert (await study_records(faulty.store, course_id="c1"))[0].end_reason == "client_closed"
    # The next one waits for the interval since the last prompt write, then goes.
    second, _ = tracker.open("u2", "c1", clock(), session_id="b")
    tracker.end(second, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(second)
    await wait_for(lambda: writer.is_saved("b"), timeout=5, message="the second prompt write")
    assert loop.time() - began >= 0.2
    assert faulty.save_calls == 2
    # Each write ran as a task the writer let go of once done, and none failed.
    await asyncio.sleep(0)
    assert problems == []
    assert not [t for t in asyncio.all_tasks() if "write_ended" in repr(t.get_coro())]


@pytest.mark.gen_test
async def test_a_final_snapshot_written_promptly_is_not_written_again_by_the_next_checkpoint(
    faulty, tracker, clock
):
    # Each final snapshot is written once: the prompt write takes the session
    # off the checkpoint's list, so the store gets no second copy of it.
    writer = SessionWriter(faulty)
    (session,) = open_sessions(tracker, clock, writer, 1)  # credit not yet checkpointed
    clock.advance(5)
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(session)
    assert await writer.write_ended()
    assert faulty.saved_records == 1
    assert writer.is_saved(session.session_id) and writer.unsaved == 0
    assert await writer.flush()
    assert faulty.saved_records == 1
    (stored,) = await study_records(faulty.store, course_id="c1")
    assert stored.end_reason == "client_closed" and stored.seconds == session.record().seconds


@pytest.mark.gen_test(timeout=30)
async def test_no_prompt_write_is_tried_while_the_store_is_failing(faulty, tracker, clock):
    # An outage is retried by the checkpoints, not hammered on every session end.
    writer = SessionWriter(faulty, ended_write_interval=0.05)
    attempts = []
    faulty.before_save = attempts.append
    live, _ = tracker.open("u1", "c1", clock(), session_id="a")
    writer.changed(live)
    faulty.down = True
    assert not await writer.flush() and not writer.healthy
    tried = len(attempts)
    for i in range(5):
        session, _ = tracker.open(f"u{i + 2}", "c1", clock(), session_id=f"s{i}")
        tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
        writer.ended(session)
    await asyncio.sleep(0.3)
    assert len(attempts) == tried
    faulty.down = False
    assert await writer.flush() and writer.unsaved == 0


def test_a_writer_without_an_interval_leaves_ended_sessions_to_the_next_checkpoint(faulty, tracker, clock):
    writer = SessionWriter(faulty)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(session)  # no event loop needed, nothing scheduled
    assert writer.unsaved == 1 and faulty.save_calls == 0


def capture_loop_errors() -> list[dict]:
    """What the running loop reports to its exception handler (a failed callback, a lost task error)."""
    problems: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
    return problems


@pytest.mark.gen_test
async def test_a_live_session_is_checkpointed_once_per_checkpoint_interval(
    faulty, tracker, clock, writer_clock
):
    writer = SessionWriter(faulty, checkpoint_interval=60)
    (first,) = open_sessions(tracker, clock, writer, 1, course="a")
    assert await writer.flush() and faulty.saved_records == 1  # a new session at once
    writer_clock.advance(59.9)
    clock.advance(30)
    tracker.heartbeat(first, clock())
    writer.changed(first)
    (second,) = open_sessions(tracker, clock, writer, 1, course="b")
    assert await writer.flush() and faulty.saved_records == 2  # the new one only
    assert not writer.is_saved(first.session_id) and writer.is_saved(second.session_id)
    writer_clock.advance(0.1)  # exactly the interval since its last checkpoint
    assert await writer.flush() and faulty.saved_records == 3 and writer.is_saved(first.session_id)
    (stored,) = await study_records(faulty, course_id="a")
    assert stored.seconds == first.seconds == 50
    # A forced flush (the drain at shutdown) writes whatever the interval.
    clock.advance(30)
    tracker.heartbeat(first, clock())
    writer.changed(first)
    assert await writer.flush() and faulty.saved_records == 3
    assert await writer.flush(force=True) and faulty.saved_records == 4 and writer.unsaved == 0
    # An ended session is written at the next flush, not an interval later.
    clock.advance(30)
    tracker.heartbeat(second, clock())
    writer.changed(second)
    assert await writer.flush() and faulty.saved_records == 4
    tracker.end(second, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(second)
    assert await writer.flush() and faulty.saved_records == 5 and writer.unsaved == 0


DAY = 86400.0


async def stored_ids(faulty) -> set[str]:
    return {r.session_id for r in await study_records(faulty)}


@pytest.mark.gen_test
async def test_records_ended_longer_ago_than_keep_seconds_are_deleted_after_a_flush_at_most_hourly(
    faulty, writer_clock
):
    now = time.time()
    old, recent = record(started=now - 40 * DAY), record(started=now - 20 * DAY)
    live = record(started=now - 40 * DAY, ended=False)  # open sessions are never deleted
    await faulty.store.save([old, recent, live])
    writer = SessionWriter(faulty, keep_seconds=30 * DAY)
    assert await writer.flush()  # nothing to write: still the hour's deletion
    assert await stored_ids(faulty) == {recent.session_id, live.session_id}
    older = record(started=now - 50 * DAY)
    await faulty.store.save([older])
    writer_clock.advance(3599)
    assert await writer.flush()
    assert older.session_id in await stored_ids(faulty)  # within the hour: not again
    writer_clock.advance(1)
    assert await writer.flush()
    assert await stored_ids(faulty) == {recent.session_id, live.session_id}


@pytest.mark.gen_test
async def test_records_are_kept_without_keep_seconds_or_where_the_store_expires_them_itself(
    faulty, writer_clock
):
    old = record(started=time.time() - 400 * DAY)
    await faulty.store.save([old])
    keeping = SessionWriter(faulty)
    expiring = SessionWriter(faulty, keep_seconds=DAY)
    expiring.store_expires = True  # a TTL index (MongoDB) deletes them
    for _ in range(2):
        assert await keeping.flush() and await expiring.flush()
        writer_clock.advance(3600)
    assert await stored_ids(faulty) == {old.session_id}


@pytest.mark.gen_test
async def test_a_failed_deletion_of_old_records_is_logged_and_retried_an_hour_later(
    faulty, writer_clock, caplog
):
    old = record(started=time.time() - 40 * DAY)
    await faulty.store.save([old])
    writer = SessionWriter(faulty, keep_seconds=30 * DAY)
    faulty.down = True
    with caplog.at_level(logging.WARNING, logger="study_time.store"):
        assert await writer.flush()  # nothing was waiting: the flush itself succeeded
    # Operators grep for these lines: the wording is part of the interface.
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "could not delete old study records (retried in an hour): outage (test)")
    ]
    faulty.down = False
    writer_clock.advance(3599)
    assert await writer.flush()
    assert await stored_ids(faulty) == {old.session_id}
    writer_clock.advance(1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="study_time.store"):
        assert await writer.flush()
    assert await stored_ids(faulty) == set()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "deleted 1 study records older than --keep-sessions-days")
    ]


@pytest.mark.gen_test
async def test_listeners_hear_each_written_batch_and_a_failing_one_stops_neither_the_flush_nor_the_others(
    faulty, tracker, clock, caplog
):
    # The dashboards' long poll and the xAPI forwarder listen to what was written.
    writer = SessionWriter(faulty)
    heard: list[list] = []

    def broken(records) -> None:
        raise RuntimeError("listener bug (test)")

    writer.saved_listeners.extend([broken, heard.append])
    sessions = open_sessions(tracker, clock, writer, 3)
    with caplog.at_level(logging.ERROR, logger="study_time.store"):
        assert await writer.flush()
    assert [sorted(r.session_id for r in batch) for batch in heard] == [
        sorted(s.session_id for s in sessions)
    ]
    assert [r.seconds for r in heard[0]] == [20, 20, 20]
    assert writer.unsaved == 0
    (logged,) = caplog.records
    assert logged.exc_info[1].args == ("listener bug (test)",)  # with its traceback
    # The operator is told what failed, in the words they grep for.
    assert (logged.levelno, logged.getMessage()) == (logging.ERROR, "a listener of saved sessions failed")


@pytest.mark.gen_test
async def test_drain_at_shutdown_writes_live_sessions_whatever_the_checkpoint_interval(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty, checkpoint_interval=3600)
    (session,) = open_sessions(tracker, clock, writer, 1)
    assert await writer.flush()
    clock.advance(30)
    tracker.heartbeat(session, clock())
    writer.changed(session)
    assert await writer.flush() and writer.unsaved == 1  # not due for an hour
    assert await writer.drain(5) and writer.unsaved == 0
    (stored,) = await study_records(faulty)
    assert stored.seconds == 50


# Openings read totals without waiting for a checkpoint (Store.total_seconds_now):
# only SQLite reads one that way; MongoDB's openings take the coordinator's path.
@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.gen_test
async def test_a_total_is_read_at_once_while_a_checkpoint_of_other_learners_is_being_written(
    faulty, tracker, clock
):
    writer = SessionWriter(faulty)
    (first,) = open_sessions(tracker, clock, writer, 1, credit=30)
    tracker.end(first, clock(), EndReason.CLIENT_CLOSED)
    writer.ended(first)
    assert await writer.flush()  # u0: 30 s stored
    open_sessions(tracker, clock, writer, 3, course="c2")
    read_during_the_write = []

    async def read_while_the_store_has_not_returned(save_number: int, records) -> None:
        # Bounded: reading behind the checkpoint (its lock) would wait for this very write.
        read_during_the_write.append(await asyncio.wait_for(writer.total_seconds("u0", "c1"), 5))

    faulty.after_save = read_while_the_store_has_not_returned
    assert await writer.flush()
    assert read_during_the_write == [30]


@pytest.mark.parametrize("store_kind", ["sqlite"])
@pytest.mark.gen_test
async def test_a_total_read_while_its_learner_s_slice_commits_counts_that_credit_once(faulty, tracker, clock):
    # A slice of a checkpoint is committed on the store's thread before the
    # IOLoop hears of it and forgets the credit waiting for it: a total read
    # in between sees the store with the slice and must not add that credit
    # again (40 s for 30); read before the slice's commit, it must not leave
    # it out. Such a read waits for its slice only, not for the checkpoint.
    writer = SessionWriter(faulty)
    sessions = open_sessions(tracker, clock, writer, 2_500)
    assert await writer.flush()  # 20 s each stored
    first_save = faulty.save_calls + 1
    clock.advance(10)
    for session in sessions:  # each learner's session ends, as when their next one opens
        tracker.end(session, clock(), EndReason.CLIENT_CLOSED)
        writer.ended(session)
    readers: dict[str, asyncio.Task] = {}
    totals: dict[str, float] = {}

    def read(user_id: str) -> None:
        readers[user_id] = asyncio.ensure_future(writer.total_seconds(user_id, "c1"))

    async def after_save(save_number: int, records) -> None:
        if save_number == first_save:  # committed; the IOLoop has not heard of it yet
            read(records[0].user_id)
            in_the_slice = {r.user_id for r in records}
            read(next(s.user_id for s in sessions if s.user_id not in in_the_slice))  # not yet written
            for _ in range(5):
                await asyncio.sleep(0)  # the readers run
        else:  # the next slice: the first one's readers need not wait for it
            for user_id, reader in readers.items():
                totals[user_id] = await asyncio.wait_for(reader, 5)
            faulty.after_save = None

    faulty.after_save = after_save
    assert await writer.flush()
    assert faulty.save_calls == first_save + 2 and len(totals) == 2
    assert list(totals.values()) == [30, 30]
    assert all([await writer.total_seconds(user_id, "c1") == 30 for user_id in totals])

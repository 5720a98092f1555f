"""Write-behind of session snapshots: batched checkpoints, and credit kept through outages.

Heartbeats only mark their session dirty (a dict assignment); every
``--flush-interval`` :meth:`SessionWriter.flush` writes one snapshot of each
changed session that is due (a new one at once, a live one every
``--checkpoint-interval``, spread evenly over the flushes): a checkpoint, in
one batch or in the store's slices (``Store.save_slice``). So store writes
per second are about live sessions / checkpoint interval, however fast
heartbeats arrive, and a crash loses at most one checkpoint interval plus one
flush interval of credit per session (counting rule 5).

A session that has ended is written promptly rather than at the next
checkpoint, so reports show it closed within about a second: the first end
schedules a write of the waiting final snapshots (:meth:`SessionWriter.write_ended`)
and every end until it runs joins it. Those writes are coalesced to at most
one per ``ended_write_interval`` (0.5 s in the service), however many
sessions end, and write only final snapshots, never live sessions' checkpoints;
while the store is failing they are left to the periodic flush. Each final
snapshot is still written once, so store writes grow by at most two per
second, not one per session end.

When the store fails, snapshots stay here and are written by a later flush;
nothing is dropped. Totals read through :meth:`SessionWriter.total_seconds`
add the credit still waiting here to what the store holds, so a learner who
reconnects sees the same total whether or not the last flush has landed.

Openings read those totals, and never wait for a checkpoint: with a store
that reads a total at once (``Store.total_seconds_now``, SQLite) the stored
total and the credit waiting here are read in one step of the IOLoop, and
they agree unless the learner's (user, course) is in the slice being
written at that moment, whose commit the read may or may not see: only
then does the opening wait, for that slice, not the whole checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from tracking.session import Session, SessionRecord

from .base import Store, StoreUnavailable

log = logging.getLogger("study_time.store")

#: Session snapshots taken per IOLoop iteration during a flush: taking one
#: costs a few microseconds of the IOLoop, so heartbeats wait about a
#: millisecond at most for a flush (figures in docs/performance.md,
#: "checkpoint pauses").
SNAPSHOT_SLICE = 250
#: Spreads live sessions' checkpoints over the interval (see ``flush``): the
#: golden ratio's fractional part, whose multiples fill [0, 1) evenly in any order.
_SPREAD_STEP = (5**0.5 - 1) / 2
#: Live sessions are filed by when their next checkpoint is due, in this many
#: slots of the interval: a flush looks at the slots begun, and at the exact
#: due time only in the slot it falls in.
DUE_SLOTS = 64
#: Seconds between deletions of old records (``--keep-sessions-days``).
EXPIRE_EVERY = 3600.0


@contextlib.asynccontextmanager
async def cyclic_gc_paused() -> AsyncIterator[None]:
    """Pause Python's cyclic garbage collector for the duration of a flush.

    A flush allocates one snapshot per changed session, all at once, that
    live only until the store has them. Left on, the collector runs a young
    collection in the middle of the flush that has to traverse all of them,
    with the IOLoop stopped: at the capacity benchmark's scale that was the
    p99 round trip (figures in docs/performance.md, "checkpoint pauses").
    The snapshots hold no cycles and are freed by reference counting when
    the flush ends, so pausing loses nothing; the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class SessionWriter:
    """Buffers session snapshots and writes them to a :class:`Store`: checkpoints in batches, ends promptly.

    The session core (``service/sessions.py``) tells it what changed
    (:meth:`changed`, :meth:`ended`, :meth:`corrected`) and reads totals
    through it (:meth:`total_seconds`); the runtime calls :meth:`flush` every
    ``--flush-interval`` and :meth:`drain` at shutdown.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_unsaved: int = 100_000,
        ended_write_interval: float | None = None,
        checkpoint_interval: float = 0.0,
        keep_seconds: float = 0.0,
    ) -> None:
        self.store = store
        self.max_unsaved = max_unsaved
        #: Seconds between two checkpoints of one live session (0: at every flush).
        self.checkpoint_interval = checkpoint_interval
        # When each checkpointed live session is next due (monotonic time), and
        # the sessions filed by the slot of the interval that time falls in
        # (_due_slot): a flush looks only at the slots that have begun, never
        # at every changed session (at 19,000 sessions that scan alone held the
        # IOLoop for 7 ms). A session not filed has never been checkpointed.
        self._due_time: dict[str, float] = {}
        self._due_at: defaultdict[int, set[str]] = defaultdict(set)
        self._spread = 0.0  # the next new session's place in the spread, in [0, 1)
        #: Records of sessions ended longer ago than this are deleted (0: kept), hourly.
        self.keep_seconds = keep_seconds
        self._expired_at = -math.inf  # monotonic time of the last expiry
        #: The store deletes old records by itself (``Store.retain``: a TTL index), so the writer does not.
        self.store_expires = False
        #: Seconds between two prompt writes of ended sessions; None: at the next flush only.
        self.ended_write_interval = ended_write_interval
        self._ended_write: asyncio.TimerHandle | None = None  # the scheduled prompt write
        self._ended_written_at = -math.inf  # loop time the last prompt write began
        self._dirty: dict[str, Session] = {}  # live sessions changed since the last flush
        # Sessions a running flush has taken off _dirty and not yet snapshotted:
        # with a slicing store that lasts several writes, during which they are
        # still unsaved, and may end.
        self._taking: dict[str, Session] = {}
        self._pending: dict[str, SessionRecord] = {}  # snapshots not yet written
        # session ids in _pending by (user, course): opening a session reads
        # its total, and must not scan every snapshot waiting here to do it.
        self._pending_by_key: dict[tuple[str, str], set[str]] = {}
        self._durable: dict[str, float] = {}  # credit known to be in the store, by session
        self._lock = asyncio.Lock()  # one flush at a time; reads that cannot be quick wait for it
        # The (user, course) of each record in the slice the store is writing
        # now (the writes take turns under _lock), and whether none is.
        self._saving: set[tuple[str, str]] = set()
        self._saved = asyncio.Event()
        self._saved.set()
        self._ended_tasks: set[asyncio.Task] = set()
        self._failing_since: float | None = None
        self._full_logged = False
        #: Called after each write to the store with (snapshots, seconds taken, succeeded).
        self.on_checkpoint: Callable[[int, float, bool], None] | None = None
        #: Called with the records of each successful write, in order: the dashboards' long poll
        #: (handlers/report_events.py) and the xAPI forwarder (it keeps the final ones).
        self.saved_listeners: list[Callable[[list[SessionRecord]], None]] = []

    # Called synchronously by the session core; these never block or fail.

    def changed(self, session: Session) -> None:
        """A live session gained credit (or started): write it at the next flush."""
        self._dirty[session.session_id] = session

    def ended(self, session: Session) -> None:
        """A session ended: its final snapshot is written promptly (:meth:`write_ended`) or by a flush.

        Prompt writes are coalesced to one per ``ended_write_interval``; with
        none set, or while the store is failing, the next flush writes it.
        """
        self._dirty.pop(session.session_id, None)
        due = self._due_time.pop(session.session_id, None)
        if due is not None:
            self._due_at[self._due_slot(due)].discard(session.session_id)
        # A running flush must not snapshot it again: once this final snapshot
        # is written, a second one would be counted as credit still waiting.
        self._taking.pop(session.session_id, None)
        self._set_pending(session.record())
        self._schedule_ended_write()

    def corrected(self, session: Session, stored_seconds: float) -> None:
        """An ended session's credit was cut back (:meth:`Tracker.cap`): write it again.

        ``stored_seconds`` is the credit it had before the cut. The writer
        forgets what the store holds for a session once its final snapshot
        has landed, so the caller says it: totals read before the correction
        lands then count the session once, at its corrected credit.
        """
        if session.session_id not in self._pending:
            self._durable[session.session_id] = stored_seconds
        self.ended(session)

    @property
    def unsaved(self) -> int:
        """Sessions whose latest state is not yet in the store."""
        pending, dirty = self._pending, self._dirty
        return (
            len(pending)
            + sum(1 for sid in dirty if sid not in pending)
            + sum(1 for sid in self._taking if sid not in pending and sid not in dirty)
        )

    def is_saved(self, session_id: str) -> bool:
        """Whether nothing of this session is waiting to be written."""
        return (
            session_id not in self._pending
            and session_id not in self._dirty
            and session_id not in self._taking
        )

    @property
    def full(self) -> bool:
        """Too much is waiting for the store: new connections are refused until it drains."""
        return len(self._pending) >= self.max_unsaved

    @property
    def healthy(self) -> bool:
        """Whether the last flush reached the store."""
        return self._failing_since is None

    async def total_seconds(self, user_id: str, course_id: str) -> float:
        """The stored total for a user and course plus the credit still waiting here.

        Raises :class:`StoreUnavailable` when the store cannot be read.
        """
        key = (user_id, course_id)
        # A slice with this learner's records is on its way to the store: its
        # commit may land (on the store's thread) before the loop learns of it
        # and forgets their waiting credit, so a quick read now could count
        # that credit twice. Wait for that slice alone, then read.
        while key in self._saving:
            await self._saved.wait()
        # The quick read and the waiting credit in one step: no write's
        # bookkeeping can come between them, and no write of this key is in
        # flight, so the store holds exactly what the writer thinks it holds.
        stored = self.store.total_seconds_now(user_id, course_id)
        if stored is not None:
            return self._plus_waiting_credit(stored, key)
        async with self._lock:  # no write in flight while the store reads (it may take a while)
            return self._plus_waiting_credit(await self.store.total_seconds(user_id, course_id), key)

    def _plus_waiting_credit(self, total: float, key: tuple[str, str]) -> float:
        """``total`` plus the credit of ``key``'s snapshots waiting here beyond what the store holds."""
        pending, durable = self._pending, self._durable
        for session_id in self._pending_by_key.get(key, ()):
            total += pending[session_id].seconds - durable.get(session_id, 0.0)
        return total

    async def _expire_old_records(self) -> None:
        """Delete records older than ``keep_seconds`` at most once an hour (``--keep-sessions-days``).

        Not where the store deletes them by itself (``store_expires``: a TTL index on MongoDB).
        A failure is logged and retried an hour later; it never fails the flush.
        """
        if not self.keep_seconds or self.store_expires or time.monotonic() - self._expired_at < EXPIRE_EVERY:
            return
        self._expired_at = time.monotonic()
        try:
            deleted = await self.store.expire(time.time() - self.keep_seconds)
        except StoreUnavailable as exc:
            log.warning("could not delete old study records (retried in an hour): %s", exc)
            return
        if deleted:
            log.info("deleted %d study records older than --keep-sessions-days", deleted)

    async def flush(self, *, force: bool = False) -> bool:
        """Write every changed session that is due; return False if the store failed (kept for later).

        A live session is due once ``checkpoint_interval`` has passed since its
        last checkpoint (a new one at once); ``force`` writes every changed one.

        Sessions that open together (a school at 8:00) would otherwise be due
        together every interval, one flush writing all of them while the
        others write none. So a session's first checkpoint is dated back by a
        fraction of the interval, the next new session's by a different one
        (multiples of the golden ratio, so any run of openings is spread
        evenly): its second checkpoint comes sooner, and from then on each
        flush writes about the same share of the live sessions. No session
        waits longer than the interval for a checkpoint.
        """
        async with self._lock, cyclic_gc_paused():
            # Snapshots are taken in slices, letting the IOLoop answer heartbeats
            # in between rather than holding it for the whole checkpoint. Sessions
            # changing meanwhile are marked in _dirty, for a later flush.
            now = time.monotonic()
            self._taking = self._take_due(now, force)
            save_slice = self.store.save_slice
            try:
                taken = 0
                while self._taking:
                    session_id, session = self._taking.popitem()
                    self._set_pending(session.record())
                    if self.checkpoint_interval:
                        self._file_next_checkpoint(session_id, now)
                    taken += 1
                    if taken % SNAPSHOT_SLICE:
                        continue
                    if save_slice is None or len(self._pending) < save_slice:
                        await asyncio.sleep(0)
                    # A store that writes in slices gets each one as soon as it is
                    # taken, so a checkpoint holds one slice of snapshots at a time,
                    # not one per session (the memory this saves per connection is
                    # in docs/performance.md).
                    elif not await self._write_pending():
                        # Nothing is lost: what was not yet taken waits as snapshots,
                        # as if the store had failed before the flush began.
                        while self._taking:
                            self._set_pending(self._taking.popitem()[1].record())
                        return False
                written = await self._write_pending()
                if written:
                    await self._expire_old_records()
                return written
            finally:
                # Only if the flush itself was cancelled: the untaken sessions
                # are marked changed again, for the next one.
                for session_id, session in self._taking.items():
                    self._dirty.setdefault(session_id, session)
                self._taking = {}

    def _take_due(self, now: float, force: bool) -> dict[str, Session]:
        """Take the changed sessions to checkpoint now off ``_dirty``; the others stay there.

        The set operations run in C: the flush's Python work grows with the
        sessions due, not with every session changed since the last one.
        """
        dirty = self._dirty
        if force or not self.checkpoint_interval:
            self._dirty = {}
            return dirty
        due = dirty.keys() - self._due_time.keys()  # new: at once
        now_slot = self._due_slot(now)
        for slot in [slot for slot in self._due_at if slot <= now_slot]:
            # A session due but unchanged stays filed here, and is taken by
            # the first flush after it changes.
            ids = self._due_at[slot]
            if not ids:
                del self._due_at[slot]
            elif slot < now_slot:
                due |= ids & dirty.keys()
            else:  # the slot now is in: only those whose time has come
                due_time = self._due_time
                due.update(i for i in ids & dirty.keys() if due_time[i] <= now)
        return {session_id: dirty.pop(session_id) for session_id in due}

    def _due_slot(self, moment: float) -> int:
        """The slot of the checkpoint interval (a 64th of it) that ``moment`` falls in."""
        return math.floor(moment * DUE_SLOTS / self.checkpoint_interval)

    def _file_next_checkpoint(self, session_id: str, now: float) -> None:
        """File a session just checkpointed ``now`` under the slot its next checkpoint is due in."""
        due = self._due_time.get(session_id)
        if due is None:  # its first: dated back by its place in the spread
            due = now + (1.0 - self._spread) * self.checkpoint_interval
            self._spread = (self._spread + _SPREAD_STEP) % 1.0
        else:
            self._due_at[self._due_slot(due)].discard(session_id)
            due = now + self.checkpoint_interval
        self._due_time[session_id] = due
        self._due_at[self._due_slot(due)].add(session_id)

    async def _write_pending(self) -> bool:
        """Write every waiting snapshot, in the store's slices; False if the store failed."""
        if not self._pending:
            return True
        batch = list(self._pending.values())
        # Written in slices when the store asks for it (Store.save_slice):
        # SQLite's thread holds the GIL while it binds rows, so one
        # transaction of every session would hold up the IOLoop for most of it.
        # Each slice's bookkeeping is applied as soon as it lands, so a
        # failure part-way keeps only the unwritten slices waiting.
        size = self.store.save_slice or len(batch)
        for start in range(0, len(batch), size):
            if not await self._save(batch[start : start + size]):
                return False
        return True

    async def _save(self, batch: list[SessionRecord]) -> bool:
        """Write one slice; totals of its learners wait (:meth:`total_seconds`) for its bookkeeping."""
        self._saving = {(r.user_id, r.course_id) for r in batch}
        self._saved.clear()
        try:
            return await self._save_slice(batch)
        finally:
            # (A flush cancelled here, which the service never does, may leave
            # a commit the bookkeeping below did not see: the next flush
            # rewrites those snapshots, and totals may count them twice meanwhile.)
            self._saving = set()
            self._saved.set()

    async def _save_slice(self, batch: list[SessionRecord]) -> bool:
        started = time.perf_counter()
        try:
            await self.store.save(batch)
        except StoreUnavailable as exc:
            self._checkpointed(len(batch), started, False)
            self._note_failure(exc)
            return False
        except Exception as exc:  # a store bug must not stop the flushing
            self._checkpointed(len(batch), started, False)
            log.exception("unexpected error writing %d sessions", len(batch))
            self._note_failure(exc)
            return False
        self._checkpointed(len(batch), started, True)
        self._note_success(len(batch))
        for listener in self.saved_listeners:
            try:
                listener(batch)
            except Exception:  # one listener's bug must neither stop the flushing nor the others
                log.exception("a listener of saved sessions failed")
        # What the store holds for a session is remembered while it may still
        # change (it is open) or a newer snapshot of it is waiting: totals add
        # only the waiting snapshot's difference from it. An ended session with
        # nothing waiting is forgotten, so this stays as small as the live set.
        for record in batch:
            if self._pending.get(record.session_id) is record:
                self._drop_pending(record)
                if not record.is_open:
                    self._durable.pop(record.session_id, None)
                    continue
            # Open, or changed again while the batch was in flight (the newer
            # snapshot stays waiting): the store now holds this one.
            self._durable[record.session_id] = record.seconds
        return True

    def _schedule_ended_write(self) -> None:
        """Have :meth:`write_ended` run soon, unless it is already scheduled (coalescing)."""
        if self.ended_write_interval is None or self._ended_write is not None or not self.healthy:
            return  # off, already coming, or the store is failing (the flush retries)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next flush writes it
            return
        delay = max(0.0, self._ended_written_at + self.ended_write_interval - loop.time())
        self._ended_write = loop.call_later(delay, self._start_ended_write, loop)

    def _start_ended_write(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ended_write = None
        self._ended_written_at = loop.time()
        task = loop.create_task(self.write_ended())
        # The loop keeps only a weak reference to a task: hold it until it is done.
        self._ended_tasks.add(task)
        task.add_done_callback(self._ended_tasks.discard)

    async def write_ended(self) -> bool:
        """Write the waiting snapshots (final snapshots of ended sessions), not live checkpoints.

        Under the flush lock, so it never interleaves with a flush; False if the
        store failed (the snapshots stay waiting for the next flush).
        """
        async with self._lock:
            return await self._write_pending()

    def stop_prompt_writes(self) -> None:
        """No more prompt writes of ended sessions (shutting down: :meth:`drain` writes the rest)."""
        self.ended_write_interval = None
        if self._ended_write is not None:
            self._ended_write.cancel()
            self._ended_write = None

    async def drain(self, timeout: float) -> bool:
        """Flush until nothing is waiting or ``timeout`` seconds pass (used at shutdown)."""
        self.stop_prompt_writes()
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if await self.flush(force=True) and not self._pending and not self._dirty:
                return True
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _set_pending(self, record: SessionRecord) -> None:
        self._pending[record.session_id] = record
        self._pending_by_key.setdefault((record.user_id, record.course_id), set()).add(record.session_id)

    def _drop_pending(self, record: SessionRecord) -> None:
        del self._pending[record.session_id]
        key = (record.user_id, record.course_id)
        ids = self._pending_by_key[key]
        ids.discard(record.session_id)
        if not ids:
            del self._pending_by_key[key]

    def _checkpointed(self, sessions: int, started: float, ok: bool) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(sessions, time.perf_counter() - started, ok)

    def _note_failure(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "store unavailable (%s): keeping credit in memory, %d sessions waiting to be written",
                exc,
                len(self._pending),
            )
        if self.full and not self._full_logged:
            self._full_logged = True
            log.error(
                "store unavailable for %.0fs and %d sessions are waiting to be written"
                " (--max-unsaved-sessions): refusing new connections until it returns",
                time.monotonic() - self._failing_since,
                len(self._pending),
            )

    def _note_success(self, written: int) -> None:
        if self._failing_since is not None:
            log.warning(
                "store available again after %.1fs: wrote %d waiting sessions",
                time.monotonic() - self._failing_since,
                written,
            )
            self._failing_since = None
            self._full_logged = False

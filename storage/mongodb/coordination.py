"""Coordination between server processes sharing one MongoDB store.

:class:`~storage.coordination.Coordinator` is the interface and the
single-process case. :class:`MongoCoordinator` implements it on three
collections documented in ``docs/storage.md``:

* ``study_leases``: one document per (user, course), kept for good, holding
  its running total (``seconds``), the sessions not yet added to it
  (``open``) and the lease (which session and process hold it). Opening a
  session is one ``find_one_and_update`` that takes the lease, notes the
  session in ``open`` and returns the document as it was: the total, plus
  what is known of the sessions not yet in it, is the learner's total. A
  session's credit is added once, when its final snapshot is in the store,
  by a statement guarded by its ``open`` entry (:func:`.schema.fold`).
* ``study_takeovers``: a notice to the previous holder's process, which reads
  its notices every :attr:`~Coordinator.poll_interval` (at most half a
  heartbeat interval) while it has sessions, ends that session as ``replaced``
  with its credit capped at the takeover instant, and closes its client with
  4409. A process with no sessions does not look.
* ``study_processes``: one liveness record per process, refreshed every
  quarter of ``--process-timeout`` and expiring after it. A process that finds
  an expired one (it lists them as often) claims it and, in a task of its own
  that never holds up its refresh, closes its open sessions at their last
  checkpoint (``server_lost``) and frees its leases.

With ``--overlap-policy=one-course`` a fourth, ``study_learner_clock``
(:mod:`.learners`), shares each learner's clock between the processes the
learner is live in (rule 7); with the default policy it is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from tracking.session import Session, SessionRecord

from ..base import StoreUnavailable
from ..coordination import Coordinator, PollResult
from ..writer import SessionWriter
from .learners import LearnerClocks
from .schema import LEASE_FIELDS, LEASES, PROCESSES, SESSIONS, TAKEOVERS, fold, from_date, lease_key, to_date
from .store import MongoStore, errors

log = logging.getLogger("study_time.coordination")

#: How long the change stream's server waits for a notice before answering empty (one getMore).
WATCH_AWAIT_MS = 10_000


def notice_pipeline(process_id: str) -> list[dict]:
    """The change stream of new takeover notices for one process."""
    return [{"$match": {"operationType": "insert", "fullDocument.processId": process_id}}]


class MongoCoordinator(Coordinator):
    """Leases, running totals, takeover notices and process liveness in the MongoDB store."""

    def __init__(
        self,
        store: MongoStore,
        writer: SessionWriter,
        *,
        heartbeat_interval: float,
        process_timeout: float,
        one_course: bool = False,
    ) -> None:
        super().__init__(writer)
        self.store = store
        self.process_id = store.process_id
        self.process_timeout = process_timeout
        # Half a heartbeat interval, so a replaced client hears of it within one;
        # at most a second. Only a process with sessions reads its notices.
        self.poll_interval = min(heartbeat_interval / 2, 1.0)
        #: Seconds between refreshes of this process's liveness record, and
        #: between looks at the others' (an idle process's only commands).
        self.refresh_interval = process_timeout / 4
        self._sessions: dict[str, Session] = {}  # claimed here and not yet added to their totals
        self._by_key: dict[tuple[str, str], set[str]] = {}  # the same, by (user, course)
        self._ended: set[str] = set()  # of those, the ended ones
        # Ended sessions whose credit may be added whatever holds their lease:
        # replaced here, or told of their takeover (so capped at it already).
        self._settled: set[str] = set()
        # Ended sessions whose lease another process took before their credit
        # was added: waiting for the takeover notice, until this monotonic time.
        self._waiting: dict[str, float] = {}
        self._healthy_since: float | None = None  # monotonic; None while the store fails
        self._last_refresh = float("-inf")
        # Each process looks at its own phase, so survivors of one death seldom
        # try to claim it at the same instant (one claim wins anyway, on MongoDB).
        self._last_look = time.monotonic() - random.uniform(0, self.refresh_interval)
        # Expiry of every process at the last look (server time); unknown ones are alive.
        self._expiry_of: dict[str, float] = {}
        self._recovery: asyncio.Task | None = None
        # The change stream of notices (replica sets), whether it runs, and
        # whether it pushed a notice since the last read.
        self._watch: asyncio.Task | None = None
        self._watching = False
        self._noticed = False
        self._recovered: list[SessionRecord] = []
        self._now = time.time()  # server time at the last poll
        #: ``--overlap-policy=one-course``: the learners' clocks; None with the default policy.
        self.clocks = (
            LearnerClocks(store, alive=self._alive, learn_expiry=self._learn_expiry, clock=lambda: self._now)
            if one_course
            else None
        )

    @property
    def _db(self):
        return self.store.db

    def _expiry(self, now: float):
        return to_date(now + self.process_timeout)

    def _alive(self, process_id: str, now: float) -> bool:
        expiry = self._expiry_of.get(process_id)
        return expiry is None or expiry >= now

    async def start(self, now: float) -> None:
        async with errors():
            await self._db[PROCESSES].update_one(
                {"_id": self.process_id},
                {
                    "$set": {
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "startedAt": to_date(now),
                        "expiresAt": self._expiry(now),
                    }
                },
                upsert=True,
            )
        self._healthy_since = time.monotonic()
        self._last_refresh = time.monotonic()
        if self._watch is None:
            await self._start_watching()

    async def _start_watching(self) -> None:
        """On a replica set or sharded cluster, have new notices pushed (a change stream).

        Standalone servers and FerretDB have no change streams: notices are
        then read every poll while the process has sessions (the fallback the
        tests run). With the stream, a poll reads them only after one arrived.
        """
        try:
            hello = await self._db.command("hello")
        except PyMongoError:
            return
        if "setName" not in hello and hello.get("msg") != "isdbgrid":
            return
        self._watch = asyncio.get_running_loop().create_task(self._watch_notices())

    async def _watch_notices(self) -> None:
        try:
            stream = await self._db[TAKEOVERS].watch(
                notice_pipeline(self.process_id), max_await_time_ms=WATCH_AWAIT_MS
            )
            async with stream:
                self._watching = True
                async for _ in stream:
                    self._noticed = True
        except PyMongoError as exc:
            log.warning("no change stream on %s (reading notices every poll): %s", TAKEOVERS, exc)
        finally:
            self._watching = False
            self._noticed = True  # whatever came meanwhile is read at the next poll

    async def settle(self, timeout: float) -> list[tuple[Session, float]]:
        if self.clocks is None:
            return []
        return await self.clocks.settle(timeout)

    async def stop(self, *, saved: bool) -> None:
        for task in (self._recovery, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        try:
            async with errors():
                # Whatever is saved is added to its total now, waiting or not.
                await self._release(set(), final=True)
                if self.clocks is not None:
                    await self.clocks.stop()
                await self._db[LEASES].update_many(
                    {"processId": self.process_id}, {"$unset": dict.fromkeys(LEASE_FIELDS, "")}
                )
                await self._db[TAKEOVERS].delete_many({"processId": self.process_id})
                if saved:
                    await self._db[PROCESSES].delete_one({"_id": self.process_id})
                else:
                    # Sessions of ours are still open in the store: expire at
                    # once, so another process closes them (server_lost) now.
                    await self._db[PROCESSES].update_one(
                        {"_id": self.process_id}, {"$set": {"expiresAt": to_date(0.0)}}
                    )
        except StoreUnavailable as exc:
            log.warning("could not withdraw this process (the others will once it expires): %s", exc)

    async def claim(self, session: Session) -> float:
        """Take the lease and return the learner's total, in one ``find_one_and_update``.

        The total is the running total as it was, plus each session noted in
        ``open`` (not yet added to it): this process's own from memory, another
        live process's live one estimated as wall time up to the next session's
        start (every accepted gap is shorter than the timeout, so credit is
        wall time), and the rest as stored. Another process's sessions need
        their documents: one more read, only when there are any.
        """
        now = session.started_at
        # What this process knows of its own sessions of this key, taken before
        # the read: one whose credit is added meanwhile is in the snapshot and,
        # if added before the read, no longer in ``open``; never counted twice.
        local = {sid: self._sessions[sid].seconds for sid in self._by_key.get(session.key, ())}
        self._track(session)
        if self.clocks is not None:
            await self.clocks.opened(session)
        async with errors():
            prior = await self._take_lease(session)
            total = await self._total(session, prior, local)
            holder, replaced = prior.get("processId"), prior.get("sessionId")
            if holder == self.process_id and replaced:
                self._settled.add(replaced)  # replaced here, at this instant: nothing to cap
            if not holder or not replaced or holder == self.process_id or not self._alive(holder, now):
                # Nobody, this process (the tracker replaced it), or a process
                # that is gone (recovery closes it at its last checkpoint).
                return total
            # A concurrent takeover of the same session may have noted it already.
            with contextlib.suppress(DuplicateKeyError):
                await self._db[TAKEOVERS].insert_one(
                    {"_id": replaced, "processId": holder, "at": to_date(now), "by": session.session_id}
                )
        log.info(
            "session %s of user=%s course=%s took over session %s from process %s",
            session.session_id,
            session.user_id,
            session.course_id,
            replaced,
            holder,
        )
        return total

    async def _take_lease(self, session: Session) -> dict:
        """Take the lease, note the session in ``open``; the document as it was, with its ``seconds``."""
        now = session.started_at
        key = session.key
        prior = await self._db[LEASES].find_one_and_update(
            {"_id": lease_key(*key)},
            {
                "$set": {
                    "userId": session.user_id,
                    "courseId": session.course_id,
                    "sessionId": session.session_id,
                    "processId": self.process_id,
                    "since": to_date(now),
                    f"open.{session.session_id}": {"p": self.process_id, "t": now},
                },
            },
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        if prior is None or "seconds" not in prior:
            # The first session of this pair since the running totals exist
            # (a new learner, or sessions written by a tool or an earlier
            # version and not upgraded): built once, from the sessions that
            # started before this one; later ones are noted in ``open``.
            built = await self.store.session_credit(session.user_id, session.course_id, before=now)
            await self._db[LEASES].update_one(
                {"_id": lease_key(*key), "seconds": {"$exists": False}}, {"$set": {"seconds": built}}
            )
            prior = {**(prior or {}), "seconds": built}
        return prior

    async def _total(self, session: Session, prior: dict, local: dict[str, float]) -> float:
        """The running total in ``prior`` plus each session in its ``open`` (see :meth:`claim`).

        Adds, once, the credit of any that ended on a process that is gone.
        """
        now = session.started_at
        entries = sorted((prior.get("open") or {}).items(), key=lambda item: item[1]["t"])
        remote = [sid for sid, entry in entries if entry["p"] != self.process_id]
        docs = await self._session_docs(session.user_id, remote)
        total = float(prior.get("seconds", 0.0))
        await self._learn_expiry({entry["p"] for sid, entry in entries if sid in remote})
        repairs = []
        for i, (sid, entry) in enumerate(entries):
            if entry["p"] == self.process_id:
                total += local.get(sid, 0.0)
                continue
            doc = docs.get(sid)
            stored = float(doc["seconds"]) if doc is not None else 0.0
            alive = self._alive(entry["p"], now)
            if alive and (doc is None or doc.get("endedAt") is None):
                until = entries[i + 1][1]["t"] if i + 1 < len(entries) else now
                total += max(stored, until - entry["t"])
                continue
            total += stored
            if not alive and (doc is None or doc.get("endedAt") is not None):
                # Ended (or never written) on a process that is gone before
                # its credit was added: add it now, once.
                repairs.append(UpdateOne(*fold(session.user_id, session.course_id, sid, stored)))
        if repairs:
            await self._db[LEASES].bulk_write(repairs, ordered=False)
        return total

    async def _session_docs(self, user_id: str, session_ids: list[str]) -> dict[str, dict]:
        """The stored credit and end of other processes' sessions, by id: one read, none if there are none."""
        if not session_ids:
            return {}
        return {
            d["_id"]: d
            async for d in self._db[SESSIONS].find(
                {"userId": user_id, "_id": {"$in": session_ids}}, {"seconds": 1, "endedAt": 1}
            )
        }

    async def _learn_expiry(self, process_ids: set[str]) -> None:
        """Learn the expiry of those processes not listed at the last look."""
        unknown = process_ids - set(self._expiry_of)
        if unknown:
            # Started since the last look, or gone (or a tool's): one read says.
            for pid in unknown:
                self._expiry_of[pid] = float("-inf")
            async for d in self._db[PROCESSES].find({"_id": {"$in": list(unknown)}}, {"expiresAt": 1}):
                self._expiry_of[d["_id"]] = from_date(d["expiresAt"])

    def ended(self, session: Session) -> None:
        if session.session_id in self._sessions:
            self._ended.add(session.session_id)
        if self.clocks is not None:
            self.clocks.ended(session)

    def credited(self, session: Session, start: float, until: float) -> None:
        if self.clocks is not None:
            self.clocks.credited(session, start, until)

    async def poll(self, now: float) -> PollResult:
        result = PollResult()
        self._now = now
        if self._recovered:
            result.recovered, self._recovered = self._recovered, []
        try:
            async with errors():
                due = time.monotonic() - self._last_refresh >= self.refresh_interval
                if (due or self._healthy_since is None) and not await self._refresh(now):
                    result.presumed_dead = True
                    return result
                noticed = set()
                if self._sessions and (self._noticed or not self._watching):
                    self._noticed = False
                    noticed = await self._takeovers(result)
                if self._last_refresh == float("-inf") and not await self._refresh(now):
                    result.presumed_dead = True
                    return result
                if self.clocks is not None:
                    result.overlaps = await self.clocks.poll()
                # A session whose credit is still being checked against its learner's clock, or
                # is about to be cut back (overlaps), is added to its total afterwards.
                await self._release(noticed | {s.session_id for s, _ in result.overlaps})
                if time.monotonic() - self._last_look >= self.refresh_interval:
                    await self._look(now)
        except StoreUnavailable as exc:
            if self._healthy_since is not None:
                log.warning("coordination paused, the store is unavailable: %s", exc)
            self._healthy_since = None
        return result

    async def _look(self, now: float) -> None:
        """List the processes (their expiry); start a recovery if one has expired."""
        self._last_look = time.monotonic()
        self._expiry_of = {
            d["_id"]: from_date(d["expiresAt"]) async for d in self._db[PROCESSES].find({}, {"expiresAt": 1})
        }
        expired = any(expiry < now for expiry in self._expiry_of.values())
        if (
            expired
            and self._healthy_since is not None
            # Only a process that has itself reached the store for a whole
            # --process-timeout may judge others dead: after an outage that
            # every process suffered, each first gets the time to refresh.
            and time.monotonic() - self._healthy_since >= self.process_timeout
            and (self._recovery is None or self._recovery.done())
        ):
            self._recovery = asyncio.get_running_loop().create_task(self._recover(now))

    async def _recover(self, now: float) -> None:
        """Close what expired processes left open; reported at the next poll."""
        try:
            self._recovered.extend(await self.store.recover(now))
        except StoreUnavailable as exc:
            log.warning("recovery of expired processes failed (retried at the next look): %s", exc)

    async def _refresh(self, now: float) -> bool:
        """Extend this process's liveness; False if the others had presumed it dead."""
        updated = await self._db[PROCESSES].update_one(
            {"_id": self.process_id}, {"$set": {"expiresAt": self._expiry(now)}}
        )
        self._last_refresh = time.monotonic()
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
        if updated.matched_count:
            return True
        log.error(
            "this process was presumed dead (no contact with the store for --process-timeout):"
            " its %d sessions were closed as server_lost elsewhere; closing them here",
            len(self._sessions) - len(self._ended),
        )
        # Its open sessions were closed (and added to their totals) elsewhere;
        # the ended ones were not, and are added here once saved.
        for sid in [sid for sid in self._sessions if sid not in self._ended]:
            self._forget(sid)
        self._settled.update(self._ended)
        await self.start(now)
        return False

    async def _takeovers(self, result: PollResult) -> set[str]:
        notices = [d async for d in self._db[TAKEOVERS].find({"processId": self.process_id})]
        if not notices:
            return set()
        if any(notice.get("dead") for notice in notices):
            # Another process presumed this one dead: the refresh says so.
            await self._db[TAKEOVERS].delete_many({"_id": f"dead:{self.process_id}"})
            self._last_refresh = float("-inf")
            return set()
        for notice in notices:
            if notice.get("clock") and self.clocks is not None:
                self.clocks.notified(notice["clock"])
                continue
            session = self._sessions.get(notice["_id"])
            if session is not None:
                result.takeovers.append((session, from_date(notice["at"])))
                self._settled.add(notice["_id"])  # capped at the takeover by the service
                self._waiting.pop(notice["_id"], None)
        await self._db[TAKEOVERS].delete_many({"_id": {"$in": [n["_id"] for n in notices]}})
        return {n["_id"] for n in notices}

    async def _release(self, exclude: set[str], *, final: bool = False) -> None:
        """Add the credit of ended sessions whose final snapshot is saved to their totals.

        One guarded statement each (:func:`.schema.fold`): while the session
        still holds its lease, the same statement releases it. One whose lease
        another process took first waits for that process's takeover notice
        (the credit must be capped at the takeover instant first), for at most
        ``--process-timeout``; ``final`` (shutting down) does not wait.
        """
        clock = time.monotonic()
        done = [
            sid
            for sid in self._ended
            if sid not in exclude
            and self.writer.is_saved(sid)
            and (self.clocks is None or final or not self.clocks.unsettled(sid))
            and (final or sid not in self._waiting or self._waiting[sid] <= clock)
        ]
        if not done:
            return
        ops = []
        for sid in done:
            s = self._sessions[sid]
            ungated = final or sid in self._settled or sid in self._waiting
            ops.append(UpdateOne(*fold(s.user_id, s.course_id, sid, s.seconds, release=not ungated)))
            if final and not ungated:
                ops.append(UpdateOne(*fold(s.user_id, s.course_id, sid, s.seconds)))
        result = await self._db[LEASES].bulk_write(ops, ordered=True)
        if not final and result.matched_count < len(done):
            # Some were added already (a retry), or their lease moved on: look.
            keys = list({lease_key(*self._sessions[sid].key) for sid in done})
            still_open = set()
            async for d in self._db[LEASES].find({"_id": {"$in": keys}}, {"open": 1}):
                still_open.update(d.get("open") or {})
            for sid in [sid for sid in done if sid in still_open]:
                if sid not in self._waiting:
                    self._waiting[sid] = clock + self.process_timeout
                done.remove(sid)
        for sid in done:
            self._forget(sid)

    def _track(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._by_key.setdefault(session.key, set()).add(session.session_id)

    def _forget(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        self._ended.discard(sid)
        self._settled.discard(sid)
        self._waiting.pop(sid, None)
        if session is not None:
            ids = self._by_key.get(session.key)
            if ids is not None:
                ids.discard(sid)
                if not ids:
                    del self._by_key[session.key]

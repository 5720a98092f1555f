"""Coordination between server processes sharing one MongoDB store.

:class:`~storage.coordination.Coordinator` is the interface and the
single-process case. :class:`MongoCoordinator` implements it on three
collections documented in ``docs/storage.md``:

* ``study_leases``: one document per (user, course) naming the session and
  process that hold it. Opening a session swaps the lease atomically
  (``find_one_and_update``) and learns who held it before.
* ``study_takeovers``: a notice to the previous holder's process, which polls
  for its notices every :attr:`~Coordinator.poll_interval` (at most half a
  heartbeat interval), ends that session as ``replaced`` with its credit
  capped at the takeover instant, and closes its client with 4409.
* ``study_processes``: one liveness record per process, refreshed at every
  poll and expiring after ``--process-timeout``. Any process (or the next
  one to start) closes the open sessions of an expired process at their last
  checkpoint (``server_lost``) and deletes its leases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

from pymongo import DeleteOne, ReturnDocument
from pymongo.errors import DuplicateKeyError

from tracking.session import Session

from ..base import StoreUnavailable
from ..coordination import Coordinator, PollResult
from ..writer import SessionWriter
from .schema import LEASES, PROCESSES, SESSIONS, TAKEOVERS, from_date, to_date
from .store import MongoStore, errors

log = logging.getLogger("study_time.coordination")


def lease_key(user_id: str, course_id: str) -> str:
    # Ids cannot contain "/" (tracking.protocol.ID_PATTERN): the key is unambiguous.
    return f"{user_id}/{course_id}"


class MongoCoordinator(Coordinator):
    """Leases, takeover notices and process liveness in the MongoDB store."""

    def __init__(
        self, store: MongoStore, writer: SessionWriter, *, heartbeat_interval: float, process_timeout: float
    ) -> None:
        self.store = store
        self.writer = writer
        self.process_id = store.process_id
        self.process_timeout = process_timeout
        # Half a heartbeat interval, so a replaced client hears of it within one;
        # at most a second, which costs one indexed query per process per second.
        self.poll_interval = min(heartbeat_interval / 2, 1.0)
        self._sessions: dict[str, Session] = {}  # claimed here and not yet released
        self._ended: set[str] = set()  # of those, the ended ones
        self._healthy_since: float | None = None  # monotonic; None while the store fails
        self._last_reap = float("-inf")

    @property
    def _db(self):
        return self.store.db

    def _expiry(self, now: float):
        return to_date(now + self.process_timeout)

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

    async def stop(self, *, saved: bool) -> None:
        try:
            async with errors():
                await self._db[LEASES].delete_many({"processId": self.process_id})
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
        now = session.started_at
        self._sessions[session.session_id] = session
        async with errors():
            prior = await self._db[LEASES].find_one_and_update(
                {"_id": lease_key(session.user_id, session.course_id)},
                {
                    "$set": {
                        "userId": session.user_id,
                        "courseId": session.course_id,
                        "sessionId": session.session_id,
                        "processId": self.process_id,
                        "since": to_date(now),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            if prior is None or prior["processId"] == self.process_id:
                return 0.0  # nobody, or this process: the tracker already replaced it
            holder = await self._db[PROCESSES].find_one(
                {"_id": prior["processId"], "expiresAt": {"$gte": to_date(now)}}, {"_id": 1}
            )
            if holder is None:
                # Its process is gone: recovery closes the session at its last
                # checkpoint, which the stored total already counts.
                return 0.0
            # A concurrent takeover of the same session may have noted it already.
            with contextlib.suppress(DuplicateKeyError):
                await self._db[TAKEOVERS].insert_one(
                    {
                        "_id": prior["sessionId"],
                        "processId": prior["processId"],
                        "at": to_date(now),
                        "by": session.session_id,
                    }
                )
            replaced = await self._db[SESSIONS].find_one(
                {"_id": prior["sessionId"]}, {"seconds": 1, "endedAt": 1}
            )
        log.info(
            "session %s of user=%s course=%s took over session %s from process %s",
            session.session_id,
            session.user_id,
            session.course_id,
            prior["sessionId"],
            prior["processId"],
        )
        if replaced is not None and replaced.get("endedAt") is not None:
            return 0.0  # its final credit is stored and counted
        # Live on the other process: its credit runs from its start to now
        # (every accepted gap is shorter than the timeout, so credit is wall
        # time); the store has it up to its last checkpoint.
        stored = float(replaced["seconds"]) if replaced is not None else 0.0
        return max(0.0, now - from_date(prior["since"]) - stored)

    def ended(self, session: Session) -> None:
        if session.session_id in self._sessions:
            self._ended.add(session.session_id)

    async def poll(self, now: float) -> PollResult:
        result = PollResult()
        try:
            async with errors():
                if not await self._refresh(now):
                    result.presumed_dead = True
                    return result
                noticed = await self._takeovers(result)
                await self._release(exclude=noticed)
                if (
                    self._healthy_since is not None
                    and time.monotonic() - self._healthy_since >= self.process_timeout
                    and time.monotonic() - self._last_reap >= self.process_timeout / 4
                ):
                    self._last_reap = time.monotonic()
                    # The full recovery scans every open session; run it only
                    # when a process has expired (an indexed lookup).
                    if await self._db[PROCESSES].find_one({"expiresAt": {"$lt": to_date(now)}}, {"_id": 1}):
                        result.recovered = await self.store.recover(now)
        except StoreUnavailable as exc:
            if self._healthy_since is not None:
                log.warning("coordination paused, the store is unavailable: %s", exc)
            self._healthy_since = None
        return result

    async def _refresh(self, now: float) -> bool:
        """Extend this process's liveness; False if the others had presumed it dead."""
        updated = await self._db[PROCESSES].update_one(
            {"_id": self.process_id}, {"$set": {"expiresAt": self._expiry(now)}}
        )
        if self._healthy_since is None:
            # Only a process that has itself reached the store for a whole
            # --process-timeout may judge others dead: after an outage that
            # every process suffered, each first gets the time to refresh.
            self._healthy_since = time.monotonic()
        if updated.matched_count:
            return True
        log.error(
            "this process was presumed dead (no contact with the store for --process-timeout):"
            " its %d sessions were closed as server_lost elsewhere; closing them here",
            len(self._sessions) - len(self._ended),
        )
        self._sessions.clear()
        self._ended.clear()
        await self.start(now)
        return False

    async def _takeovers(self, result: PollResult) -> set[str]:
        notices = [d async for d in self._db[TAKEOVERS].find({"processId": self.process_id})]
        if not notices:
            return set()
        for notice in notices:
            session = self._sessions.get(notice["_id"])
            if session is not None:
                result.takeovers.append((session, from_date(notice["at"])))
        await self._db[TAKEOVERS].delete_many({"_id": {"$in": [n["_id"] for n in notices]}})
        return {n["_id"] for n in notices}

    async def _release(self, exclude: set[str]) -> None:
        """Delete the leases of ended sessions whose final snapshot is in the store."""
        done = [sid for sid in self._ended if sid not in exclude and self.writer.is_saved(sid)]
        if not done:
            return
        # Only if still ours: a lease taken over meanwhile belongs to the new session.
        await self._db[LEASES].bulk_write(
            [
                DeleteOne(
                    {
                        "_id": lease_key(self._sessions[sid].user_id, self._sessions[sid].course_id),
                        "sessionId": sid,
                    }
                )
                for sid in done
            ],
            ordered=False,
        )
        for sid in done:
            self._ended.discard(sid)
            self._sessions.pop(sid, None)

"""``--overlap-policy=one-course`` across processes: each learner's clock, ``study_learner_clock``.

Rule 7 (``tracking/tracker.py``) gives each slice of a learner's wall time to
one course: a credit covers only the time since the learner's previous credit
in *any* course. A process knows that instant for the sessions in its own
tracker. When a learner's courses are live in several processes sharing the
database, the instant lives in one document per learner (``docs/storage.md``)::

    {_id: userId, at: <seconds>, p: {<member key>: {pid, r, j}}, wait: [processId, ...]}

* **Registering.** When a learner's first session in a process opens, the
  process sets its entry in ``p`` (``j: 0``: not consulting the clock) with
  one ``find_one_and_update`` that returns the document as it was. If that
  names another live process, the learner is *shared*: this process sets
  ``j: 1``, lists the others still at ``j: 0`` in ``wait`` and leaves each a
  notice in ``study_takeovers`` (the mechanism that carries takeovers: a
  change stream, or the poll while the process has sessions).
* **Joining.** A process told so sets ``j: 1``, leaves ``wait`` and raises
  ``at`` (``$max``) to the instant up to which it has credited the learner:
  what it credited before it knew is then in ``at``.
* **Crediting.** A process at ``j: 1`` reports each credit ``[from, until]``
  of the learner with one ``find_one_and_update {$max: {at: until}}``
  guarded by ``wait: {$size: 0}`` and returning ``at`` as it was: the part of
  the credit before that instant was credited by another process already and
  is taken back (:meth:`tracking.tracker.Tracker.take_back`, through the
  poll's ``overlaps``). ``$max`` is atomic on MongoDB, so two processes
  crediting at the same moment never both keep a second. While a process is
  still waiting to join, credits are held (normally for less than one poll)
  and then sent in order; a waiting process that is gone (not registered any
  more, or presumed dead) is taken off ``wait``.
* **Leaving.** When the learner's last session in a process has ended and
  its credits are settled, the process removes its entry and raises ``at``
  to its instant (one statement a learner, all in one bulk per poll).

A learner live in one process costs one statement at its first opening there
and one when its last session there ends: nothing per heartbeat. Only shared
learners cost a command per credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from tracking.session import Session

from ..base import StoreUnavailable
from .schema import LEARNER_CLOCKS, TAKEOVERS
from .store import MongoStore, errors

log = logging.getLogger("study_time.coordination")


def member_key(process_id: str) -> str:
    """A process's key in ``p`` (process ids hold host names, whose dots field paths cannot)."""
    return hashlib.blake2b(process_id.encode(), digest_size=8).hexdigest()


def notice_id(user_id: str, process_id: str) -> str:
    """The ``study_takeovers`` id of the notice telling ``process_id`` that ``user_id`` is shared."""
    return f"clock:{user_id}:{process_id}"


@dataclass(eq=False)
class _Learner:
    """One learner registered by this process."""

    user_id: str
    registration: str  # this registration's id: a late statement of an earlier one matches nothing
    sessions: set[str] = field(default_factory=set)  # live here
    #: The latest instant this process credited the learner without checking it against the clock
    #: (before the learner was shared); a join or a leave puts it in ``at``.
    until: float = -math.inf
    shared: bool = False  # credits are checked against the clock
    joined: bool = False  # this process's instant is in ``at``: credits may be sent
    rejoin: bool = False  # told to join (again): take this process off ``wait`` before the next check
    credits: list[tuple[Session, float, float]] = field(default_factory=list)  # not yet sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None


class LearnerClocks:
    """The learner clocks of one process (``--overlap-policy=one-course`` on MongoDB)."""

    def __init__(
        self,
        store: MongoStore,
        *,
        alive: Callable[[str, float], bool],
        learn_expiry: Callable[[set[str]], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.process_id = store.process_id
        self.key = member_key(self.process_id)
        self._alive = alive
        self._learn_expiry = learn_expiry
        self._clock = clock
        self._learners: dict[str, _Learner] = {}
        #: Credit of sessions of this process found credited elsewhere first: (session, seconds).
        self.overlaps: list[tuple[Session, float]] = []
        #: Sessions with credits not yet checked against the clock (their total must wait).
        self._unchecked: dict[str, int] = {}

    @property
    def _db(self):
        return self.store.db

    def unsettled(self, session_id: str) -> bool:
        """Whether a credit of this session is still to be checked against the learner's clock."""
        return self._unchecked.get(session_id, 0) > 0

    async def opened(self, session: Session) -> None:
        """Register the learner on its first session here; learn whether another process has them."""
        learner = self._learners.get(session.user_id)
        if learner is not None:
            learner.sessions.add(session.session_id)
            return
        learner = _Learner(session.user_id, uuid.uuid4().hex[:12], {session.session_id})
        self._learners[session.user_id] = learner
        async with learner.lock, errors():
            prior = await self._db[LEARNER_CLOCKS].find_one_and_update(
                {"_id": session.user_id},
                {
                    "$set": {f"p.{self.key}": {"pid": self.process_id, "r": learner.registration, "j": 0}},
                    "$setOnInsert": {"at": -1.0, "wait": []},
                },
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            members = [m for k, m in ((prior or {}).get("p") or {}).items() if k != self.key]
            if not members:
                return
            await self._learn_expiry({m["pid"] for m in members})
            others = [m for m in members if self._alive(m["pid"], session.started_at)]
            if not others:
                return
            learner.shared = True  # credits from now on are held until the statement below is in
            unjoined = [m["pid"] for m in others if not m.get("j")]
            update: dict = {"$set": {f"p.{self.key}.j": 1}}
            if unjoined:
                update["$addToSet"] = {"wait": {"$each": unjoined}}
            if learner.until > -math.inf:  # credited while the registration was answered
                update["$max"] = {"at": learner.until}
            await self._db[LEARNER_CLOCKS].update_one(
                {"_id": session.user_id, f"p.{self.key}.r": learner.registration}, update
            )
            for pid in unjoined:
                with contextlib.suppress(DuplicateKeyError):
                    await self._db[TAKEOVERS].insert_one(
                        {"_id": notice_id(session.user_id, pid), "processId": pid, "clock": session.user_id}
                    )
            learner.joined = True
        log.info(
            "user=%s is live in %d other process(es): --overlap-policy=one-course shares their clock",
            session.user_id,
            len(others),
        )

    def ended(self, session: Session) -> None:
        learner = self._learners.get(session.user_id)
        if learner is not None:
            learner.sessions.discard(session.session_id)

    def credited(self, session: Session, start: float, until: float) -> None:
        """The tracker credited ``[start, until]`` to ``session`` (rule 7 within this process)."""
        learner = self._learners.get(session.user_id)
        if learner is None:
            return
        if not learner.shared:
            learner.until = max(learner.until, until)
            return
        # Checked in turn. (Not in ``until``: a join's $max would put it in ``at`` before its own check.)
        learner.credits.append((session, start, until))
        self._unchecked[session.session_id] = self._unchecked.get(session.session_id, 0) + 1
        self._drain_soon(learner)

    def notified(self, user_id: str) -> None:
        """Another process has this learner too (a notice): join the learner's clock.

        Also when this process has the learner shared already: it registered
        just before the notifier saw it joined, and must take itself off ``wait``.
        """
        learner = self._learners.get(user_id)
        if learner is None:
            return
        learner.shared = True  # every credit from now on is checked
        learner.rejoin = True  # after the join, sent before them
        self._drain_soon(learner)

    def _drain_soon(self, learner: _Learner) -> None:
        if learner.task is None or learner.task.done():
            learner.task = asyncio.get_running_loop().create_task(self._drain(learner))

    async def _drain(self, learner: _Learner) -> None:
        try:
            async with learner.lock, errors():
                if not learner.joined or learner.rejoin:
                    learner.rejoin = False  # a notice read during the join asks for another
                    try:
                        await self._join(learner)
                    except BaseException:
                        learner.rejoin = True
                        raise
                while learner.credits and await self._check(learner):
                    pass
        except StoreUnavailable as exc:
            log.warning(
                "learner clock of user=%s not reached (retried at the next poll): %s", learner.user_id, exc
            )

    async def _join(self, learner: _Learner) -> None:
        update: dict = {"$set": {f"p.{self.key}.j": 1}, "$pull": {"wait": self.process_id}}
        if learner.until > -math.inf:
            update["$max"] = {"at": learner.until}
        await self._db[LEARNER_CLOCKS].update_one(
            {"_id": learner.user_id, f"p.{self.key}.r": learner.registration}, update
        )
        learner.joined = True

    async def _check(self, learner: _Learner) -> bool:
        """Send the held credits in one statement; False if a process has yet to join (retried)."""
        batch = list(learner.credits)
        prior = await self._db[LEARNER_CLOCKS].find_one_and_update(
            {"_id": learner.user_id, "wait": {"$size": 0}},
            {"$max": {"at": max(until for _, _, until in batch)}},
            return_document=ReturnDocument.BEFORE,
        )
        if prior is None:
            return await self._unblock(learner)
        instant = float(prior.get("at", -1.0))
        for session, start, until in batch:
            # Rule 7 in the order the store saw the credits: what came before the instant is taken.
            overlap = min(instant, until) - start
            if overlap > 0:
                self.overlaps.append((session, overlap))
            instant = max(instant, until)
            self._unchecked[session.session_id] -= 1
            if not self._unchecked[session.session_id]:
                del self._unchecked[session.session_id]
        del learner.credits[: len(batch)]
        return True

    async def _unblock(self, learner: _Learner) -> bool:
        """Take off ``wait`` the processes that will never join; whether any was."""
        doc = await self._db[LEARNER_CLOCKS].find_one({"_id": learner.user_id})
        if doc is None:
            return False
        waiting = set(doc.get("wait") or [])
        members = {m["pid"] for m in (doc.get("p") or {}).values()}
        await self._learn_expiry(waiting)
        now = self._clock()
        gone = [pid for pid in waiting if pid not in members or not self._alive(pid, now)]
        if not gone:
            return False
        await self._db[LEARNER_CLOCKS].update_one(
            {"_id": learner.user_id}, {"$pull": {"wait": {"$in": gone}}}
        )
        return True

    async def poll(self) -> list[tuple[Session, float]]:
        """Retry held credits, unregister learners who left; the overlaps found since the last poll."""
        leaving = []
        for learner in list(self._learners.values()):
            if learner.credits or learner.rejoin or (learner.shared and not learner.joined):
                self._drain_soon(learner)
            elif not learner.sessions and not learner.lock.locked():
                del self._learners[learner.user_id]
                leaving.append(learner)
        if leaving:
            try:
                await self._leave(leaving)
            except StoreUnavailable:
                for learner in leaving:  # retried at the next poll
                    self._learners.setdefault(learner.user_id, learner)
                raise
        overlaps, self.overlaps = self.overlaps, []
        return overlaps

    async def _leave(self, learners: list[_Learner]) -> None:
        ops = []
        for learner in learners:
            update: dict = {"$unset": {f"p.{self.key}": ""}, "$pull": {"wait": self.process_id}}
            if learner.until > -math.inf:
                update["$max"] = {"at": learner.until}
            ops.append(UpdateOne({"_id": learner.user_id, f"p.{self.key}.r": learner.registration}, update))
        async with errors():
            await self._db[LEARNER_CLOCKS].bulk_write(ops, ordered=False)

    async def settle(self, timeout: float) -> list[tuple[Session, float]]:
        """Shutting down: wait (at most ``timeout``) for the credits being checked; the overlaps found."""
        tasks = [learner.task for learner in self._learners.values() if learner.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        overlaps, self.overlaps = self.overlaps, []
        return overlaps

    async def stop(self) -> None:
        """Leave every learner's clock (shutting down, after :meth:`settle`)."""
        for learner in self._learners.values():
            if learner.task is not None:
                learner.task.cancel()
        learners, self._learners = list(self._learners.values()), {}
        if learners:
            await self._leave(learners)

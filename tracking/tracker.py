"""The session accounting: who is connected, what they have earned, who has timed out.

The :class:`Tracker` is the single owner of live sessions in a process. It
implements the counting rules of ``docs/protocol.md``:

1. only server time counts (every method takes ``now``);
2. credit runs from the opening through each accepted heartbeat, each gap
   capped at the heartbeat timeout; the tail after the last accepted
   heartbeat is earned only on a clean end (see :class:`EndReason`);
3. one live session per (user, course): opening a second ends the first at
   the same instant, so no wall clock second is earned twice;
   and at most ``max_sessions_per_user`` live sessions per learner across
   courses (:meth:`Tracker.admits`; 0 means no cap);
6. credit is kept to the microsecond, so fractions are carried, never rounded away;
7. optionally (``one_course_at_a_time``, ``--overlap-policy=one-course``) a
   learner's time is credited to one course at a time: each credit covers the
   time since the learner's previous credit in *any* course, so the slice
   between two heartbeats of different courses goes to the course whose
   heartbeat closed it (the one that arrived last), and two courses open
   side by side share the wall time instead of each earning all of it. Off by
   default: each course earns its own time (rule 3 per course only).
   Across processes (a learner's courses live in several server processes
   sharing a store) the learner's instant is shared through the store: each
   credit is reported to :attr:`Tracker.credit_listener`, and the part of it
   another process had already credited is taken back (:meth:`Tracker.take_back`):
   from the session's next credits while it is open, so the ``studyTime``
   its client sees never decreases, and at once once it has ended.

Timeouts are kept in an insertion-ordered dict. Every deadline is "last
accepted heartbeat + timeout" with a constant timeout and a clock that does
not run backwards, so moving a session to the end on each heartbeat keeps the
dict sorted by deadline: the sweep pops from the front and stops at the first
session that has not expired, costing O(expired + 1) rather than O(live).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import Enum

from .limits import KeyedLimit
from .session import EndReason, Session


class Verdict(Enum):
    """The outcome of a heartbeat."""

    ACCEPTED = "accepted"
    TOO_FREQUENT = "too_frequent"  # sooner than the minimum interval: no credit
    EXPIRED = "expired"  # the session had already timed out: it is now ended


class Tracker:
    """Live sessions and their credit. Pure: no I/O, no clock of its own."""

    def __init__(
        self,
        heartbeat_timeout: float,
        min_heartbeat_interval: float,
        max_sessions_per_user: int = 0,
        *,
        one_course_at_a_time: bool = False,
    ) -> None:
        if heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        self.one_course_at_a_time = one_course_at_a_time
        #: Rule 7: user_id -> the server time up to which the learner has been credited, any course
        #: (only while the policy is on and the learner has a live session).
        self._user_until: dict[str, float] = {}
        #: Rule 7 across processes: told of every credit ``(session, from, until)`` while the policy is
        #: on (the credit covered exactly ``[from, until]``). None: nobody asks (one process).
        self.credit_listener: Callable[[Session, float, float], None] | None = None
        #: session_id -> seconds taken back from an open session, paid by its next credits or its end.
        self._owed: dict[str, float] = {}
        self.heartbeat_timeout = heartbeat_timeout
        self.min_heartbeat_interval = min_heartbeat_interval
        self._by_key: dict[tuple[str, str], Session] = {}
        #: Live sessions per user_id, kept in step with ``_by_key``.
        self._per_user = KeyedLimit(max_sessions_per_user)
        # session_id -> session, in deadline order (see the module docstring).
        self._by_deadline: OrderedDict[str, Session] = OrderedDict()
        self._now = float("-inf")
        #: Every second credited by this tracker, fractions included (a metric).
        self.credited_seconds = 0.0

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_key.values()))

    def admits(self, user_id: str, course_id: str) -> bool:
        """Whether :meth:`open` for this (user, course) stays within the per-learner cap.

        Replacing the learner's session for the same course always does: the
        replaced session ends as the new one starts, so the count stays the same.
        """
        return (user_id, course_id) in self._by_key or not self._per_user.full(user_id)

    def open(
        self,
        user_id: str,
        course_id: str,
        now: float,
        *,
        session_id: str,
        remote_addr: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[Session, Session | None]:
        """Start a session; return it and the session it replaced, already ended, if any.

        The per-learner cap is the caller's to check first (:meth:`admits`),
        so that it can refuse the connection with its own close code.
        """
        now = self._advance(now)
        replaced = self._by_key.get((user_id, course_id))
        if replaced is not None:
            self.end(replaced, now, EndReason.REPLACED)
        session = Session(
            session_id=session_id,
            user_id=user_id,
            course_id=course_id,
            started_at=now,
            credited_until=now,
            remote_addr=remote_addr,
            user_agent=user_agent,
        )
        self._by_key[session.key] = session
        self._per_user.add(user_id)
        self._by_deadline[session_id] = session
        return session, replaced

    def heartbeat(self, session: Session, now: float, client_time: datetime | None = None) -> Verdict:
        """Credit an accepted heartbeat, or say why it earns nothing."""
        if not session.is_open:
            raise ValueError(f"session {session.session_id} has ended")
        now = self._advance(now)
        if now - session.credited_until >= self.heartbeat_timeout:
            # The sweep has not run yet, but the deadline has passed: the
            # session timed out, whatever arrives late.
            self.end(session, now, EndReason.TIMEOUT)
            return Verdict.EXPIRED
        if (
            session.last_heartbeat_at is not None
            and now - session.last_heartbeat_at < self.min_heartbeat_interval
        ):
            return Verdict.TOO_FREQUENT
        self._credit(session, now)
        session.heartbeats += 1
        session.last_heartbeat_at = now
        session.last_client_time = client_time
        session.rev += 1
        self._by_deadline.move_to_end(session.session_id)
        return Verdict.ACCEPTED

    def end(
        self, session: Session, now: float, reason: EndReason, *, credit_until: float | None = None
    ) -> bool:
        """End a session; return False if it had already ended.

        A session past its deadline ends as a timeout whatever ``reason``
        says: its silence already forfeited the tail. ``credit_until`` caps
        the credit, for an end decided elsewhere at an earlier instant (a
        takeover by another process).
        """
        if not session.is_open:
            return False
        now = self._advance(now)
        if now - session.credited_until >= self.heartbeat_timeout:
            reason = EndReason.TIMEOUT
        if reason.earns_tail:
            self._credit(session, now if credit_until is None else min(now, credit_until))
        if credit_until is not None:
            self.cap(session, credit_until)
        # What its credits since had not paid (rule 7 across processes): the end is the last credit.
        self._take(session, self._owed.pop(session.session_id, 0.0))
        session.ended_at = now
        session.end_reason = reason
        session.rev += 1
        self._forget(session)
        return True

    def cap(self, session: Session, until: float) -> bool:
        """Take back the credit a session earned after ``until``; return whether there was any.

        For a takeover by another process decided at ``until``: heartbeats
        this process accepted before it heard of it (within one poll) must
        not count twice. Exact because every credited gap is shorter than
        the heartbeat timeout (a longer one ends the session without
        credit), so a session's credit is the wall time from its start to
        ``credited_until``. Works on ended sessions too (their final snapshot
        is then written again with the higher ``rev``).
        """
        until = max(until, session.started_at)
        excess = session.credited_until - until
        if excess <= 0:
            return False
        session.seconds = max(0.0, session.seconds - excess)
        session.credited_until = until
        session.rev += 1
        return True

    def take_back(self, session: Session, seconds: float) -> float:
        """Take back ``seconds`` of a session's credit; return how much its ``seconds`` lost now.

        Rule 7 across processes: another process had already credited that
        part of the learner's wall time to another course. An open session
        pays it from its next credits (or at its end), so the ``studyTime``
        its client is answered never decreases (docs/protocol.md); an ended
        one at once, at most all it has. Unlike :meth:`cap` the session's
        ``credited_until`` (its deadline) does not move: the time was
        studied, only credited elsewhere.
        """
        if seconds <= 0:
            return 0.0
        if session.is_open:
            self._owed[session.session_id] = self._owed.get(session.session_id, 0.0) + seconds
            return 0.0
        return self._take(session, seconds)

    def _take(self, session: Session, seconds: float) -> float:
        taken = min(seconds, session.seconds)
        if taken <= 0:
            return 0.0
        session.seconds = round(session.seconds - taken, 6)
        self.credited_seconds -= taken
        session.rev += 1
        return taken

    def discard(self, session: Session) -> None:
        """Forget a session that never started (its opening failed); it earned nothing."""
        self._owed.pop(session.session_id, None)
        self._forget(session)
        if session.is_open:
            session.end_reason = EndReason.CONNECTION_LOST
            session.ended_at = session.started_at

    def expire(self, now: float) -> list[Session]:
        """End and return every session whose heartbeat deadline has passed."""
        now = self._advance(now)
        expired = []
        deadline_order = self._by_deadline
        cutoff = now - self.heartbeat_timeout
        while deadline_order:
            session = next(iter(deadline_order.values()))
            if session.credited_until > cutoff:
                break
            self.end(session, now, EndReason.TIMEOUT)
            expired.append(session)
        return expired

    def _credit(self, session: Session, until: float) -> None:
        gap = until - session.credited_until
        if gap <= 0:
            return
        credit = min(gap, self.heartbeat_timeout)
        if self.one_course_at_a_time:
            # Rule 7: only the part of [until - credit, until] after the learner's last credit anywhere.
            credited = self._user_until.get(session.user_id, -math.inf)
            credit = max(0.0, min(credit, until - credited))
            self._user_until[session.user_id] = max(credited, until)
            if credit > 0 and self.credit_listener is not None:
                self.credit_listener(session, until - credit, until)
            owed = self._owed.get(session.session_id)
            if owed is not None:  # taken back while open (across processes): paid from this credit
                paid = min(owed, credit)
                credit -= paid
                if owed > paid:
                    self._owed[session.session_id] = owed - paid
                else:
                    del self._owed[session.session_id]
        # Credit is kept to the microsecond (the clock's own resolution at
        # today's epoch): rounding the running sum stops float error from
        # accumulating over thousands of heartbeats, while no real fraction
        # of a second is ever dropped.
        session.seconds = round(session.seconds + credit, 6)
        self.credited_seconds += credit
        session.credited_until = until

    def _forget(self, session: Session) -> None:
        if self._by_key.get(session.key) is session:
            del self._by_key[session.key]
            self._per_user.remove(session.user_id)
            if not self._per_user.count(session.user_id):
                self._user_until.pop(session.user_id, None)
        self._by_deadline.pop(session.session_id, None)

    def _advance(self, now: float) -> float:
        # The deadline order relies on time never running backwards.
        if now > self._now:
            self._now = now
        return self._now

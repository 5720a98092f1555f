"""Coordination between server processes sharing one store.

The :class:`~tracking.tracker.Tracker` keeps one live session per (user,
course) within a process. A :class:`Coordinator` extends that rule across
processes and cleans up after processes that die. The Service calls it at
four points: when a session opens (:meth:`~Coordinator.claim`), when one
ends (:meth:`~Coordinator.ended`), periodically (:meth:`~Coordinator.poll`)
and at shutdown (:meth:`~Coordinator.settle`, :meth:`~Coordinator.stop`);
with ``--overlap-policy=one-course`` the tracker also tells it of each credit
(:meth:`~Coordinator.credited`). It never decides credit itself:
it reports takeovers, and the tracker caps the replaced session's credit at
the takeover instant.

:class:`Coordinator` itself is the single-process case (the SQLite store):
every method does nothing. A store that several processes share brings its
own (:class:`storage.mongodb.coordination.MongoCoordinator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tracking.session import Session, SessionRecord


class Writer(Protocol):
    """What a coordinator needs of the write-behind (:class:`storage.writer.SessionWriter`)."""

    async def total_seconds(self, user_id: str, course_id: str) -> float: ...

    def is_saved(self, session_id: str) -> bool: ...


@dataclass
class PollResult:
    """What a poll found for the Service to act on."""

    #: Live or recently ended sessions of this process that another process
    #: took over, with the takeover instant (server time).
    takeovers: list[tuple[Session, float]] = field(default_factory=list)
    #: This process was presumed dead by the others (it could not reach the
    #: store for --process-timeout): its open sessions were closed as
    #: server_lost and it must end them here too.
    presumed_dead: bool = False
    #: Sessions of dead processes this poll closed as server_lost.
    recovered: list[SessionRecord] = field(default_factory=list)
    #: ``--overlap-policy=one-course`` across processes: seconds of a session's credit that
    #: another process had already credited to the same learner (rule 7), to take back.
    overlaps: list[tuple[Session, float]] = field(default_factory=list)


class Coordinator:
    """A single server process: nothing to coordinate."""

    #: Seconds between polls, or None when there is nothing to poll.
    poll_interval: float | None = None

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    async def start(self, now: float) -> None:
        """Announce this process (before it serves connections)."""

    async def stop(self, *, saved: bool) -> None:
        """Withdraw this process and release what it holds (after the last save).

        ``saved`` says whether every session's final snapshot reached the store.
        """

    async def claim(self, session: Session) -> float:
        """Take the (user, course) of a new session from whichever process holds it.

        Returns the learner's total for the course before this session (the
        ``base_seconds`` announced to the client): every earlier session's
        credit, including what is still waiting in a write-behind buffer
        here or, estimated, in another process's. Raises
        :class:`StoreUnavailable`. A single process reads the store's total
        and adds what its writer has not written yet.
        """
        return await self.writer.total_seconds(session.user_id, session.course_id)

    def ended(self, session: Session) -> None:
        """A session of this process ended; release its lease once its final snapshot is saved."""

    def credited(self, session: Session, start: float, until: float) -> None:
        """``--overlap-policy=one-course``: ``session`` was credited ``[start, until]`` (rule 7).

        A single process has the learner's every session in its tracker, so
        there is nothing to share. A coordinator of several processes checks
        the credit against the learner's other processes (``PollResult.overlaps``).
        """

    async def poll(self, now: float) -> PollResult:
        """Refresh liveness, collect takeovers, release leases, reap dead processes."""
        return PollResult()

    async def settle(self, timeout: float) -> list[tuple[Session, float]]:
        """Shutting down, before the last save: the overlaps (``PollResult.overlaps``) of the
        credits still being checked, waiting for them at most ``timeout``."""
        return []

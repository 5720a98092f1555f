"""The outbox interface: statements waiting for a Learning Record Store, kept in the store.

One entry per ended session (keyed by its id), holding the statement to
send. :meth:`Outbox.enqueue` is idempotent: it adds an entry only if the
session has none, or replaces the statement of an undelivered entry with one
of a higher ``rev`` (the session's final snapshot was corrected); a delivered
entry is never resurrected. Delivered entries are kept for a while
(:meth:`Outbox.purge`), so a later enqueue of the same session (a catch-up
after a restart) finds them and adds nothing. Each backend implements it
next to its store (``storage/sqlite/outbox.py``, ``storage/mongodb/outbox.py``);
``xapi/forwarder.py`` uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """A statement to deliver (``statement`` is its JSON text) and how its delivery went so far."""

    session_id: str
    rev: int
    statement: str
    enqueued_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Undelivered entries: how many, and when the oldest was enqueued (None: none waiting)."""

    waiting: int
    oldest: float | None
    failed: int  # given up on: the LRS refused them for good (400, 409); kept for the operator


class Outbox(ABC):
    """Durable outbox of xAPI statements. Raises :class:`storage.StoreUnavailable` when unreachable."""

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create the table or collection and its indexes if missing (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def enqueue(self, entries: Sequence[Entry]) -> None:
        """Add each entry unless its session has one; a higher ``rev`` replaces an undelivered one."""

    @abstractmethod
    async def claim(self, now: float, limit: int, lease: float) -> list[Entry]:
        """Up to ``limit`` undelivered entries due by ``now``, oldest first, each put off by ``lease`` s.

        The lease keeps other server processes (and this one) from sending the
        same entry while its delivery is under way; an entry whose delivery
        never reports back is due again when the lease runs out.
        """

    @abstractmethod
    async def delivered(self, session_id: str, now: float) -> None:
        """The LRS has the statement: mark the entry delivered."""

    @abstractmethod
    async def retry(self, session_id: str, attempts: int, at: float, error: str) -> None:
        """The delivery failed (``attempts`` so far): try again at ``at``."""

    @abstractmethod
    async def fail(self, session_id: str, now: float, error: str) -> None:
        """The LRS refused the statement for good: keep the entry, never send it again."""

    @abstractmethod
    async def stats(self) -> OutboxStats: ...

    @abstractmethod
    async def purge(self, before: float) -> int:
        """Delete entries delivered before ``before``; return how many."""

"""One study session (one connection) and the record it leaves behind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EndReason(StrEnum):
    """Why a session ended. Stored in the study record as ``end_reason``."""

    CLIENT_CLOSED = "client_closed"  # close frame from the client: earns the tail
    IDLE = "idle"  # the client closed because nobody was active (its idle pause): earns the tail
    PAGE_HIDDEN = "page_hidden"  # the client closed because its page was hidden: earns the tail
    CONNECTION_LOST = "connection_lost"  # no close frame: nothing after the last heartbeat
    TIMEOUT = "timeout"  # no accepted heartbeat for the timeout: nothing after it
    REPLACED = "replaced"  # a newer connection for the same user and course: earns the tail
    SERVER_SHUTDOWN = "server_shutdown"  # graceful shutdown: earns the tail
    SERVER_LOST = "server_lost"  # found open after a crash: keeps its last checkpoint
    RATE_LIMITED = "rate_limited"  # closed with 4429 for flooding: nothing after the last heartbeat
    REVOKED = "revoked"  # its credential no longer stands after a reload (4401): earns the tail

    @property
    def earns_tail(self) -> bool:
        """Whether the time since the last accepted heartbeat is credited (rule 2)."""
        return self in _EARNS_TAIL

    @classmethod
    def client_closed(cls, reason: str | None) -> EndReason:
        """The end of a session whose client sent a close frame with ``reason`` (its text, if any).

        A client may say that it paused (docs/protocol.md, "Closing"): the
        reasons :data:`CLIENT_PAUSES` name, exactly, are recorded as such;
        any other text, or none, is ``client_closed``. The client's own words
        are never stored: they could be anything (personal data, markup), and
        the end reasons stay a short, known list. All of them earn the tail.
        """
        return CLIENT_PAUSES.get(reason, cls.CLIENT_CLOSED)


#: Close-frame reasons a client may send to say why it paused, and the end reason each records:
#: the browser client's ``idle`` and ``page_hidden`` (docs/client.md, its ``lastClose.kind``).
#: No reason (None) is no pause.
CLIENT_PAUSES: dict[str | None, EndReason] = {"idle": EndReason.IDLE, "page_hidden": EndReason.PAGE_HIDDEN}

_EARNS_TAIL = frozenset(
    {
        EndReason.CLIENT_CLOSED,
        EndReason.IDLE,
        EndReason.PAGE_HIDDEN,
        EndReason.REPLACED,
        EndReason.SERVER_SHUTDOWN,
        EndReason.REVOKED,
    }
)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """An immutable snapshot of a session: what the stores persist.

    Times are server seconds since the epoch. ``seconds`` is the credit of
    this session alone, fractions included (rule 6). ``rev`` grows with every
    change, so a store can apply snapshots idempotently and never let an
    older one overwrite a newer one, however writes are retried or reordered.
    """

    session_id: str
    user_id: str
    course_id: str
    started_at: float
    credited_until: float
    seconds: float
    heartbeats: int
    rev: int
    ended_at: float | None = None
    end_reason: str | None = None
    remote_addr: str | None = None
    user_agent: str | None = None
    last_client_time: str | None = None

    @property
    def is_open(self) -> bool:
        return self.end_reason is None


@dataclass(eq=False, slots=True)
class Session:
    """The live state of one connection's session, owned by the Tracker.

    ``credited_until`` is the server time up to which credit has been given:
    the opening time, then each accepted heartbeat, then the end. While the
    session is open the next credit runs from there.
    """

    session_id: str
    user_id: str
    course_id: str
    started_at: float
    credited_until: float
    remote_addr: str | None = None
    user_agent: str | None = None
    base_seconds: float = 0.0  # credit of earlier sessions of this user and course
    seconds: float = 0.0
    heartbeats: int = 0
    last_heartbeat_at: float | None = None
    last_client_time: datetime | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    rev: int = 1
    #: The auth backend's handle on the credential the session opened with (a token's
    #: hash, a JWT's signing key), never the credential: a reload asks whether it still stands.
    grant: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.course_id)

    @property
    def is_open(self) -> bool:
        return self.end_reason is None

    @property
    def study_time(self) -> int:
        """The learner's cumulative whole seconds for the course, as sent to the client.

        Rounded to the microsecond before flooring, so a float sum such as
        119.99999999997 of credits that add up to 120 shows 120. Sent with
        every reply, so the rounding (the slow part) is done only where it
        can matter: within a microsecond below a whole second.
        """
        total = self.base_seconds + self.seconds
        whole = int(total)
        if 0.0 <= total - whole < 0.999999:  # exact: a float minus its whole part
            return whole
        return int(round(total, 6))

    def record(self) -> SessionRecord:
        return SessionRecord(
            session_id=self.session_id,
            user_id=self.user_id,
            course_id=self.course_id,
            started_at=self.started_at,
            credited_until=self.credited_until,
            seconds=self.seconds,
            heartbeats=self.heartbeats,
            rev=self.rev,
            ended_at=self.ended_at,
            end_reason=self.end_reason.value if self.end_reason else None,
            remote_addr=self.remote_addr,
            user_agent=self.user_agent,
            last_client_time=self.last_client_time.isoformat() if self.last_client_time else None,
        )

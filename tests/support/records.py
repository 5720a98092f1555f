"""Study records made up for the store and report tests."""

from __future__ import annotations

import uuid
from datetime import datetime

from tracking.session import SessionRecord

T0 = 1_700_000_000.0


def record(user="u1", course="c1", *, seconds=10.5, started=T0, rev=2, ended=True, **extra) -> SessionRecord:
    fields = dict(
        session_id=uuid.uuid4().hex,
        user_id=user,
        course_id=course,
        started_at=started,
        credited_until=started + seconds,
        seconds=seconds,
        heartbeats=3,
        rev=rev,
        ended_at=started + seconds + 1 if ended else None,
        end_reason="client_closed" if ended else None,
        remote_addr="127.0.0.1",
        user_agent="pytest",
        last_client_time="2023-12-25T10:00:00+00:00",
    )
    fields.update(extra)
    return SessionRecord(**fields)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def rec(user="u1", course="c1", *, start: float, seconds: float, ended=True, **extra) -> SessionRecord:
    """A :func:`record` as the report tests make them: it ends when its credit does."""
    fields = {
        "heartbeats": int(seconds // 30),
        "rev": 5,
        "remote_addr": None,
        "user_agent": None,
        "last_client_time": None,
        **({"ended_at": start + seconds} if ended else {}),
        **extra,
    }
    return record(user, course, seconds=seconds, started=start, ended=ended, **fields)


# Midnight in Shanghai (UTC+8), where the report tests put sessions that cross it.
MIDNIGHT = at("2024-02-01T00:00:00+08:00")

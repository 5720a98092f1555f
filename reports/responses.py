"""The JSON bodies of the reports, assembled once for the HTTP endpoints and the CLI's ``--format=json``.

Pure: each function takes the rows of :mod:`reports.rows` and what the
request resolved (window, time zone, page) and returns the body, keys in
the order the endpoints have always written them. :func:`with_as_of` adds
``asOf`` and :func:`json_text` is the one serialisation, so that
``server.py report ... --format=json`` prints exactly what the endpoint
answers for the same request.
"""

from __future__ import annotations

import json
from datetime import date
from zoneinfo import ZoneInfo

from .figures import Day
from .params import Window
from .rows import iso
from .source import Scope


def json_text(body: dict) -> str:
    """A body as the endpoints send it: compact JSON."""
    return json.dumps(body, separators=(",", ":"))


def with_as_of(body: dict, as_of: float, tz: ZoneInfo) -> dict:
    """``body`` with ``asOf``, the time its figures were read (taken before reading them)."""
    return {**body, "asOf": iso(as_of, tz)}


def range_fields(window: Window, tz: ZoneInfo) -> dict:
    """``from``/``to`` echoed back resolved in ``tz`` (``None`` when open)."""
    return {"from": iso(window.start, tz), "to": iso(window.end, tz)}


def page_fields(limit: int | None, offset: int, end: int, total: int) -> dict:
    """``limit``, ``offset``, ``total`` and ``next`` of a page of a ranked list that ends at ``end``."""
    return {"limit": limit, "offset": offset, "total": total, "next": end if end < total else None}


def learner_courses(user_id: str, window: Window, tz: ZoneInfo, found: list[dict]) -> dict:
    return {"userId": user_id, **range_fields(window, tz), "courses": found}


def course_learners(
    course_id: str,
    window: Window,
    tz: ZoneInfo,
    found: list[dict],
    limit: int | None,
    offset: int,
    total: int,
) -> dict:
    return {
        "courseId": course_id,
        **range_fields(window, tz),
        "learners": found,
        **page_fields(limit, offset, offset + len(found), total),
    }


def policy_periods(log: list[tuple[float, str]], window: Window, tz: ZoneInfo) -> list[dict]:
    """The ``--overlap-policy`` periods that overlap ``window``, clipped to it: ``{policy, from, to}``.

    ``log`` is each change, oldest first; before the first change (and with
    none) the default ``each-course`` was in force. ``from``/``to`` are None
    where the period (or the window) is open.
    """
    starts = [(float("-inf"), "each-course"), *log]
    periods: list[dict] = []
    for i, (start, policy) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else float("inf")
        lo, hi = max(start, window.start), min(end, window.end)
        if lo >= hi:
            continue
        if periods and periods[-1]["policy"] == policy:
            periods[-1]["to"] = iso(hi, tz)
            continue
        periods.append({"policy": policy, "from": iso(lo, tz), "to": iso(hi, tz)})
    return periods


def daily(
    scope: Scope,
    window: Window,
    tz: ZoneInfo,
    days: list[Day],
    found: list[dict],
    policies: list[dict] | None = None,
) -> dict:
    """``found`` are the rows of ``days``; the totals are summed from ``days`` themselves.

    ``policies`` (:func:`policy_periods`) say which ``--overlap-policy`` recorded which part of the range.
    """
    return {
        "userId": scope.user_id,
        "courseId": scope.course_id,
        "tz": tz.key,
        **range_fields(window, tz),
        "seconds": sum(d.seconds for d in days),
        "secondsExact": sum(d.micros for d in days) / 1_000_000,
        "days": found,
        "overlapPolicy": policies if policies is not None else policy_periods([], window, tz),
    }


def sessions(
    scope: Scope, window: Window, tz: ZoneInfo, page: list[dict], limit: int, offset: int, more: bool
) -> dict:
    """One page of sessions; ``more`` says whether a next page exists (there is no total)."""
    return {
        "userId": scope.user_id,
        "courseId": scope.course_id,
        **range_fields(window, tz),
        "sessions": page,
        "limit": limit,
        "offset": offset,
        "next": offset + limit if more else None,
    }


def courses(
    window: Window, tz: ZoneInfo, found: list[dict], limit: int | None, offset: int, total: int
) -> dict:
    return {
        **range_fields(window, tz),
        "tz": tz.key,
        "courses": found,
        **page_fields(limit, offset, offset + len(found), total),
    }


def daily_learners(
    course_id: str,
    window: Window,
    tz: ZoneInfo,
    dates: list[date],
    learners: list[dict],
    limit: int | None,
    offset: int,
    total: int,
) -> dict:
    return {
        "courseId": course_id,
        "tz": tz.key,
        **range_fields(window, tz),
        "dates": [d.isoformat() for d in dates],
        "learners": learners,
        **page_fields(limit, offset, offset + len(learners), total),
    }

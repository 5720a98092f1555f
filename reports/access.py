"""Who may read which report. Pure.

- No authentication configured: everything is readable (the service then
  only listens on loopback; see docs/auth.md).
- ``admin``: everyone's data.
- ``teacher``: everything about a course (its leaderboard, its learners'
  days and sessions in it), but not a learner's other courses.
- Anyone else: their own data only.

A credential limited to some courses stays limited whatever its roles: a
report naming another course is refused, and a learner's course list only
shows the courses it covers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

ADMIN = "admin"
TEACHER = "teacher"


class Reader(Protocol):
    """What access needs from an identity (``auth.base.Identity`` has it)."""

    user_id: str
    courses: Collection[str] | None
    roles: Collection[str]


class Forbidden(Exception):
    """The identity may not read this report (403); the message says why, without secrets."""


def check(
    reader: Reader | None, user_id: str | None, course_id: str | None, *, filtered: bool = False
) -> None:
    """Raise :class:`Forbidden` unless ``reader`` may read data of ``user_id`` in ``course_id``.

    ``None`` for either means "every": a course leaderboard names no user, a
    learner's course list names no course. ``filtered`` says the report drops
    the courses a limited credential does not cover (see :func:`visible`);
    other reports of every course need a credential that covers every course.
    """
    if reader is None:
        return
    if reader.courses is not None:
        if course_id is None and not filtered:
            raise Forbidden("the credential covers only some courses: give courseId")
        if course_id is not None and course_id not in reader.courses:
            raise Forbidden("the credential does not cover this course")
    if ADMIN in reader.roles or (user_id is not None and user_id == reader.user_id):
        return
    if TEACHER in reader.roles and course_id is not None:
        return
    if user_id is None:
        raise Forbidden("reading a whole course needs the teacher or admin role")
    raise Forbidden("the credential belongs to another user")


def visible(reader: Reader | None, course_id: str) -> bool:
    """Whether a course may appear in a report for ``reader`` (credentials limited to some courses)."""
    return reader is None or reader.courses is None or course_id in reader.courses

"""Who may do what: the one module that decides it, for sockets and reports alike. Pure.

A backend says *who* is calling (an :class:`~auth.base.Identity`); what that
identity may do is decided here, the same for every backend, so a plugin
never has to.

Studying (the socket): a learner studies as themselves; another learner's
id needs the ``admin`` role.

Reading reports:

- ``admin``: everyone's data (``--auth=none`` identifies every reader as
  one: the service then only answers loopback requests, see docs/auth.md).
- ``teacher``: everything about a course (its leaderboard, its learners'
  days and sessions in it), but not a learner's other courses.
- Anyone else: their own data only.
- The course list (``/api/reports/courses``) needs the ``teacher`` or
  ``admin`` role (:func:`may_list_courses`); it shows only the courses the
  credential covers.

Either way a credential limited to some courses stays limited whatever its
roles: a course outside them is refused, and a learner's course list only
shows the courses it covers.

The dashboards (:func:`dashboards`) follow from these rules: everyone with
a user id has "My study" (their own data, which :func:`may_read` always
allows, one covered course at a time for a limited credential), and
teachers and admins "Courses".
"""

from __future__ import annotations

from .base import ADMIN, TEACHER, Identity, forbidden

__all__ = ["dashboards", "may_list_courses", "may_read", "may_study", "visible"]


def may_study(identity: Identity, user_id: str, course_id: str) -> None:
    """Raise ``forbidden`` unless ``identity`` may record study time as ``user_id`` in ``course_id``."""
    if identity.user_id != user_id and not identity.has_role(ADMIN):
        raise forbidden("the credential belongs to another user")
    if not _covers(identity, course_id):
        raise forbidden("the credential does not cover this course")


def may_read(
    identity: Identity, user_id: str | None, course_id: str | None, *, filtered: bool = False
) -> None:
    """Raise ``forbidden`` unless ``identity`` may read data of ``user_id`` in ``course_id``.

    ``None`` for either means "every": a course leaderboard names no user, a
    learner's course list names no course. ``filtered`` says the report drops
    the courses a limited credential does not cover (see :func:`visible`);
    other reports of every course need a credential that covers every course.
    """
    if identity.courses is not None:
        if course_id is None and not filtered:
            raise forbidden("the credential covers only some courses: give courseId")
        if course_id is not None and not _covers(identity, course_id):
            raise forbidden("the credential does not cover this course")
    if identity.has_role(ADMIN) or (user_id is not None and user_id == identity.user_id):
        return
    if identity.has_role(TEACHER) and course_id is not None:
        return
    if user_id is None:
        raise forbidden("reading a whole course needs the teacher or admin role")
    raise forbidden("the credential belongs to another user")


def may_list_courses(identity: Identity) -> None:
    """Raise ``forbidden`` unless ``identity`` may list courses with their totals.

    Teachers and admins may; the list is then filtered with :func:`visible`,
    so a credential limited to some courses sees only those. A learner has
    nothing to pick from a course list: their own courses are in their
    learner report.
    """
    if not (identity.has_role(ADMIN) or identity.has_role(TEACHER)):
        raise forbidden("listing courses needs the teacher or admin role")


def dashboards(identity: Identity, *, anonymous: bool = False) -> list[str]:
    """The dashboards ``identity`` lands on, each of its own data: ``learner`` ("My study": their
    own study, or for an anonymous admin a user they name) and ``course`` (a course's learners).

    A credential limited to some courses reads its own study one of those
    courses at a time (``courseId`` given), so it never meets the refusal a
    report of every course would get.
    """
    views = ["learner"] if identity.user_id or anonymous else []
    if identity.has_role(ADMIN) or identity.has_role(TEACHER):
        views.append("course")
    return views


def visible(identity: Identity, course_id: str) -> bool:
    """Whether a course may appear in a report for ``identity`` (credentials limited to some courses)."""
    return _covers(identity, course_id)


def _covers(identity: Identity, course_id: str) -> bool:
    return identity.courses is None or course_id in identity.courses

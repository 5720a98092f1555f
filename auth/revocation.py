"""Which open sessions a reload has left without a valid credential (SIGHUP). Pure.

A session is let in once, when it opens; a credential can lapse while it
studies (``tokens revoke``, a JWT signing key withdrawn from the JWKS, a key
file replaced). On a reload the service asks, for each open session, the
backend that let it in whether the credential it opened with still stands
(:meth:`auth.Authenticator.revoked`), and ends those that lapsed with 4401
(docs/auth.md, "Open sessions after a reload"). Sessions keep only the
backend's handle on their credential (:attr:`auth.Identity.grant`), never the
credential.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from .base import Authenticator


class OpenSession(Protocol):
    """What is asked of a session here (``tracking.session.Session`` has it)."""

    @property
    def user_id(self) -> str: ...

    @property
    def course_id(self) -> str: ...

    @property
    def grant(self) -> str | None: ...


S = TypeVar("S", bound=OpenSession)


def revoked_sessions(auth: Authenticator, sessions: Iterable[S]) -> list[tuple[S, str]]:
    """The sessions whose credential no longer stands, each with the backend's reason.

    A session without a grant (``--auth=none``, an HS* JWT, a plugin that
    gives none) has nothing that can lapse and is never named.
    """
    lapsed = []
    for session in sessions:
        if session.grant is None:
            continue
        reason = auth.revoked(session.grant, session.user_id, session.course_id)
        if reason is not None:
            lapsed.append((session, reason))
    return lapsed

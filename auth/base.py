"""The authentication plugin interface and what every backend shares.

A backend is an :class:`Authenticator`: built once from :class:`~settings.Settings`
at start-up, then asked for each connection (and each report request) who is
calling. It answers with an :class:`Identity` or raises :class:`AuthError`.
What the identity may do is decided by :mod:`auth.access`, the same for every
backend, so a plugin only has to say *who*, never *what is allowed*.

Nothing here may log or put a credential into an exception: reasons are
fixed phrases that are safe to log and to show the client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from tornado.httputil import HTTPServerRequest

    from settings import Settings

#: The subprotocol of the study-time socket; a browser offers it next to ``bearer.<credential>``.
SUBPROTOCOL = "study-time.v1"
#: The prefix of the subprotocol that carries a credential (the way Kubernetes does it).
BEARER_SUBPROTOCOL_PREFIX = "bearer."
#: The query parameter that carries a credential.
TOKEN_PARAMETER = "token"  # noqa: S105 (a parameter name, not a password)

#: Roles the service gives meaning to; backends may report others, which are ignored.
ADMIN = "admin"
TEACHER = "teacher"

#: Credentials longer than this are refused unread (a JWT with a few claims is well under 4 KiB).
MAX_CREDENTIAL_LENGTH = 8192


@dataclass(frozen=True)
class Identity:
    """Who is calling, as a backend established it.

    ``courses`` limits the credential to those courses; ``None`` means every
    course. ``roles`` are names such as ``admin`` and ``teacher``. ``claims``
    are whatever else the backend knows (JWT claims, a token's id); they are
    for plugins and reports, never logged whole. ``grant`` is the backend's
    handle on the credential (never the credential itself), kept with each
    session it opens, so that after a reload :meth:`Authenticator.revoked`
    can tell whether it still stands; None when it cannot lapse.
    """

    user_id: str
    courses: frozenset[str] | None = None
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    grant: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles


class AuthError(Exception):
    """Authentication or authorisation failed.

    ``code`` is ``unauthorized`` (no credential, or one that is not valid:
    close 4401) or ``forbidden`` (a valid credential that does not cover the
    request: close 4403). ``reason`` is a short phrase safe to log and to show
    the client: it must never contain the credential.
    """

    def __init__(self, code: Literal["unauthorized", "forbidden"], reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def unauthorized(reason: str) -> AuthError:
    return AuthError("unauthorized", reason)


def forbidden(reason: str) -> AuthError:
    return AuthError("forbidden", reason)


@dataclass(frozen=True)
class AuthRequest:
    """What a backend may look at: the request's headers, query, address and subprotocols.

    A plain value so that backends do not depend on Tornado and tests can
    build one directly; :func:`auth_request` builds it from a Tornado request.
    """

    headers: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    remote_addr: str | None
    subprotocols: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name (the first one if repeated)."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def query_argument(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def auth_request(request: HTTPServerRequest) -> AuthRequest:
    """The :class:`AuthRequest` for a Tornado request (WebSocket upgrade or plain HTTP)."""
    query = {
        name: [value.decode("utf-8", "replace") for value in values]
        for name, values in request.query_arguments.items()
    }
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    subprotocols = tuple(p.strip() for p in offered.split(",") if p.strip())
    return AuthRequest(
        headers=dict(request.headers.items()),  # repeated headers joined by commas
        query=query,
        remote_addr=request.remote_ip,
        subprotocols=subprotocols,
    )


def credential(request: AuthRequest) -> str | None:
    """The credential the request carries, from whichever transport it used, or None.

    Accepted transports: ``Authorization: Bearer <credential>`` (non-browser
    clients), the ``bearer.<credential>`` subprotocol (browsers; keeps it out
    of URLs and proxy logs) and the ``token`` query parameter (browsers, the
    simple way). Several transports carrying *different* credentials are
    refused rather than guessed between.
    """
    found: set[str] = set()
    authorization = request.header("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header must be 'Bearer <credential>'")
        found.add(value.strip())
    for protocol in request.subprotocols:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            found.add(protocol[len(BEARER_SUBPROTOCOL_PREFIX) :])
    token = request.query_argument(TOKEN_PARAMETER)
    if token is not None:
        found.add(token)
    found.discard("")
    if not found:
        return None
    if len(found) > 1:
        raise unauthorized("the request carries more than one different credential")
    (value,) = found
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise unauthorized("the credential is too long")
    return value


def require_credential(request: AuthRequest) -> str:
    """:func:`credential`, raising ``unauthorized`` when there is none."""
    value = credential(request)
    if value is None:
        raise unauthorized("no credential: send Authorization: Bearer, a bearer.* subprotocol or ?token=")
    return value


class Authenticator(ABC):
    """The plugin interface: say who a request comes from.

    Subclass it, implement :meth:`authenticate`, and, if the backend needs
    configuration, override :meth:`from_settings`. Select it with
    ``--auth=package.module:ClassName``. See ``docs/auth.md`` and
    ``examples/header_auth.py``.
    """

    #: The name used in logs and errors.
    name: str = "plugin"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the backend at start-up; raise ``SettingsError`` naming the setting on bad config."""
        return cls()

    @abstractmethod
    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        """Return who sent ``request`` or raise :class:`AuthError`.

        ``user_id`` is the ``userId`` the socket claims (None for report
        requests). It is a hint, not a check: :mod:`auth.access` compares.
        """

    async def reload(self) -> str | None:
        """Read again what the backend loaded from outside (files, key sets): SIGHUP calls it.

        Return a phrase for the log line saying what was reloaded (no
        secrets), or None when there is nothing to reload (the default).
        It must not raise for an unreadable source: keep what was loaded,
        log why, and say so in the phrase. Sessions are not touched here:
        :meth:`revoked` is asked about each afterwards.
        """
        return None

    def revoked(self, grant: str, user_id: str, course_id: str) -> str | None:
        """Why an open session may no longer go on, or None while its credential stands.

        ``grant`` is the :attr:`Identity.grant` the session opened with, as
        ``user_id`` in ``course_id``. Asked for every open session right after
        :meth:`reload` (SIGHUP), so it must be quick and must not block; the
        service closes the sessions it names with 4401 and logs the reason (a
        fixed phrase, no credential). The default: nothing lapses.
        """
        return None

    def describe(self) -> str:
        """One line for the start-up log (no secrets)."""
        return self.name

"""An example authentication plugin: trust the user named by a single-sign-on proxy.

Many schools already run a reverse proxy that logs people in (Shibboleth,
OAuth2 Proxy, a campus SSO) and passes the user on in a header. This plugin
believes that header, but only from the proxy's own addresses, so that a
client going around the proxy cannot name itself.

Use it with::

    STUDY_TIME_HEADER_AUTH_PROXIES=10.0.0.5 python server.py --auth=examples.header_auth:HeaderAuthenticator

It is the whole interface: a subclass of :class:`auth.Authenticator`, a
``from_settings`` that reads its configuration once at start-up (failing with
``SettingsError`` when it is wrong), and an ``async authenticate`` that returns
an :class:`auth.Identity` or raises ``AuthError``. What the identity may do
(its own user id, its courses) is checked by the service, not here.
"""

from __future__ import annotations

import os

from auth import Authenticator, AuthRequest, Identity
from auth.base import unauthorized
from settings import Settings, SettingsError

USER_HEADER = "X-Remote-User"
ROLES_HEADER = "X-Remote-Roles"
PROXIES_VARIABLE = "STUDY_TIME_HEADER_AUTH_PROXIES"


class HeaderAuthenticator(Authenticator):
    name = "header"

    def __init__(self, proxies: frozenset[str]) -> None:
        self.proxies = proxies

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderAuthenticator:
        raw = os.environ.get(PROXIES_VARIABLE, "127.0.0.1")
        proxies = frozenset(address.strip() for address in raw.split(",") if address.strip())
        if not proxies:
            raise SettingsError(f"invalid {PROXIES_VARIABLE}: list the proxy addresses to trust")
        return cls(proxies)

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        if request.remote_addr not in self.proxies:
            raise unauthorized("requests must come through the single-sign-on proxy")
        user = request.header(USER_HEADER)
        if not user:
            raise unauthorized(f"the proxy sent no {USER_HEADER} header")
        roles = frozenset((request.header(ROLES_HEADER) or "").split())
        return Identity(user_id=user, roles=roles)

    def describe(self) -> str:
        return f"header ({USER_HEADER} from {', '.join(sorted(self.proxies))})"

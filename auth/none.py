"""``--auth=none``: trust the ``userId`` the client claims.

For development and for a server only reachable from its own machine:
``settings.Settings.validate`` refuses it on a non-loopback ``--host`` unless
``--allow-insecure-auth`` is given. Every caller is trusted, so report
requests (no user id) get the ``admin`` role: there is nobody to tell apart.
"""

from __future__ import annotations

import logging
from typing import Self

from settings import Settings, is_loopback

from .base import ADMIN, Authenticator, AuthRequest, Identity

log = logging.getLogger("study_time.auth")


class NoAuthenticator(Authenticator):
    name = "none"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if not is_loopback(settings.host):
            log.warning(
                "--auth=none on --host=%s: anyone who can reach this port can record study time"
                " as any user (allowed by --allow-insecure-auth); requests must still name this"
                " server by a loopback name or one in --allowed-hosts",
                settings.host or "every interface",
            )
        if settings.allowed_origins and "*" in settings.allowed_origins:
            log.warning(
                "--auth=none with --allowed-origins=*: a page on any web site can record study time"
                " as any user (allowed by --allow-insecure-auth)"
            )
        return cls()

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        if user_id is None:
            return Identity(user_id="anonymous", roles=frozenset({ADMIN}))
        return Identity(user_id=user_id)

    def describe(self) -> str:
        return "none (every userId is trusted)"

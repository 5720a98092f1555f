"""``--auth=none``: trust the ``userId`` the client claims.

For development and for a server only reachable from its own machine:
``settings.Settings.validate`` refuses it on a non-loopback ``--host`` unless
``--allow-insecure-auth`` is given. Every caller is trusted, so report
requests (no user id) get the ``admin`` role: there is nobody to tell apart.
"""

from __future__ import annotations

from .base import ADMIN, Authenticator, AuthRequest, Identity


class NoAuthenticator(Authenticator):
    name = "none"

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        if user_id is None:
            return Identity(user_id="anonymous", roles=frozenset({ADMIN}))
        return Identity(user_id=user_id)

    def describe(self) -> str:
        return "none (every userId is trusted)"

"""Classes the plugin-loading tests point ``--auth`` at; none of them is a valid backend."""

from __future__ import annotations

from auth import Authenticator, AuthRequest, Identity


class NotAnAuthenticator:
    async def authenticate(self, request, user_id):
        return Identity(user_id="x")


class Unfinished(Authenticator):
    """Forgets to implement authenticate."""


class Blocking(Authenticator):
    def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:  # type: ignore[override]
        return Identity(user_id="x")


class Broken(Authenticator):
    """Implements the interface, but fails on every request (a plugin bug)."""

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        raise RuntimeError("bug in the plugin")


class Leaky(Authenticator):
    """Fails on every request with an error quoting every credential it was given (a careless plugin)."""

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        raise RuntimeError(
            f"bug in the plugin: Authorization: {request.header('Authorization')}"
            f" subprotocols={request.subprotocols} token={request.query_argument('token')}"
        )


not_a_class = 42

"""Classes the plugin tests point ``--auth`` at: broken ones, and one whose credentials can lapse."""

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


class Revocable(Authenticator):
    """Trusts ``X-User`` and gives each session the grant in ``X-Grant``; the grants listed in
    ``lapsed`` no longer stand after a reload, and the grant ``bug`` makes ``revoked`` raise."""

    lapsed: frozenset[str] = frozenset()

    async def authenticate(self, request: AuthRequest, user_id: str | None) -> Identity:
        return Identity(user_id=request.header("X-User") or "", grant=request.header("X-Grant"))

    def revoked(self, grant: str, user_id: str, course_id: str) -> str | None:
        if grant == "bug" and "bug" in self.lapsed:
            raise RuntimeError("bug in the plugin")
        return "lapsed in the plugin" if grant in self.lapsed else None


not_a_class = 42

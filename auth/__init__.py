"""Pluggable authentication: who opens a socket or asks for a report.

``--auth`` picks the backend (``none``, ``jwt``, ``token`` or a plugin given as
``package.module:ClassName``); :func:`build_authenticator` builds it once at
start-up. See ``docs/auth.md``.
"""

from __future__ import annotations

import inspect

from importer import ImportFromStringError, import_from_string
from settings import Settings, SettingsError

from .base import (
    SUBPROTOCOL,
    Authenticator,
    AuthError,
    AuthRequest,
    Identity,
    auth_request,
    credential,
)

__all__ = [
    "SUBPROTOCOL",
    "AuthError",
    "AuthRequest",
    "Authenticator",
    "Identity",
    "auth_request",
    "build_authenticator",
    "credential",
    "load_plugin",
]

#: The built-in backends, found by the same loader as a plugin's ``package.module:ClassName``.
BUILT_IN: dict[str, str] = {
    "none": "auth.none:NoAuthenticator",
    "jwt": "auth.jwt:JwtAuthenticator",
    "token": "auth.tokens:TokenAuthenticator",
}


def build_authenticator(settings: Settings) -> Authenticator:
    """The backend ``--auth`` names, built from ``settings``; ``SettingsError`` names a bad setting."""
    name = settings.auth
    backend = load_plugin(BUILT_IN.get(name, name))
    try:
        return backend.from_settings(settings)
    except SettingsError:
        raise
    except Exception as exc:
        raise SettingsError(
            f"invalid --auth: {name} could not be built: {type(exc).__name__}: {exc}"
        ) from None


def load_plugin(target: str) -> type[Authenticator]:
    """Import ``package.module:ClassName`` and check it implements :class:`Authenticator`."""
    try:
        cls = import_from_string(target)
    except ImportFromStringError as exc:
        raise SettingsError(f"invalid --auth: {exc}") from exc
    if not inspect.isclass(cls) or not issubclass(cls, Authenticator):
        raise SettingsError(
            f"invalid --auth: {target} is not a subclass of auth.Authenticator (see docs/auth.md)"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise SettingsError(f"invalid --auth: {target} does not implement {missing}")
    if not inspect.iscoroutinefunction(cls.authenticate):
        raise SettingsError(f"invalid --auth: {target}.authenticate must be 'async def'")
    return cls

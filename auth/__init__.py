"""Pluggable authentication: who opens a socket or asks for a report.

``--auth`` picks the backend (``none``, ``jwt``, ``token`` or a plugin given as
``package.module:ClassName``); :func:`build_authenticator` builds it once at
start-up. See ``docs/auth.md``.
"""

from __future__ import annotations

import importlib
import inspect
import logging

from settings import Settings, SettingsError, is_loopback

from .base import (
    SUBPROTOCOL,
    Authenticator,
    AuthError,
    AuthRequest,
    Identity,
    auth_request,
    authorize,
    credential,
)

__all__ = [
    "SUBPROTOCOL",
    "AuthError",
    "AuthRequest",
    "Authenticator",
    "Identity",
    "auth_request",
    "authorize",
    "build_authenticator",
    "credential",
    "load_plugin",
]

log = logging.getLogger("study_time.auth")


def build_authenticator(settings: Settings) -> Authenticator:
    """The backend ``--auth`` names, built from ``settings``; ``SettingsError`` names a bad setting."""
    name = settings.auth
    if name == "none":
        from .none import NoAuthenticator

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
        return NoAuthenticator()
    if name == "jwt":
        from .jwt import JwtAuthenticator

        return JwtAuthenticator.from_settings(settings)
    if name == "token":
        from .tokens import TokenAuthenticator

        return TokenAuthenticator.from_settings(settings)
    plugin = load_plugin(name)
    try:
        return plugin.from_settings(settings)
    except SettingsError:
        raise
    except Exception as exc:
        raise SettingsError(
            f"invalid --auth: {name} could not be built: {type(exc).__name__}: {exc}"
        ) from None


def load_plugin(dotted: str) -> type[Authenticator]:
    """Import ``package.module:ClassName`` and check it implements :class:`Authenticator`."""
    module_name, _, class_name = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error the module raises while importing
        raise SettingsError(
            f"invalid --auth: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SettingsError(f"invalid --auth: module {module_name!r} has no {class_name!r}")
    if not inspect.isclass(cls) or not issubclass(cls, Authenticator):
        raise SettingsError(
            f"invalid --auth: {dotted} is not a subclass of auth.Authenticator (see docs/auth.md)"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise SettingsError(f"invalid --auth: {dotted} does not implement {missing}")
    if not inspect.iscoroutinefunction(cls.authenticate):
        raise SettingsError(f"invalid --auth: {dotted}.authenticate must be 'async def'")
    return cls

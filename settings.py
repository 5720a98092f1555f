"""Every setting of the server, declared once.

Each field of :class:`Settings` is one setting, with its default, its parser
and its help. It can be given on the command line as ``--name=value`` (or
``--name value``) or in the environment as ``STUDY_TIME_NAME``; the command
line wins. An invalid value raises :class:`SettingsError` naming the
setting, and ``server.py`` turns that into a start-up error.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "STUDY_TIME_"


class SettingsError(ValueError):
    """A setting has an invalid value; the message names it."""


# Parsers: each takes the raw text and returns the value or raises ValueError
# with a message that completes "invalid --name: ...".


def seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number of seconds, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected zero or a positive number of seconds, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected zero or a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {text!r}")
    return value


def log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {text!r}")
    return level


def log_format(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("text", "json"):
        raise ValueError(f"expected text or json, got {text!r}")
    return lowered


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def setting(default: Any, parse: Callable[[str], Any], help: str, *, secret: bool = False) -> Any:
    """Declare a setting: a dataclass field carrying its parser and help.

    ``secret`` settings are never echoed back in error messages.
    """
    return field(default=default, metadata={"parse": parse, "help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", text, "address to listen on")
    port: int = setting(8080, port, "port to listen on (0 picks a free one)")
    store: str = setting(
        "sqlite:///data/study_time.db",
        text,
        "where study records are kept: sqlite:///PATH (relative to the working directory)"
        " or sqlite:////ABSOLUTE/PATH",
        secret=True,  # a database URL may carry a password
    )
    heartbeat_interval: float = setting(
        30.0, seconds, "seconds between client heartbeats, announced to clients"
    )
    heartbeat_timeout: float = setting(
        60.0, seconds, "seconds without an accepted heartbeat before a session times out (4408)"
    )
    min_heartbeat_interval: float = setting(
        10.0,
        non_negative_seconds,
        "heartbeats sooner than this after the last accepted one are refused (too_frequent)",
    )
    sweep_interval: float = setting(1.0, seconds, "seconds between timeout sweeps")
    flush_interval: float = setting(
        5.0, seconds, "seconds between checkpoints of credit to the store (a crash loses at most this)"
    )
    shutdown_timeout: float = setting(
        5.0, seconds, "seconds a graceful shutdown waits for the store to take the last credit"
    )
    max_message_size: int = setting(
        4096, positive_int, "largest client frame in bytes; larger ones are refused with 1009"
    )
    flood_rate: float = setting(
        1.0,
        non_negative_number,
        "messages per second a connection may send on average before 4429 (0 disables the limit)",
    )
    flood_burst: float = setting(
        20.0, non_negative_number, "messages a connection may send at once above --flood-rate"
    )
    max_unsaved_sessions: int = setting(
        100_000,
        positive_int,
        "sessions waiting for an unavailable store before new connections are refused (1013)",
    )
    log_level: str = setting("INFO", log_level, "DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting(
        "text", log_format, "text (for people) or json (one JSON object per line, for log pipelines)"
    )
    http_idle_timeout: float = setting(
        30.0,
        seconds,
        "seconds an HTTP client may take to send a complete request head, or stay idle between"
        " requests, before it is disconnected (not WebSocket sessions, which --heartbeat-timeout governs)",
    )
    trust_proxy_headers: bool = setting(
        False,
        boolean,
        "take the client address from X-Real-IP / X-Forwarded-For"
        " (only behind a reverse proxy that sets them)",
    )

    def validate(self) -> None:
        """Check the relations between settings."""
        if self.heartbeat_interval >= self.heartbeat_timeout:
            raise SettingsError(
                f"invalid --heartbeat-interval: {self.heartbeat_interval:g}s must be shorter"
                f" than --heartbeat-timeout ({self.heartbeat_timeout:g}s)"
            )
        if self.min_heartbeat_interval > self.heartbeat_interval:
            raise SettingsError(
                f"invalid --min-heartbeat-interval: {self.min_heartbeat_interval:g}s must not"
                f" exceed --heartbeat-interval ({self.heartbeat_interval:g}s)"
            )


def option_name(attribute: str) -> str:
    return "--" + attribute.replace("_", "-")


def env_name(attribute: str) -> str:
    return ENV_PREFIX + attribute.upper()


def build_parser(prog: str = "server.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="study-time: measures how long each learner studies each course.",
        epilog=f"Every setting can also be given as {ENV_PREFIX}NAME in the environment;"
        " the command line wins.",
    )
    for f in fields(Settings):
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": None,
            "metavar": "VALUE",
            "help": f"{f.metadata['help']} (default: {f.default}; env {env_name(f.name)})",
        }
        if f.metadata["parse"] is boolean:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        parser.add_argument(option_name(f.name), **kwargs)
    return parser


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from command-line arguments and the environment."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    namespace = parser.parse_args(list(argv))
    return from_sources(vars(namespace), environ)


def from_sources(cli: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Resolve each setting from the command line, then the environment, then its default."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw, source = cli.get(f.name), option_name(f.name)
        if raw is None:
            raw, source = environ.get(env_name(f.name)), env_name(f.name)
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            why = "invalid value" if f.metadata["secret"] else str(exc)
            if "could not convert" in why or "invalid literal" in why:
                why = f"expected a number, got {raw!r}"
            raise SettingsError(f"invalid {source}: {why}") from None
    settings = Settings(**values)
    settings.validate()
    return settings


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or as one JSON object per line."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])

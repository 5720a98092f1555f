"""Every setting of the server, declared once.

Each field of :class:`Settings` is one setting, with its default, its parser
and its help. It can be given on the command line as ``--name=value`` (or
``--name value``) or in the environment as ``STUDY_TIME_NAME``; the command
line wins. An invalid value raises :class:`SettingsError` naming the
setting, and ``server.py`` turns that into a start-up error.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected zero or a positive integer, got {text!r}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {text!r}")
    return value


#: ``port`` under another name, for settings declared after the field ``port`` hides it in the class body.
port_number = port


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


def event_loop(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"expected auto, uvloop or asyncio, got {text!r}")
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


#: An IANA zone name: it becomes a file path inside the zone database, so only names pass.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
MAX_ZONE_NAME = 64


def zone(value: str) -> ZoneInfo:
    """An IANA time zone (``Asia/Shanghai``, ``UTC``); ValueError says what is wrong with ``value``."""
    if len(value) > MAX_ZONE_NAME or not _ZONE_NAME.fullmatch(value) or ".." in value:
        raise ValueError("must be an IANA time zone name such as Asia/Shanghai")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}") from None


def time_zone(value: str) -> str:
    """An IANA time zone name, checked against the zone database."""
    return zone(value).key


#: ``package.module:ClassName``, the form of a plugin given to ``--auth``.
DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
AUTH_BACKENDS = ("none", "jwt", "token")
#: Algorithms ``--jwt-algorithms`` may list; ``none`` is deliberately absent.
JWT_ALGORITHMS = (
    *("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
ORIGIN = re.compile(r"https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?")


def auth_backend(text: str) -> str:
    value = text.strip()
    if value in AUTH_BACKENDS or DOTTED_PATH.fullmatch(value):
        return value
    raise ValueError(f"expected none, jwt, token or package.module:ClassName, got {text!r}")


def jwt_algorithms(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("expected at least one algorithm")
    for name in names:
        if name not in JWT_ALGORITHMS:
            raise ValueError(f"{name!r} is not an allowed algorithm; choose from {', '.join(JWT_ALGORITHMS)}")
    return names


def url(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return value


def iri_template(text: str) -> str:
    """An absolute IRI (``scheme:rest``), possibly with ``{courseId}``/``{userId}`` placeholders."""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"]+", value):
        raise ValueError(
            f"expected an absolute IRI such as https://lms.example.edu/courses/{{courseId}}, got {text!r}"
        )
    return value


def overlap_policy(text: str) -> str:
    value = text.strip().lower()
    if value not in OVERLAP_POLICIES:
        raise ValueError(f"expected one of {', '.join(OVERLAP_POLICIES)}, got {text!r}")
    return value


#: ``--overlap-policy`` values: the default first (tracking/tracker.py, rule 7).
OVERLAP_POLICIES = ("each-course", "one-course")


def origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins (``scheme://host[:port]``, no path) or ``*``."""
    values = tuple(item.strip().rstrip("/").lower() for item in text.split(",") if item.strip())
    if not values:
        raise ValueError("expected at least one origin, such as https://lms.example.com")
    for value in values:
        if value != "*" and not ORIGIN.fullmatch(value):
            raise ValueError(f"expected origins like https://lms.example.com or *, got {value!r}")
    return values


HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")


def host_names(text: str) -> tuple[str, ...]:
    """Comma-separated host names or IP addresses, without scheme or port."""
    values = tuple(item.strip().lower() for item in text.split(",") if item.strip())
    if not values:
        raise ValueError("expected at least one host name, such as study.example.lan")
    for value in values:
        try:
            ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
        except ValueError:
            if not HOST_NAME.fullmatch(value):
                raise ValueError(
                    f"expected host names or IP addresses without scheme or port, like"
                    f" study.example.lan or 192.168.1.20, got {value!r}"
                ) from None
    return values


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or "" (every interface)


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
        "where study records are kept: sqlite:///PATH (relative to the working directory),"
        " sqlite:////ABSOLUTE/PATH, or mongodb://[USER:PASSWORD@]HOST:PORT/DBNAME[?OPTIONS]",
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
        5.0,
        seconds,
        "seconds between writes to the store: new sessions, ended ones, and the checkpoints"
        " that are due (--checkpoint-interval)",
    )
    checkpoint_interval: float = setting(
        60.0,
        non_negative_seconds,
        "seconds between two checkpoints of one live session's credit (0 = at every write);"
        " a crash (SIGKILL) loses at most this plus --flush-interval of each live session",
    )
    keep_sessions_days: int = setting(
        0,
        non_negative_int,
        "delete study records of sessions that ended more than this many days ago (a TTL index on"
        " MongoDB, else hourly; 0 = keep every record); learners' totals are kept, reports then"
        " cover only these days",
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
        20.0,
        non_negative_number,
        "messages a connection may send at once before --flood-rate applies; at least 1 while"
        " --flood-rate is above 0 (0 is only accepted with --flood-rate=0, which disables the limit)",
    )
    max_sessions_per_user: int = setting(
        20,
        non_negative_int,
        "live sessions one learner (userId) may have across courses in this process; more are"
        " refused with 4430 (0 = no limit). Reconnecting to a course already open does not count",
    )
    max_connections_per_address: int = setting(
        200,
        non_negative_int,
        "open WebSocket connections from one client address in this process; more are refused"
        " with 4431 (0 = no limit). The address is the proxy's client with --trust-proxy-headers;"
        " a school or office behind one NAT address needs it above its learners' open tabs",
    )
    max_unsaved_sessions: int = setting(
        100_000,
        positive_int,
        "sessions waiting for an unavailable store before new connections are refused (1013)",
    )
    overlap_policy: str = setting(
        "each-course",
        overlap_policy,
        "courses open at once: each-course (each earns its own time) or one-course (a learner's time"
        " goes to one course at a time: the slice between two heartbeats to the course whose heartbeat"
        " closed it); on MongoDB across processes too (every process must have the same policy)",
    )
    processes: int = setting(
        1,
        non_negative_int,
        "server processes sharing the port (0 = one per CPU core); more than 1 needs a mongodb:// store",
    )
    metrics_port: int | None = setting(
        None,
        port_number,
        "also serve /metrics of each server process on a port of its own: process N (0, 1, ...)"
        " on this port + N, so Prometheus scrapes each (0 picks free ports, logged); unset, only"
        " on --port, answered by whichever process accepts the scrape",
    )
    process_timeout: float = setting(
        60.0,
        seconds,
        "a server process not heard from for this long is presumed dead: another closes its"
        " sessions at their last checkpoint (server_lost) and frees its leases (mongodb:// store)",
    )
    report_timezone: str = setting(
        "UTC", time_zone, "IANA time zone of report days and times when a request gives no tz="
    )
    log_level: str = setting("INFO", log_level, "DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting(
        "text", log_format, "text (for people) or json (one JSON object per line, for log pipelines)"
    )
    event_loop: str = setting(
        "auto",
        event_loop,
        "auto (uvloop when it is installed, else asyncio's own), uvloop or asyncio;"
        " uvloop answers heartbeats faster (docs/performance.md)",
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
    # Authentication (docs/auth.md).
    auth: str = setting(
        "none",
        auth_backend,
        "who may connect: none (trust userId; loopback only), jwt, token, or package.module:ClassName",
    )
    allow_insecure_auth: bool = setting(
        False,
        boolean,
        "allow --auth=none on a non-loopback --host or with --allowed-origins=* (logs a warning)",
    )
    jwt_algorithms: tuple[str, ...] = setting(
        ("HS256",), jwt_algorithms, "comma-separated JWT algorithms accepted (never none)"
    )
    jwt_secret: str | None = setting(
        None,
        text,
        "HMAC secret for HS256/384/512 tokens, at least 32/48/64 bytes (no placeholder)",
        secret=True,
    )
    jwt_public_key_file: str | None = setting(None, text, "PEM public key file for RS*/PS*/ES*/EdDSA tokens")
    jwt_jwks_url: str | None = setting(
        None, url, "JWKS URL to fetch signing keys from (cached; https unless loopback)"
    )
    jwt_jwks_lifespan: float = setting(
        300.0,
        seconds,
        "seconds a fetched JWKS key set is trusted: a key removed from the published set stops"
        " working when the set is next fetched, at the latest this long after the last fetch",
    )
    jwt_jwks_refetch_interval: float = setting(
        10.0,
        non_negative_seconds,
        "a token naming a kid the JWKS key set lacks fetches the set again (key rotation),"
        " at most once per this many seconds (also the wait after a failed fetch)",
    )
    jwt_audience: str | None = setting(None, text, "required aud claim")
    jwt_issuer: str | None = setting(None, text, "required iss claim")
    jwt_leeway: float = setting(10.0, non_negative_seconds, "seconds of clock skew tolerated on exp/nbf/iat")
    jwt_courses_claim: str = setting("courses", text, "claim listing the courses a token is limited to")
    jwt_roles_claim: str = setting("roles", text, "claim listing the token's roles (admin, teacher)")
    tokens_file: str = setting(
        "data/tokens.json", text, "JSON file of hashed API tokens for --auth=token (reloaded on change)"
    )
    allowed_hosts: tuple[str, ...] | None = setting(
        None,
        host_names,
        "comma-separated host names or addresses (no port) this server answers to besides"
        " loopback ones (localhost, *.localhost, 127.0.0.0/8, ::1); other Host headers get 403."
        " Always checked under --auth=none (DNS rebinding); under other backends only when given",
    )
    allowed_origins: tuple[str, ...] | None = setting(
        None,
        origins,
        "comma-separated browser origins allowed to open the socket and read the reports (CORS)"
        " (https://lms.example.com, or *); unset, only pages from the server's own origin",
    )
    # xAPI forwarding (docs/xapi.md): off unless --xapi-endpoint is set.
    xapi_endpoint: str | None = setting(
        None,
        url,
        "the LRS's xAPI base URL (e.g. https://lrs.example.edu/xAPI/): each ended session is sent"
        " there as a statement, through a durable outbox in the store; unset, nothing is sent",
    )
    xapi_auth_file: str | None = setting(
        None, text, "file holding the LRS credential as KEY:SECRET (HTTP Basic), read at start"
    )
    xapi_home_page: str | None = setting(
        None,
        url,
        "homePage of the statements' actor account (the learner id is its name);"
        " required with --xapi-endpoint",
    )
    xapi_activity: str | None = setting(
        None,
        iri_template,
        "IRI template of the activity (the course): {courseId} and {userId} are replaced;"
        " default HOME_PAGE/courses/{courseId}",
    )
    xapi_verb: str = setting(
        "http://adlnet.gov/expapi/verbs/attended",
        iri_template,
        "IRI template of the verb ({courseId}, {userId})",
    )
    xapi_extensions: str | None = setting(
        None,
        iri_template,
        "IRI the context extension names are appended to; default HOME_PAGE/xapi/extensions/",
    )
    xapi_max_retry_delay: float = setting(
        300.0,
        seconds,
        "ceiling of the exponential backoff between deliveries of a statement the LRS did not take",
    )
    xapi_timeout: float = setting(10.0, seconds, "seconds an LRS request may take")
    xapi_catch_up: float = setting(
        86400.0,
        non_negative_seconds,
        "at start, ended sessions that started this many seconds ago or later are put in the outbox"
        " if missing (a crash between a session's end and its enqueue loses nothing)",
    )

    def validate(self) -> None:
        """Check the relations between settings."""
        if self.xapi_endpoint is not None and self.xapi_home_page is None:
            raise SettingsError(
                "invalid --xapi-home-page: required with --xapi-endpoint (the statements' actor is an"
                " account on this home page, named by the learner id)"
            )
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
        if self.flood_rate > 0 and self.flood_burst < 1:
            # A bucket that never holds a whole token refuses the very first
            # message: every client would be closed with 4429 on its first heartbeat.
            raise SettingsError(
                f"invalid --flood-burst: {self.flood_burst:g} lets no message through; it must be"
                f" at least 1 while --flood-rate is {self.flood_rate:g} (--flood-rate=0 disables the limit)"
            )
        if self.auth == "none" and not is_loopback(self.host) and not self.allow_insecure_auth:
            raise SettingsError(
                f"invalid --auth: 'none' trusts any userId, so it only listens on a loopback"
                f" --host, not {self.host or 'every interface'!r}; choose --auth=jwt or --auth=token,"
                " or accept the risk with --allow-insecure-auth"
            )
        every_origin = self.allowed_origins is not None and "*" in self.allowed_origins
        if self.auth == "none" and every_origin and not self.allow_insecure_auth:
            raise SettingsError(
                "invalid --allowed-origins: '*' with --auth=none lets a page on any web site"
                " record study time as any user from a learner's browser; list the origins that"
                " may connect, choose --auth=jwt or --auth=token, or accept the risk with"
                " --allow-insecure-auth"
            )


def option_name(attribute: str) -> str:
    return "--" + attribute.replace("_", "-")


def env_name(attribute: str) -> str:
    return ENV_PREFIX + attribute.upper()


def version() -> str:
    """This release's version: the checkout's pyproject.toml, else the installed package's metadata.

    A checkout is read first so that ``python server.py --version`` tells the
    truth even where an older copy is installed; installed, the modules sit in
    site-packages without a pyproject.toml beside them.
    """
    pyproject = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyproject.toml")
    if os.path.exists(pyproject):
        import tomllib

        with open(pyproject, "rb") as file:
            return tomllib.load(file)["project"]["version"]
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("study-time")
    except PackageNotFoundError:
        return "unknown"


def program() -> str:
    """The name of the command being run, for usage lines and error prefixes.

    ``study-time`` when installed (the console script), ``server.py`` from a
    checkout: the name in ``sys.argv[0]``, as argparse would take it.
    """
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "-m") else "study-time"


def command() -> str:
    """The command as the user ran it, for hints to type again: the installed
    ``/opt/study-time/bin/study-time``, or ``python server.py`` from a checkout."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else "study-time"
    return f"python {argv0}" if argv0.endswith(".py") else argv0


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or program()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="study-time: measures how long each learner studies each course.",
        epilog=f"Every setting can also be given as {ENV_PREFIX}NAME in the environment;"
        f" the command line wins. Commands: '{prog} report --help' (study time reports from"
        f" the store), '{prog} tokens --help' (API tokens for --auth=token) and '{prog} migrate"
        " --help' (upgrade a store written by an earlier version).",
    )
    parser.add_argument("--version", action="version", version=f"study-time {version()}")
    for f in fields(Settings):
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": None,
            "metavar": "VALUE",
            "help": f"{f.metadata['help']} (default: {default}; env {env_name(f.name)})",
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
    """Log to stderr at ``level``, as text lines or as one JSON object per line.

    Every record passes :class:`redact.RedactingFilter` first, so no credential
    reaches the output whoever logged it (Tornado's own loggers included).
    """
    from redact import RedactingFilter

    # What no line shows, not gathered for each record: the calling frame
    # (file, line, function), the thread and the multiprocessing process
    # name (the logging HOWTO's "Optimization"; the JSON lines' ``pid`` is
    # kept). Two lines are logged per opening (docs/performance.md).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    if log_format == "json":
        from jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])

"""The wire protocol: ids, client messages, server messages and close codes.

Everything here is pure: parsing takes text and returns a value or a
:class:`ProtocolError`; building returns the JSON text the handler sends.
``docs/protocol.md`` is the human-readable form of this module and must be
kept in step with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

#: Ids are 1-128 characters of letters, digits and ``_ . : @ -``.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")

#: Client timestamps longer than this are not ISO 8601 whatever they contain.
MAX_TIMESTAMP_LENGTH = 64

#: Deepest nesting of arrays and objects a client message may have. A heartbeat
#: is one flat object; Python's JSON parser recurses once per level and raises
#: ``RecursionError`` near a thousand, so deeper text is refused before parsing.
MAX_JSON_DEPTH = 32
#: Longest client message parsed, in characters. The socket refuses bigger frames
#: first (``--max-message-size``, 1009); this bounds the parser on its own.
MAX_MESSAGE_CHARS = 1024 * 1024

# A JSON string (skipped whole: brackets inside it do not nest) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class CloseCode(IntEnum):
    """WebSocket close codes the server sends, with the reason string sent alongside."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # store unavailable
    BAD_REQUEST = 4400  # missing or invalid userId / courseId
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    HEARTBEAT_TIMEOUT = 4408
    REPLACED = 4409
    TOO_MANY_MESSAGES = 4429
    # Caps on what is open at once (4429's neighbours, not HTTP statuses):
    # unlike 4429 they say nothing wrong about the client, so it may retry later.
    TOO_MANY_SESSIONS = 4430  # the learner has --max-sessions-per-user sessions open
    TOO_MANY_CONNECTIONS = 4431  # the client address has --max-connections-per-address open


@dataclass(frozen=True, slots=True)
class Close:
    """Why the server closes a connection: the ``error`` message it sends, then the close frame.

    A close either refuses a connection that has no session yet (a bad id,
    a credential, a cap, the store) or ends a session (a timeout, a
    replacement, a flood, the server shutting down). ``code`` names the
    error in the ``error`` message; ``close_code`` and ``reason`` go into the
    close frame (the reason is short: browsers show it).
    """

    code: str
    close_code: CloseCode
    reason: str
    message: str


def closing(code: str, message: str) -> Close:
    """The :class:`Close` for an error ``code``, with a specific ``message``."""
    close_code, reason = _CLOSE_FOR_ERROR[code]
    return Close(code, close_code, reason, message)


_CLOSE_FOR_ERROR: dict[str, tuple[CloseCode, str]] = {
    "invalid_params": (CloseCode.BAD_REQUEST, "invalid parameters"),
    "unauthorized": (CloseCode.UNAUTHORIZED, "unauthorized"),
    "forbidden": (CloseCode.FORBIDDEN, "forbidden"),
    "heartbeat_timeout": (CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"),
    "replaced": (CloseCode.REPLACED, "replaced by a new connection"),
    "too_many_messages": (CloseCode.TOO_MANY_MESSAGES, "too many messages"),
    "too_many_sessions": (CloseCode.TOO_MANY_SESSIONS, "too many sessions open for this learner"),
    "too_many_connections": (CloseCode.TOO_MANY_CONNECTIONS, "too many connections from this address"),
    "store_unavailable": (CloseCode.TRY_AGAIN_LATER, "store unavailable, try again later"),
    "server_shutdown": (CloseCode.GOING_AWAY, "server shutting down"),
}

#: The error codes a connection can be refused with before it has a session
#: (a session's end is counted by its end reason instead).
REFUSAL_CODES = (
    "invalid_params",
    "unauthorized",
    "forbidden",
    "too_many_sessions",
    "too_many_connections",
    "store_unavailable",
    "server_shutdown",
)


class ProtocolError(Exception):
    """A client message the server answers with an error, keeping the connection open.

    ``code`` is one of ``invalid_json``, ``unknown_type``, ``binary_not_supported``
    (answered with an ``error`` message) or ``invalid_timestamp`` (answered with
    a ``heartbeat_response`` whose status is ``error``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Heartbeat:
    """A parsed client heartbeat; ``timestamp`` is the client's clock, for diagnostics only.

    Not frozen: a frozen dataclass sets its field through ``object.__setattr__``,
    twice the cost, and one is made per heartbeat (docs/performance.md).
    """

    timestamp: datetime


def valid_id(value: str | None) -> bool:
    """Whether ``value`` is an acceptable userId/courseId."""
    return value is not None and ID_PATTERN.fullmatch(value) is not None


def parse_ids(user_id: str | None, course_id: str | None) -> tuple[str, str]:
    """Validate the connection's ids; raise :class:`ValueError` naming the bad one."""
    for name, value in (("userId", user_id), ("courseId", course_id)):
        if value is None or value == "":
            raise ValueError(f"{name} is required")
        if not valid_id(value):
            raise ValueError(f"{name} must be 1-128 characters of letters, digits and _ . : @ -")
    return user_id, course_id  # type: ignore[return-value]


def parse_timestamp(value: object) -> datetime:
    """Parse a client's ISO 8601 timestamp (``Z``, offsets and fractions accepted)."""
    if not isinstance(value, str) or not value or len(value) > MAX_TIMESTAMP_LENGTH:
        raise ProtocolError("invalid_timestamp", "timestamp must be an ISO 8601 string")
    try:
        # Python 3.11 accepts the ISO 8601 forms browsers and other languages
        # produce, including a trailing "Z" and any number of fractional digits.
        return datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError("invalid_timestamp", f"timestamp {value[:40]!r} is not ISO 8601") from None


#: A heartbeat as clients write it: the two members in this order, JSON
#: whitespace anywhere between tokens, a timestamp of characters that need no
#: JSON escaping. Such a text means exactly what ``json.loads`` would read from
#: it, so it is read without the decoder (the one message on the hot path);
#: any other text takes the decoder (:func:`parse_json_message`).
_HEARTBEAT = re.compile(
    r'[ \t\n\r]*\{[ \t\n\r]*"type"[ \t\n\r]*:[ \t\n\r]*"heartbeat"[ \t\n\r]*,'
    r'[ \t\n\r]*"timestamp"[ \t\n\r]*:[ \t\n\r]*"([0-9A-Za-z:.+\-]*)"[ \t\n\r]*\}[ \t\n\r]*'
)


def parse_client_message(text: str | bytes) -> Heartbeat:
    """Parse one client frame into a :class:`Heartbeat` or raise :class:`ProtocolError`."""
    if isinstance(text, bytes):
        raise ProtocolError("binary_not_supported", "binary frames are not supported; send JSON text")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError("invalid_json", f"message is longer than {MAX_MESSAGE_CHARS} characters")
    heartbeat = _HEARTBEAT.fullmatch(text)
    if heartbeat is not None:
        return Heartbeat(parse_timestamp(heartbeat.group(1)))
    return parse_json_message(text)


def parse_json_message(text: str) -> Heartbeat:
    """:func:`parse_client_message` through the JSON decoder, whatever the text's shape.

    The nesting is bounded before the decoder sees the text (its recursion would otherwise fail).
    """
    if _too_deep(text):
        raise ProtocolError("invalid_json", f"message nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("invalid_json", "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_json", "message must be a JSON object")
    kind = message.get("type")
    if kind != "heartbeat":
        shown = kind if isinstance(kind, str) else json.dumps(kind)
        raise ProtocolError("unknown_type", f"unknown message type {shown[:40]!r}; expected 'heartbeat'")
    return Heartbeat(parse_timestamp(message.get("timestamp")))


def _too_deep(text: str) -> bool:
    """Whether ``text`` opens more than :data:`MAX_JSON_DEPTH` arrays or objects at once.

    Brackets inside strings do not count. Linear in the text, and a message
    with few brackets (every heartbeat) is passed without scanning it.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        first = match.group()[0]  # a string starts with its quote
        if first in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif first in "]}":
            depth -= 1
    return False


# Server messages. Each returns the compact JSON text the handler sends.

_encode = json.JSONEncoder(separators=(",", ":")).encode


def connected(session_id: str, study_time: int, interval: float, timeout: float) -> str:
    return _encode(
        {
            "type": "connected",
            "status": "success",
            "sessionId": session_id,
            "studyTime": study_time,
            "heartbeatInterval": _seconds(interval),
            "heartbeatTimeout": _seconds(timeout),
        }
    )


def heartbeat_ok(study_time: int) -> str:
    """The reply to every accepted heartbeat: the one message on the hot path.

    Formatted directly rather than through the JSON encoder (a quarter of the
    reply's cost under load): an int needs no escaping, and the text is the
    same the encoder produces, which the tests check.
    """
    return f'{{"type":"heartbeat_response","status":"success","studyTime":{study_time:d}}}'


def heartbeat_error(code: str, message: str, study_time: int) -> str:
    return _encode(
        {
            "type": "heartbeat_response",
            "status": "error",
            "code": code,
            "message": message,
            "studyTime": study_time,
        }
    )


def error(code: str, message: str) -> str:
    return _encode({"type": "error", "status": "error", "code": code, "message": message})


def _seconds(value: float) -> int | float:
    """Whole seconds as an int (the documented ``30``), fractions kept as given."""
    return int(value) if float(value).is_integer() else value

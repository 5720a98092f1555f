"""The last line of defence against credentials in logs: a filter on every log handler.

Handlers log requests by path only (handlers/base.py), but the code that
logs is not all ours: Tornado's HTTP parser logs a malformed header with its
value (``Invalid header value 'Bearer …'``), its ``log_exception`` prints the
whole URI, a plugin's exception message may quote what it was given. So
:class:`RedactingFilter` (installed by ``settings.configure_logging``) scrubs
every record, whatever its logger and level, before any formatter sees it:
the message with its arguments, the exception and stack text, and string
``extra=`` fields. What it removes:

- the value of any query parameter whose name ends in ``token`` (``?token=``,
  ``&access_token=``, also percent-encoded names such as ``%74oken``);
- whatever follows ``Bearer`` / ``bearer.`` (the ``Authorization`` scheme and
  the ``bearer.<credential>`` subprotocol);
- the value of an ``Authorization`` header wherever it is written out;
- the value Tornado quotes in ``Invalid header value`` / ``Invalid header name``
  (it does not say which header it was, so every one is hidden).
"""

from __future__ import annotations

import logging
import re
import urllib.parse

from jsonlog import STANDARD_ATTRIBUTES

REDACTED = "[redacted]"

# name=value pairs, as in a query string; the name is checked once decoded.
_NAME = re.compile(r"([A-Za-z0-9_%.+\-]+)=")
_VALUE = re.compile(r"[^&\s#]*")
# The Bearer scheme and the bearer.<credential> subprotocol: from the first
# character a credential can start with (RFC 6750's b64token) to the next
# blank or comma (the subprotocol header is a comma list). Prose such as
# "send Authorization: Bearer, a bearer.* subprotocol" is left as it is.
_BEARER = re.compile(r"(?i)\b(bearer)([.\s]+)(?=[A-Za-z0-9\-._~+/])[^\s,]+")
# An Authorization header written out ("Authorization: Basic x", 'Authorization': 'x',
# authorization=x) with a scheme other than Bearer, which _BEARER already scrubbed.
_AUTHORIZATION = re.compile(r"""(?i)(authorization['"]?\s*[:=]\s*['"]?)(?!\s*bearer\b)[^'"\r\n]+""")
# Tornado's own "Invalid header value %r" (and name): the rest of that line.
_INVALID_HEADER = re.compile(r"(?i)(invalid header (?:value|name)\b:?\s*).*")


def _scrub_pairs(text: str) -> str:
    """Hide the value of every ``…token=`` pair.

    A pair's value is only consumed when it is hidden, so that a pair inside
    another's value (``uri='/a?token=…'``) is still found.
    """
    parts, done = [], 0
    while found := _NAME.search(text, done):
        end = found.end()
        value = _VALUE.match(text, end)
        if urllib.parse.unquote_plus(found.group(1)).lower().endswith("token") and value.end() > end:  # type: ignore[union-attr]
            parts += [text[done:end], REDACTED]
            done = value.end()  # type: ignore[union-attr]
        else:
            parts.append(text[done:end])
            done = end
    parts.append(text[done:])
    return "".join(parts)


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[redacted]``.

    Every line is scrubbed, so the common one (ASCII, no credential) is made
    cheap: each pattern above needs its word (``token`` or a percent-encoded
    name, ``bearer``, ``authorization``, ``invalid header``) somewhere in the
    text, and in ASCII text a case-insensitive match is exactly a match of
    the lower-cased text, so a pattern whose word is absent is not run. Other
    text takes every pattern (Unicode case folding has more ways to spell a word).
    """
    if not text.isascii():
        return redact_all_patterns(text)
    lowered = text.lower()
    if "=" in text and ("token" in lowered or "%" in text):
        text = _scrub_pairs(text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    if "authorization" in lowered:
        text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    if "invalid header" in lowered:
        text = _INVALID_HEADER.sub(rf"\1{REDACTED}", text)
    return text


def redact_all_patterns(text: str) -> str:
    """:func:`redact` running every pattern, whatever the text (the reference for its shortcut)."""
    if "=" in text:
        text = _scrub_pairs(text)
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    return _INVALID_HEADER.sub(rf"\1{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record with its credentials removed (see the module docstring).

    The message is formatted here (``msg % args``) and redacted whole, since a
    credential may sit in any argument; the exception is formatted to text and
    redacted too, and ``exc_info`` dropped so no formatter prints it again.
    Installed on handlers, not loggers: a handler's filter sees every record
    that reaches it, including those propagated from Tornado's loggers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        # The extra= fields: the record's names beyond every record's own (a set
        # difference, rather than a test of each of some thirty names per line).
        fields = record.__dict__
        for key in fields.keys() - STANDARD_ATTRIBUTES:
            value = fields[key]
            if isinstance(value, str):
                fields[key] = redact(value)
        return True

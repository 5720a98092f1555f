"""``--log-format=json``: one JSON object per log line.

Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message`` and ``pid``. Fields a log call passes with ``extra=`` (the session open and
close lines pass ``user``, ``course``, ``session``, ``reason``,
``credited_seconds``, ``total_seconds``, ``remote``) become keys of their own,
so a log pipeline can filter on them without parsing the message. No log call
passes a credential, and the access log never includes the query string.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# The attributes every LogRecord has; anything else came in through ``extra=``.
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # tells the workers of --processes apart
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (an enum, a datetime) is shown, never fatal.
        return json.dumps(entry, ensure_ascii=False, default=str)

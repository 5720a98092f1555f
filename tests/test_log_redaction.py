"""No credential in any log line, whoever writes it: Tornado's own loggers and a careless plugin too.

tests/test_auth_logs.py covers the service's own log lines; here a real
server process is driven down the paths where Tornado logs by itself (an
uncaught exception in a report, a refused static path, a malformed header,
a bad request line), in text and in JSON, and its real output is searched.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redact import redact, redact_all_patterns
from tests.support.helpers import ServerProcess, raw_request
from tests.support.rawws import upgrade_request

SECRET = "s3cr3t-CREDENTIAL-4f9a"


def request(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_and_close(port: int, data: bytes) -> None:
    """For requests Tornado refuses by closing the connection: send, then wait for the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while sock.recv(65536):
            pass


def attack(port: int) -> None:
    """Every path on which Tornado (or the plugin) logs something about the request."""
    # An unexpected failure in a report handler (the plugin raises): 500 and an ERROR with a traceback,
    # the credential in the query, in the header and in the exception message.
    status, _, _ = raw_request(
        port, request(f"/api/reports/daily?userId=u1&token={SECRET}", f"Authorization: Bearer {SECRET}")
    )
    assert status == 500
    status, _, _ = raw_request(port, request(f"/api/reports/sessions?userId=u1&%74oken={SECRET}"))
    assert status == 500
    # Refused by the static file handler, with the credential in the query.
    status, _, _ = raw_request(port, request(f"/../settings.py?token={SECRET}"))
    assert status == 403
    status, _, _ = raw_request(port, request(f"/%00?token={SECRET}"))
    assert status == 404
    # Malformed Authorization and subprotocol headers (a control character in the value).
    for header in (f"Authorization: Bearer {SECRET}\x01", f"Sec-WebSocket-Protocol: bearer.{SECRET}\x7f"):
        send_and_close(port, request(f"/api/reports/daily?userId=u1&token={SECRET}", header))
    # Bad request lines and a query Tornado cannot parse, each with the credential.
    send_and_close(port, f"GET /x?token={SECRET} HTTP/9.9\r\nHost: a\r\n\r\n".encode())
    send_and_close(port, f"GET /x?token={SECRET}\x00 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    status, _, _ = raw_request(port, request(f"/api/reports/daily?token={SECRET}" + "&a=1" * 1100))
    assert status == 400
    # The socket: a subprotocol and a header reach the plugin, which fails.
    for headers in (
        {"Sec-WebSocket-Protocol": f"study-time.v1, bearer.{SECRET}"},
        {"Authorization": f"Bearer {SECRET}"},
    ):
        send_and_close(
            port, upgrade_request(f"/api/study-time?userId=u1&courseId=c1&token={SECRET}", headers=headers)
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tornado_s_own_log_lines_never_carry_a_credential(tmp_path, log_format):
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--auth=tests.support.auth_plugins:Leaky",
        "--log-level=DEBUG",
        f"--log-format={log_format}",
    ) as server:
        attack(server.port)
        assert server.terminate() == 0
    log = server.log
    assert SECRET not in log, f"a credential appears in the log:\n{log}"
    if log_format == "json":
        lines = [json.loads(line) for line in server.output]  # still one JSON object per line
        log = "\n".join(f"{line['message']}\n{line.get('exception', '')}" for line in lines)
    # Each path did log (so the absence above means something), by path only.
    assert "Uncaught exception GET /api/reports/daily (127.0.0.1)" in log
    assert "RuntimeError: bug in the plugin: Authorization: Bearer [redacted]" in log
    assert "500 GET /api/reports/sessions" in log
    assert "403 GET /../settings.py" in log and "404 GET /%00" in log
    assert "Malformed HTTP message" in log and "Invalid header value [redacted]" in log


@pytest.mark.parametrize(
    "text, expected",
    [
        ("GET /a?userId=u1&token=abc.def&x=1", "GET /a?userId=u1&token=[redacted]&x=1"),
        ("uri='/a?%74oken=abc', version='HTTP/1.1'", "uri='/a?%74oken=[redacted] version='HTTP/1.1'"),
        ("access_token=abc;", "access_token=[redacted]"),
        (
            "Sec-WebSocket-Protocol: study-time.v1, bearer.eyJ0.x.y",
            "Sec-WebSocket-Protocol: study-time.v1, bearer.[redacted]",
        ),
        ("Authorization: Bearer abc", "Authorization: Bearer [redacted]"),
        ("{'Authorization': 'Basic dXNlcg==', 'Host': 'x'}", "{'Authorization': '[redacted]', 'Host': 'x'}"),
        ("Invalid header value 'Bearer abc\\x01'", "Invalid header value [redacted]"),
        # Prose about credentials is left readable.
        (
            "reason=no credential: send Authorization: Bearer, a bearer.* subprotocol or ?token=",
            "reason=no credential: send Authorization: Bearer, a bearer.* subprotocol or ?token=",
        ),
        ("session opened user=u1 course=c1", "session opened user=u1 course=c1"),
    ],
)
def test_redact_removes_credentials_and_keeps_the_rest(text, expected):
    assert redact(text) == expected


# Pieces a log line is made of: each credential pattern's word in any case, the
# characters around a name=value pair, percent-encoding, and some non-ASCII text.
_PIECES = st.sampled_from(
    [
        "token",
        "ToKeN",
        "%74oken",
        "access_",
        "bearer",
        "BEARER",
        "Authorization",
        "aUtHoRiZaTiOn",
        "invalid header",
        "Invalid Header",
        "value",
        "name",
        "=",
        "&",
        "?",
        ":",
        " ",
        ".",
        "'",
        '"',
        ",",
        "+",
        "abc",
        "x1",
        "\u017f",  # long s: folds to "s" in a case-insensitive pattern
        "\u212a",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_the_fast_path_redacts_exactly_what_every_pattern_does(text):
    """``redact`` skips a pattern whose word is absent: it must agree with running them all."""
    assert redact(text) == redact_all_patterns(text)

"""What any HTTP client gets, odd or hostile: static files never 500, security headers everywhere.

Raw requests to a real server process (no client library normalises the
paths), with its real log output.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.support.helpers import ServerProcess, raw_request
from tests.support.rawws import upgrade_request

ODD_PATHS = [
    "/%00",
    "/%00.html",
    "/index.html%00.js",
    "/demo.js%00",
    "/../settings.py",
    "/..%2fsettings.py",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/no-such-file",
    "/static/",
]


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    with ServerProcess(f"--store=sqlite:///{tmp}/study_time.db") as running:
        yield running


def test_odd_static_paths_get_a_4xx_and_one_quiet_log_line(tmp_path):
    with ServerProcess(f"--store=sqlite:///{tmp_path}/study_time.db") as server:
        for path in ODD_PATHS:
            status, headers, _ = raw_request(server.port, get(path))
            assert status is not None and 400 <= status < 500, (path, status)
            assert headers["x-content-type-options"] == "nosniff", path
        assert server.terminate() == 0
    log = server.log
    assert "Traceback" not in log and " ERROR " not in log, log
    for path in ODD_PATHS:
        lines = [line for line in server.output if f" GET {path} " in line]
        assert len(lines) == 1, (path, lines)
        assert " WARNING tornado.access: 4" in lines[0], lines


def security_headers_ok(headers: dict[str, str], host: str = "127.0.0.1") -> None:
    """The headers every response carries; the policy names the Host the request gave."""
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["server"] == "study-time"
    policy = dict(
        directive.partition(" ")[::2] for directive in headers["content-security-policy"].split("; ")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert policy["frame-ancestors"] == "'none'"


@pytest.mark.parametrize(
    "path, status",
    [
        ("/", 200),
        ("/index.html", 200),
        ("/demo.js", 200),
        ("/demo.css", 200),
        ("/study-time-client.js", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/api/reports/daily?userId=u1", 200),
        ("/api/reports/daily?userId=u1&format=csv", 200),
        ("/api/reports/daily", 400),
        ("/api/reports/daily?userId=u1&tz=%FF", 400),
        ("/no-such-file", 404),
        ("/%00", 404),
        ("/api/study-time?userId=u1&courseId=c1", 400),  # not an upgrade
    ],
)
def test_every_response_carries_the_security_headers(server, path, status):
    got, headers, _ = raw_request(server.port, get(path))
    assert got == status, (path, got)
    security_headers_ok(headers)
    assert "tornado" not in headers["server"].lower()


def test_socket_upgrades_and_refusals_carry_the_security_headers(server):
    path = "/api/study-time?userId=u1&courseId=c1"
    status, headers, _ = raw_request(server.port, upgrade_request(path))
    assert status == 101
    security_headers_ok(headers)
    status, headers, _ = raw_request(
        server.port, upgrade_request(path, headers={"Origin": "https://evil.example"})
    )
    assert status == 403
    security_headers_ok(headers)


def test_the_policy_names_the_host_a_browser_sent_and_nothing_odd(server):
    host = f"localhost:{server.port}"
    _, headers, _ = raw_request(server.port, get("/").replace(b"Host: 127.0.0.1", f"Host: {host}".encode()))
    security_headers_ok(headers, host)
    # A Host that is not a plain name and port never reaches the policy.
    _, headers, _ = raw_request(server.port, get("/healthz").replace(b"Host: 127.0.0.1", b"Host: a;b"))
    policy = headers["content-security-policy"]
    assert re.search(r"connect-src 'self';", policy), policy


def test_the_metrics_port_has_the_host_check_and_the_headers_of_the_main_port(tmp_path):
    # --auth=none: the metrics port is reachable from a rebinding page exactly
    # like the main port, so it refuses other Host names the same way; its
    # 404s are the service's, with the security headers and no Tornado version.
    with ServerProcess(f"--store=sqlite:///{tmp_path}/study_time.db", "--metrics-port=0") as server:
        metrics_line = re.compile(r"metrics of server process 0 on http://127\.0\.0\.1:(\d+)/metrics")
        deadline = time.monotonic() + 15  # logged just after "listening on"
        while not (found := metrics_line.search(server.log)):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.02)
        port = int(found.group(1))
        status, headers, body = raw_request(port, get("/metrics"))
        assert status == 200 and b"study_time_live_sessions" in body
        security_headers_ok(headers)
        for path in ("/", "/no-such-page", "/metrics/x", "/%00"):
            status, headers, body = raw_request(port, get(path))
            assert status == 404, (path, status)
            security_headers_ok(headers)
            assert b"Tornado" not in body
        rebound = get("/metrics").replace(b"Host: 127.0.0.1", b"Host: rebind.attacker.example")
        status, headers, body = raw_request(port, rebound)
        assert status == 403 and b"host_not_allowed" in body, (status, body)
        assert headers["server"] == "study-time"
        assert server.terminate() == 0
    assert "refused requests for Host 'rebind.attacker.example'" in server.log
    assert "Traceback" not in server.log

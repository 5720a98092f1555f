"""The copy-paste example of docs/client.md on another site: a course page of a second origin imports
the client from the server and studies, in Chromium.

The course page is served by a second loopback server on another port (a
different origin, as the LMS is); the study-time server lists that origin in
``--allowed-origins``. The example runs as documented, only its host replaced,
until a heartbeat reply arrives on its socket.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.browser import WAIT_MS
from tests.support.helpers import ROOT, ServerProcess, raw_request

FAST_ARGS = ("--heartbeat-interval=0.5", "--heartbeat-timeout=5", "--min-heartbeat-interval=0.25")
DOCUMENTED_HOST = "study-time.example.edu"


def documented_example() -> str:
    with open(os.path.join(ROOT, "docs", "client.md"), encoding="utf-8") as doc:
        (example,) = re.findall(
            r"## Copy-paste example for a course page\s+```html\n(.*?)```", doc.read(), re.S
        )
    return example


@contextmanager
def course_site(page: dict[str, str]) -> Iterator[str]:
    """A second site on loopback (the LMS) serving ``page["html"]`` at /course; yields its origin.

    The page is read at each request: the site's origin must be known to start
    the study-time server, and the server's port to write the page.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/course"
            html = f"<!doctype html><html><head><meta charset=utf-8></head><body>{page['html']}</body></html>"
            body = html.encode() if found else b"not found"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


def is_error(message) -> bool:
    """A console error of the page (the browser's own request for /favicon.ico is not one)."""
    return message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico")


def test_the_documented_example_studies_from_another_origin(browser, tmp_path):
    page_of: dict[str, str] = {"html": ""}
    with (
        course_site(page_of) as origin,
        ServerProcess(
            *FAST_ARGS, f"--store=sqlite:///{tmp_path}/db", f"--allowed-origins={origin}"
        ) as server,
    ):
        example = documented_example()
        assert f"https://{DOCUMENTED_HOST}/study-time-client.js" in example
        # Only the documented host is replaced by the test server's.
        page_of["html"] = example.replace(f"https://{DOCUMENTED_HOST}", server.http_url).replace(
            f"wss://{DOCUMENTED_HOST}", server.url
        )
        context = browser.new_context()  # the course page's own rules, nothing bypassed
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if is_error(m) else None)
            replies: list[dict] = []
            page.on(
                "websocket", lambda ws: ws.on("framereceived", lambda data: replies.append(json.loads(data)))
            )
            page.goto(f"{origin}/course")
            for _ in range(WAIT_MS // 50):
                if errors or any(reply["type"] == "heartbeat_response" for reply in replies):
                    break
                page.wait_for_timeout(50)
            assert errors == []
            assert any(reply["type"] == "heartbeat_response" for reply in replies), replies
            assert page.text_content("#study-status") == "connected"
        finally:
            context.close()
        assert server.terminate() == 0


def test_only_the_client_is_served_cross_origin_and_only_to_allowed_origins(tmp_path):
    lms = "https://lms.example.edu"
    with ServerProcess(f"--store=sqlite:///{tmp_path}/db", f"--allowed-origins={lms}") as server:

        def get(path: str, origin: str) -> dict[str, str]:
            status, headers, _ = raw_request(
                server.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\r\n".encode()
            )
            assert status == 200
            return headers

        client = get("/study-time-client.js", lms)
        assert client["access-control-allow-origin"] == lms and "Origin" in client["vary"]
        assert "access-control-allow-credentials" not in client
        assert "access-control-allow-origin" not in get("/study-time-client.js", "https://elsewhere.example")
        for other in ("/", "/demo.js", "/dashboard.js", "/i18n.js", "/vendor/uPlot.iife.min.js"):
            assert "access-control-allow-origin" not in get(other, lms), other
        assert server.terminate() == 0

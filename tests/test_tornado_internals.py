"""What handlers/tornado_internals.py relies on in Tornado is still there.

The module is the one place that uses Tornado's private or undocumented
names. A Tornado upgrade that removes or renames one fails here, by name,
instead of as a subtle change in what a session earns or what a log line
shows; a new minor version fails too, until the module is read against it.
"""

from __future__ import annotations

import inspect
import re

import pytest
import tornado.iostream
import tornado.web
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from handlers import tornado_internals
from handlers.tornado_internals import NotingProtocol, QuerylessSummary, headers_written, reason


def test_every_name_the_module_relies_on_is_in_the_installed_tornado():
    assert tornado_internals.missing() == []


@pytest.mark.parametrize(
    ("owner", "attribute"),
    [
        (tornado.web.RequestHandler, "self._headers_written"),
        (tornado.web.RequestHandler, "self._reason"),
        (tornado.websocket.WebSocketHandler, "self.ws_connection"),
        (tornado.websocket.WebSocketProtocol, "self.stream"),
        (tornado.web.RequestHandler, "self._headers ="),
        (tornado.web.RequestHandler, "self._transforms ="),
        (tornado.web.RequestHandler, "self._write_buffer ="),
        (tornado.websocket.WebSocketProtocol13, "open_result = handler.open("),
        (tornado.iostream.BaseIOStream, "self._state = state"),
        (tornado.iostream.BaseIOStream, "self.io_loop.update_handler(self.fileno(), self._state)"),
        (tornado.iostream.BaseIOStream, "self._read_buffer_size += bytes_read"),
        (tornado.iostream.BaseIOStream, "self.io_loop.remove_handler(self.fileno())"),
    ],
)
def test_the_instance_attributes_it_reads_are_still_set_by_tornado(owner, attribute):
    assert attribute in inspect.getsource(owner), f"{owner.__name__} no longer sets {attribute}"


def test_the_close_frame_hook_has_the_signature_it_overrides():
    parameters = list(inspect.signature(tornado.websocket.WebSocketProtocol13._handle_message).parameters)
    assert parameters == ["self", "opcode", "data"]
    assert issubclass(NotingProtocol, tornado.websocket.WebSocketProtocol13)


class _Probe(QuerylessSummary, tornado.web.RequestHandler):
    seen: dict = {}

    def get(self) -> None:
        _Probe.seen["before"] = headers_written(self)
        self.write("a")
        self.flush()
        _Probe.seen["after"] = headers_written(self)
        _Probe.seen["summary"] = self.request_summary()

    def post(self) -> None:
        raise tornado.web.HTTPError(400)

    def write_error(self, status_code: int, **kwargs) -> None:
        _Probe.seen["reason"] = reason(self)
        self.finish("x")


@pytest.mark.gen_test(timeout=20)
async def test_headers_written_reason_and_the_summary_read_what_tornado_keeps():
    sock, port = bind_unused_port()
    server = HTTPServer(tornado.web.Application([(r"/probe", _Probe)]))
    server.add_sockets([sock])
    try:
        client = AsyncHTTPClient()
        await client.fetch(f"http://127.0.0.1:{port}/probe?token=secret")
        with pytest.raises(HTTPClientError):
            await client.fetch(f"http://127.0.0.1:{port}/probe", method="POST", body="")
    finally:
        server.stop()
    assert _Probe.seen == {
        "before": False,
        "after": True,
        "summary": "GET /probe (127.0.0.1)",
        "reason": "Bad Request",
    }


#: Tornado's private or undocumented names the service uses (see the module's docstring).
PRIVATE = (
    r"\b_handle_message\b",
    r"__class__\s*=",
    r"\bws_connection\b",
    r"\._headers_written\b",
    r"\._reason\b",
    r"\b_request_summary\b",
    r"\bon_ws_connection_close\b",
    r"\._headers\s*=",
    r"\._transforms\b",
    r"\._write_buffer\b",
)


def test_no_other_module_of_the_service_uses_them():
    from tests.test_imports import service_modules

    users = {
        name: [p for p in PRIVATE if re.search(p, path.read_text())]
        for name, path in service_modules().items()
        if name != "handlers.tornado_internals"
    }
    assert {name: found for name, found in users.items() if found} == {}

"""A session's objects are freed by reference counting the moment it ends.

The server collects cyclic garbage rarely (``server.tune_gc``), so anything a
connection leaves in a reference cycle stays in memory long after it has
gone: the soak (tests/test_soak.py) saw RSS grow by about 3 KB for every
ended session. Here the cyclic collector is switched off while sessions end
every way they can, through a real in-process server and real sockets over
loopback; afterwards nothing of them may be left alive.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time

import pytest
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol

from handlers.study_time import StudyTimeSocket
from storage.writer import cyclic_gc_paused
from tests.support.helpers import wait_for
from tests.support.rawws import RawSocket, close_frame, text
from tracking.session import Session, SessionRecord

HEARTBEAT = {"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}
#: What one connection and its session consist of on the server side.
PER_CONNECTION = (
    StudyTimeSocket,
    Session,
    SessionRecord,
    WebSocketProtocol,
    IOStream,
    HTTPServerRequest,
    HTTP1Connection,
    HTTP1ServerConnection,
)


@pytest.fixture
def store_kind() -> str:
    """Reference cycles are the server's, not the store's: SQLite is enough."""
    return "sqlite"


def alive() -> dict[str, int]:
    """How many server-side connection and session objects exist, by type."""
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, PER_CONNECTION):
            counts[type(obj).__qualname__] += 1
    return dict(counts)


async def opened(port: int, user: str) -> RawSocket:
    conn = await RawSocket.upgraded(port, user, "course-1")
    assert (await conn.message())["type"] == "connected"
    conn.send(text(HEARTBEAT))
    assert (await conn.message())["type"] == "heartbeat_response"
    return conn


async def clean_close(port: int, n: int) -> None:
    conn = await opened(port, f"clean-{n}")
    conn.send(close_frame())
    assert (await conn.until_closed())[0] == 1000
    conn.reset()


async def reset(port: int, n: int) -> None:
    (await opened(port, f"reset-{n}")).reset()


async def fin(port: int, n: int) -> None:
    conn = await opened(port, f"fin-{n}")
    conn.close()
    await conn.eof()


async def timed_out(port: int, n: int) -> None:
    conn = await opened(port, f"silent-{n}")
    assert (await conn.until_closed())[0] == 4408
    conn.reset()


async def flooded(port: int, n: int) -> None:
    conn = await opened(port, f"flood-{n}")
    for _ in range(10):
        conn.send(text(HEARTBEAT))
    assert (await conn.until_closed())[0] == 4429
    conn.reset()


async def replaced(port: int, n: int) -> None:
    first = await opened(port, f"twice-{n}")
    second = await opened(port, f"twice-{n}")
    assert (await first.until_closed())[0] == 4409
    first.reset()
    second.send(close_frame())
    await second.until_closed()
    second.reset()


async def invalid_ids(port: int, n: int) -> None:
    conn = await RawSocket.upgraded(port, f"bad id {n}", "course-1")
    assert (await conn.until_closed())[0] == 4400
    conn.reset()


async def malformed_upgrade(port: int, n: int) -> None:
    """An upgrade Tornado itself refuses (no Sec-WebSocket-Key), then a reset keep-alive connection."""
    conn = await RawSocket.open(port)
    conn.send(
        b"GET /api/study-time?userId=u&courseId=c HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 400 "), head
    conn.reset()


ENDINGS = (clean_close, reset, fin, timed_out, flooded, replaced, invalid_ids, malformed_upgrade)


@pytest.mark.gen_test(timeout=30)
async def test_ended_sessions_are_freed_by_reference_counting_alone(start_service):
    service = await start_service(flood_rate=1.0, flood_burst=3.0)
    port = int(service.http_url.rsplit(":", 1)[1])
    await reset(port, -1)  # first use: imports, caches, the store's connection
    await wait_for(lambda: not service.connections and not service.writer.unsaved, message="warm-up")
    gc.collect()
    async with cyclic_gc_paused():  # from here on only reference counting frees anything
        before = alive()
        await asyncio.gather(*(ending(port, n) for n in range(3) for ending in ENDINGS))
        await wait_for(
            lambda: not service.connections and not len(service.tracker) and not service.writer.unsaved,
            timeout=10,
            message="every connection closed and every session saved",
        )
        # Tornado finishes a connection in callbacks after the close; give them
        # a moment, then look.
        deadline = time.monotonic() + 5
        while alive() != before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = alive()
    assert left == before, (
        f"left alive in reference cycles after the sessions ended: {left} (before: {before})"
    )

"""End-to-end abuse against a real server process, over raw loopback sockets.

Each test abuses the server one way while a well-behaved learner keeps
heartbeating in its own thread, then checks what users rely on:

- the server still answers a normal client;
- the learner's session lost no credit: its stored record has every second
  between its opening and its clean close;
- the server's memory (RSS, via /proc) and open file descriptors return near
  their baseline: nothing the abuse left behind is kept;
- nothing was logged at ERROR (every log line is JSON and parsed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import sqlite3
import threading
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.helpers import Client, ServerProcess, wait_for
from tests.support.rawws import (
    BINARY,
    CONTINUATION,
    PING,
    TEXT,
    RawSocket,
    close_frame,
    frame,
    text,
)

HEARTBEAT = {"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}
SERVER_ARGS = (
    "--log-format=json",
    "--heartbeat-interval=1",
    "--heartbeat-timeout=5",
    "--min-heartbeat-interval=0.05",
    "--sweep-interval=0.1",
    "--flush-interval=0.2",
    "--http-idle-timeout=1",
    # Hundreds of connections at once from one loopback address (the churn); the
    # per-address cap itself is tested in tests/test_limits.py.
    "--max-connections-per-address=0",
)
#: RSS may stay above the baseline by this much (the allocator keeps some freed
#: memory); a leak of a few KB per abusive connection over thousands exceeds it.
RSS_SLACK_BYTES = 40 * 1024 * 1024
FD_SLACK = 8


class GoodLearner(threading.Thread):
    """A learner doing everything right, on its own event loop so the abuse cannot starve it."""

    def __init__(self, url: str, user: str) -> None:
        super().__init__(daemon=True)
        self.url, self.user = url, user
        self.replies: list[dict] = []
        self.session_id: str | None = None
        self.duration = 0.0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._learn())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    async def _learn(self) -> None:
        client = await Client.connect(self.url, self.user, "course-1", timeout=20)
        self.session_id = (await client.connected(timeout=20))["sessionId"]
        started = time.monotonic()
        self._ready.set()
        while not self._halt.wait(0.9):
            self.replies.append(await client.heartbeat(timeout=20))
        await asyncio.sleep(0.2)  # past --min-heartbeat-interval since the last one
        self.replies.append(await client.heartbeat(timeout=20))
        self.duration = time.monotonic() - started
        await client.close(timeout=20)

    def started(self) -> None:
        self.start()
        assert self._ready.wait(30), "the learner could not connect"
        assert self.error is None, self.error

    def finish(self) -> None:
        self._halt.set()
        self.join(60)
        assert not self.is_alive(), "the learner hung"
        assert self.error is None, repr(self.error)


class Abused:
    """The server under abuse, and the checks made after each abuse."""

    def __init__(self, server: ServerProcess, db_path: str) -> None:
        self.server = server
        self.db_path = db_path
        self.port = server.port
        self.learners = 0
        self.rss_baseline = 0
        self.fd_baseline = 0

    def rss(self) -> int:
        with open(f"/proc/{self.server.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.server.proc.pid}/fd"))

    def record(self, session_id: str) -> tuple | None:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return db.execute(
                "SELECT seconds, end_reason, heartbeats FROM study_sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()

    async def metric(self, name: str) -> float:
        response = await AsyncHTTPClient().fetch(f"{self.server.http_url}/metrics")
        for line in response.body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    @contextlib.asynccontextmanager
    async def watch(self):
        """Run a well-behaved learner through the abuse, then check the server is whole."""
        log_from = len(self.server.output)
        self.learners += 1
        learner = GoodLearner(self.server.url, f"good-{self.learners}")
        learner.started()
        try:
            yield
        finally:
            learner.finish()
        # The learner lost nothing: every heartbeat was accepted and its stored
        # record holds every second from its opening to its clean close.
        assert learner.replies
        assert [r for r in learner.replies if r["status"] != "success"] == []
        stored = await wait_for(
            lambda: (r := self.record(learner.session_id)) and r[1] == "client_closed" and r,
            timeout=20,
            message="the learner's record",
        )
        seconds, _, heartbeats = stored
        assert heartbeats == len(learner.replies)
        assert seconds >= learner.replies[-1]["studyTime"]
        assert seconds >= learner.duration - 0.01, (seconds, learner.duration)
        # A normal client is still served.
        await self.normal_client()
        # Whatever the abuse opened is closed again, and its memory is given back.
        await wait_for(lambda: self.fds() <= self.fd_baseline + FD_SLACK, timeout=20, message="fds")
        await wait_for(
            lambda: self.rss() <= self.rss_baseline + RSS_SLACK_BYTES, timeout=20, message="RSS near baseline"
        )
        assert await self.metric("study_time_open_connections") == 0
        # Abuse is not a server fault: nothing at ERROR.
        for line in self.server.output[log_from:]:
            entry = json.loads(line)
            assert entry["level"] not in ("ERROR", "CRITICAL"), entry

    async def normal_client(self) -> None:
        client = await Client.connect(self.server.url, "normal", "course-1", timeout=20)
        await client.connected(timeout=20)
        assert (await client.heartbeat(timeout=20))["status"] == "success"
        await client.close(timeout=20)

    async def upgraded(self, user: str, **kwargs) -> RawSocket:
        conn = await RawSocket.upgraded(self.port, user, "course-1", **kwargs)
        assert conn.status == 101
        assert (await conn.message())["type"] == "connected"
        return conn


@pytest.fixture(scope="module")
def abused(tmp_path_factory):
    db_path = f"{tmp_path_factory.mktemp('abuse')}/study_time.db"
    with ServerProcess(f"--store=sqlite:///{db_path}", *SERVER_ARGS) as server:
        target = Abused(server, db_path)
        # Warm up (imports, allocator pools, the store's caches), then take the baseline.
        asyncio.run(_warm_up(target))
        target.rss_baseline = target.rss()
        target.fd_baseline = target.fds()
        yield target
        assert server.proc.poll() is None, "the server died:\n" + server.log
        assert server.terminate() == 0, server.log


async def _warm_up(target: Abused) -> None:
    await target.normal_client()
    await churn(target.port, "warm", 500)
    await wait_for(lambda: target.fds() < 40, timeout=20, message="warm-up connections to close")


async def churn(port: int, prefix: str, count: int, batch: int = 200) -> None:
    """Open ``count`` sessions and drop each without a close frame (half reset, half FIN)."""
    for start in range(0, count, batch):

        async def one(i: int) -> None:
            conn = await RawSocket.upgraded(port, f"{prefix}-{i}", "course-1")
            assert (await conn.message(timeout=30))["type"] == "connected"
            if i % 2:
                conn.reset()
            else:
                conn.close()

        await asyncio.gather(*(one(i) for i in range(start, min(count, start + batch))))


@pytest.mark.gen_test(timeout=90)
async def test_random_and_truncated_frames(abused):
    rng = random.Random(7)
    async with abused.watch():
        conns = []
        for i in range(60):
            conn = await abused.upgraded(f"random-{i}")
            kind = i % 4
            if kind == 0:  # random bytes
                conn.send(rng.randbytes(rng.randint(1, 3000)))
            elif kind == 1:  # a frame cut short: the header promises more than is sent
                conn.send(text(HEARTBEAT)[:-5])
            elif kind == 2:  # reserved bits set, or an unknown opcode
                conn.send(rng.choice([frame(TEXT, b"{}", rsv=4), frame(0x3, b"x"), frame(0xB, b"x")]))
            else:  # valid frames carrying nonsense
                for payload in (b"[]", b"null", b'{"type":1e400}', b'{"type":"heartbeat","timestamp":[]}'):
                    conn.send(frame(TEXT, payload))
                conn.send(frame(BINARY, rng.randbytes(100)))
                # RFC 6455 wants a server to close on an unmasked client frame;
                # Tornado reads it like any other, which is harmless here.
                conn.send(frame(TEXT, b"{}", masked=False))
            conns.append((kind, conn))
        for kind, conn in conns:
            if kind == 2:  # protocol violations: the server drops the connection
                await conn.eof()
            elif kind == 3:  # nonsense in valid frames is answered, the connection stays
                replies = [await conn.message() for _ in range(5)]
                assert [r["type"] for r in replies].count("error") == 4, replies
                assert (
                    replies[3]["type"] == "heartbeat_response" and replies[3]["code"] == "invalid_timestamp"
                )
                assert replies[4]["code"] == "binary_not_supported"
        for _, conn in conns:
            conn.reset()


@pytest.mark.gen_test(timeout=90)
async def test_invalid_utf8_and_huge_frames(abused):
    async with abused.watch():
        bad = await abused.upgraded("utf8")
        bad.send(frame(TEXT, b'{"type":"heartbeat","timestamp":"\xff\xfe"}'))
        assert (await bad.until_closed())[0] is None  # dropped without a close frame
        # Too big, whether announced honestly, as a lie, or in fragments: 1009.
        for i, payload in enumerate(
            [
                frame(TEXT, b"x" * 5000),
                frame(TEXT, b"", length=2**62),
                frame(TEXT, b"x" * 3000, fin=False) + frame(CONTINUATION, b"x" * 3000),
            ]
        ):
            conn = await abused.upgraded(f"huge-{i}")
            conn.send(payload)
            code, _ = await conn.until_closed()
            assert code == 1009
        # A 20 MB frame is refused from its header: the server does not read it in.
        conn = await abused.upgraded("huge-stream")
        conn.send(frame(TEXT, b"x" * 20_000_000))
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()
        assert (await conn.until_closed())[0] in (1009, None)
        conn.reset()


@pytest.mark.gen_test(timeout=90)
async def test_fragmented_frames(abused):
    async with abused.watch():
        payload = json.dumps(HEARTBEAT).encode()
        ok = await abused.upgraded("fragments")
        # A heartbeat in three fragments with a ping in between is one message.
        ok.send(frame(TEXT, payload[:10], fin=False))
        ok.send(frame(PING, b"hi"))
        ok.send(frame(CONTINUATION, payload[10:20], fin=False))
        ok.send(frame(CONTINUATION, payload[20:]))
        assert (await ok.message())["status"] == "success"
        # Many one-byte fragments are still one message (and one token of the flood limit).
        await asyncio.sleep(0.1)
        ok.send(
            b"".join(
                frame(TEXT if i == 0 else CONTINUATION, payload[i : i + 1], fin=False)
                for i in range(len(payload) - 1)
            )
        )
        ok.send(frame(CONTINUATION, payload[-1:]))
        assert (await ok.message())["status"] == "success"
        ok.send(close_frame())
        assert (await ok.until_closed())[0] == 1000
        # A continuation with nothing to continue, or a new message inside a fragmented one: dropped.
        for i, abuse in enumerate(
            [
                frame(CONTINUATION, b"x"),
                frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"),
                frame(PING, b"x", fin=False),
            ]
        ):
            conn = await abused.upgraded(f"bad-fragments-{i}")
            conn.send(abuse)
            assert (await conn.until_closed())[0] is None


@pytest.mark.gen_test(timeout=90)
async def test_ping_floods_are_refused_with_4429(abused):
    async with abused.watch():
        conns = [await abused.upgraded(f"pinger-{i}") for i in range(20)]
        for conn in conns:
            conn.send(frame(PING, b"p" * 125) * 200)
        for conn in conns:
            code, messages = await conn.until_closed()
            assert code == 4429
            assert messages[-1]["code"] == "too_many_messages"
        assert await abused.metric('study_time_sessions_closed_total{reason="rate_limited"}') >= 20


@pytest.mark.gen_test(timeout=120)
async def test_thousands_of_connections_dropped_without_a_close_frame(abused):
    async with abused.watch():
        await churn(abused.port, "dropped", 2000)
        await wait_for(
            # Only the learner's session is left.
            _equals(abused.metric, "study_time_live_sessions", 1),
            timeout=30,
            message="every dropped session to end",
        )


@pytest.mark.gen_test(timeout=90)
async def test_connections_that_never_send_anything(abused):
    async with abused.watch():
        silent = [await abused.upgraded(f"silent-{i}") for i in range(100)]
        # Invalid ids are refused at once.
        refused = [await RawSocket.upgraded(abused.port, "", "course-1") for _ in range(20)]
        for conn in refused:
            code, messages = await conn.until_closed()
            assert code == 4400 and messages[0]["code"] == "invalid_params"
        # The silent ones time out (--heartbeat-timeout=5) and are closed with 4408.
        codes = await asyncio.gather(*(conn.until_closed(timeout=30) for conn in silent))
        assert {code for code, _ in codes} == {4408}
        # Plain TCP connections that never finish (or never start) an HTTP request
        # are cut off after --http-idle-timeout.
        plain = [await RawSocket.open(abused.port) for _ in range(100)]
        for i, conn in enumerate(plain):
            if i % 2:
                conn.send(b"GET /api/study-time?userId=u&courseId=c HTTP/1.1\r\nHost: x\r\n")
        await asyncio.gather(*(conn.eof(timeout=30) for conn in plain))
        for conn in plain:
            conn.close()


@pytest.mark.gen_test(timeout=120)
async def test_slow_readers_are_dropped_not_buffered(tmp_path):
    """A client that sends but never reads must not make the server buffer replies without bound."""
    db_path = f"{tmp_path}/study_time.db"
    # No flood limit: the limit would otherwise end the connection first.
    with ServerProcess(f"--store=sqlite:///{db_path}", *SERVER_ARGS, "--flood-rate=0") as server:
        target = Abused(server, db_path)
        await _warm_up(target)
        target.rss_baseline, target.fd_baseline = target.rss(), target.fds()
        async with target.watch():
            readers = [
                await RawSocket.upgraded(server.port, f"slow-{i}", "course-1", rcvbuf=4096) for i in range(3)
            ]
            for conn in readers:
                conn.writer.transport.pause_reading()  # really read nothing
            # Heartbeats, each answered (accepted or too_frequent) and keeping the
            # session alive. On loopback the kernel takes about 4 MB of replies
            # before any wait in the server's memory: the drop follows soon after.
            junk = text(HEARTBEAT) * 2000
            deadline = time.monotonic() + 60
            alive = list(readers)
            while await target.metric("study_time_slow_reader_drops_total") < len(readers):
                assert time.monotonic() < deadline, (
                    "the server kept buffering replies for clients that never read"
                )
                for conn in list(alive):
                    try:
                        conn.send(junk)
                        await asyncio.wait_for(conn.writer.drain(), 1.0)
                    except ConnectionError:
                        alive.remove(conn)  # dropped by the server
                    except TimeoutError:
                        pass  # the server is busy reading the others
            assert await target.metric("study_time_slow_reader_drops_total") == len(readers)
            assert await target.metric('study_time_sessions_closed_total{reason="connection_lost"}') >= len(
                readers
            )
            for conn in readers:
                conn.reset()
        assert server.terminate() == 0


def _equals(read, name: str, value: float):
    async def check() -> bool:
        return await read(name) == value

    return check


@pytest.mark.gen_test(timeout=60)
async def test_replies_lost_with_their_connection_log_no_error(start_service, caplog):
    """Replies still queued when a connection dies are dropped quietly.

    Found by the soak test when replies went through Tornado's
    ``write_message``: it returns a task that fails when the connection closes
    first, and left unretrieved asyncio logged "Task exception was never
    retrieved" at ERROR for an ordinary disconnect. Replies now go straight to
    the stream; this keeps any such failure from coming back. In-process, so
    that the garbage collection that triggers the log can be forced.
    """
    service = await start_service(flood_rate=0, heartbeat_timeout=5.0)
    port = int(service.http_url.rsplit(":", 1)[1])
    for i in range(3):
        conn = await RawSocket.upgraded(port, f"lossy-{i}", "course-1", rcvbuf=4096)
        assert (await conn.message())["type"] == "connected"
        conn.writer.transport.pause_reading()
        # Enough replies to fill the kernel's buffers and queue some in the server's memory.
        for _ in range(20):
            conn.send(text(HEARTBEAT) * 2000)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(conn.writer.drain(), 10)
        conn.reset()
    await wait_for(lambda: not service.connections, timeout=20, message="the connections to close")
    gc.collect()
    await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.gen_test(timeout=60)
async def test_deeply_nested_json_is_answered_invalid_json_not_a_traceback(tmp_path):
    # Python's JSON parser recurses once per level: thousands of brackets in a
    # frame under --max-message-size used to raise RecursionError (a traceback
    # and a dropped connection). Now: the documented invalid_json, the
    # connection kept, nothing logged at ERROR, and the session still credited.
    with ServerProcess(f"--store=sqlite:///{tmp_path}/study_time.db", *SERVER_ARGS) as server:
        conn = await RawSocket.upgraded(server.port, "deep", "course-1")
        assert (await conn.message())["type"] == "connected"
        for payload in (
            "[" * 4000,
            '{"type":"heartbeat","x":' + "[" * 2000 + "]" * 2000 + "}",
            '{"a":' * 600 + "1" + "}" * 600,
        ):
            conn.send(frame(TEXT, payload.encode()))
            reply = await conn.message()
            assert (reply["type"], reply["code"]) == ("error", "invalid_json"), reply
        # Brackets inside a string are not nesting: this is a heartbeat.
        conn.send(text({**HEARTBEAT, "note": "[" * 3000}))
        reply = await conn.message()
        assert (reply["type"], reply["status"]) == ("heartbeat_response", "success"), reply
        conn.send(close_frame())
        assert (await conn.until_closed())[0] == 1000
        assert server.terminate() == 0
    for line in server.output:
        entry = json.loads(line)
        assert entry["level"] not in ("ERROR", "CRITICAL"), entry
    assert "RecursionError" not in server.log

"""A raw WebSocket client over plain sockets, for the abuse a WebSocket library won't produce.

It writes frames byte by byte as the test wants them (unmasked, truncated,
fragmented, invalid UTF-8, lying about their length) and reads the server's
frames back. ``RawSocket`` is asyncio-based (for many connections at once);
:func:`sync_upgrade` is a blocking one-shot for hypothesis tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from urllib.parse import quote_from_bytes

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` overrides the announced payload length (a lie)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n <= 0xFFFF:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(message: dict | str) -> bytes:
    if isinstance(message, dict):
        message = json.dumps(message)
    return frame(TEXT, message.encode())


def close_frame(code: int = 1000) -> bytes:
    return frame(CLOSE, struct.pack("!H", code))


def query(user: bytes | str | None = b"u1", course: bytes | str | None = b"c1") -> str:
    """The query string for these ids, every byte percent-encoded as needed."""
    parts = []
    for name, value in (("userId", user), ("courseId", course)):
        if value is not None:
            raw = value.encode() if isinstance(value, str) else value
            parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts)


def upgrade_request(path: str, host: str = "127.0.0.1", headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, rest) for the first complete server frame in ``buffer``, or None."""
    if len(buffer) < 2:
        return None
    opcode, n, pos = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if n == 126:
        if len(buffer) < 4:
            return None
        n, pos = struct.unpack("!H", buffer[2:4])[0], 4
    elif n == 127:
        if len(buffer) < 10:
            return None
        n, pos = struct.unpack("!Q", buffer[2:10])[0], 10
    if len(buffer) < pos + n:
        return None
    return opcode, buffer[pos : pos + n], buffer[pos + n :]


class Closed(Exception):
    """The server closed the TCP connection."""


class RawSocket:
    """One raw TCP connection to the server, with helpers to speak (or abuse) WebSocket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.status: int | None = None

    @classmethod
    async def open(
        cls, port: int, *, source: str | None = None, rcvbuf: int | None = None, timeout: float = 10.0
    ) -> RawSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # set before connecting, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), timeout)
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @classmethod
    async def upgraded(
        cls, port: int, user: bytes | str | None = b"u1", course: bytes | str | None = b"c1", **kwargs
    ) -> RawSocket:
        """A connection that has completed the WebSocket upgrade for these ids."""
        conn = await cls.open(port, **kwargs)
        await conn.upgrade(f"/api/study-time?{query(user, course)}")
        return conn

    async def upgrade(self, path: str, timeout: float = 10.0) -> int:
        """Send the upgrade request and read the response head; return its status."""
        self.send(upgrade_request(path))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status = int(head.split(b" ", 2)[1])
        return self.status

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next server frame; raises :class:`Closed` if the connection ends first."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = parse_frame(self.buffer)
            if parsed is not None:
                opcode, payload, self.buffer = parsed
                return opcode, payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server")
            chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            if not chunk:
                raise Closed()
            self.buffer += chunk

    async def message(self, timeout: float = 10.0) -> dict:
        """The next text message, parsed (control frames other than close are skipped)."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == TEXT:
                return json.loads(payload)
            if opcode == CLOSE:
                raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)

    async def until_closed(self, timeout: float = 10.0) -> tuple[int | None, list[dict]]:
        """Read until the server closes; return (close code or None without a close frame, messages)."""
        messages: list[dict] = []
        deadline = time.monotonic() + timeout
        code: int | None = None
        while True:
            try:
                opcode, payload = await self.read_frame(max(0.01, deadline - time.monotonic()))
            except (Closed, ConnectionError):
                return code, messages
            if opcode == TEXT:
                messages.append(json.loads(payload))
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close()
                return code, messages

    async def eof(self, timeout: float = 10.0) -> None:
        """Wait until the server closes the TCP connection (whatever it sends before)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close the connection")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except ConnectionError:
                return
            if not chunk:
                return

    def reset(self) -> None:
        """Drop the connection with a TCP reset: no close frame, no FIN, no TIME_WAIT."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


def sync_upgrade(port: int, path: str, timeout: float = 10.0) -> tuple[int, list[tuple[int, bytes]]]:
    """Blocking: send an upgrade for ``path``; return (HTTP status, frames until the first text or close).

    For a 101 it reads until the first text message or close frame; for any
    other status, the frames list is empty.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(upgrade_request(path))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise Closed(f"closed before the response head: {buffer!r}")
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        frames: list[tuple[int, bytes]] = []
        if status != 101:
            return status, frames
        while True:
            parsed = parse_frame(buffer)
            if parsed is None:
                chunk = sock.recv(65536)
                if not chunk:
                    return status, frames
                buffer += chunk
                continue
            opcode, payload, buffer = parsed
            frames.append((opcode, payload))
            if opcode == CLOSE:
                return status, frames
            if opcode == TEXT and json.loads(payload).get("type") == "connected":
                sock.sendall(close_frame())
                return status, frames

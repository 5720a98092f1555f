"""A small TCP proxy on loopback for store fault tests: cut the link, or drop one reply.

It speaks just enough of the MongoDB wire protocol to frame messages and read
a command's name, so a test can let one write reach the server and then lose
its reply, as a network failure would.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
OP_MSG = 2013


async def read_message(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(HEADER.size)
    (length,) = struct.unpack_from("<i", header)
    return header + await reader.readexactly(length - HEADER.size)


def command_name(message: bytes) -> str | None:
    """The command an OP_MSG carries (the first key of its body), or None."""
    _, _, _, opcode = HEADER.unpack_from(message)
    if opcode != OP_MSG or len(message) < HEADER.size + 10:
        return None
    body = HEADER.size + 4  # after flagBits
    if message[body] != 0:  # section kind 0: the command document
        return None
    start = body + 1 + 4 + 1  # kind, document length, first element's type
    end = message.index(b"\0", start)
    return message[start:end].decode()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port until cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port: int | None = None
        self.up = True
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._drop_reply_to: set[str] = set()
        self.dropped: list[str] = []

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, database: str, options: str = "") -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}" + (f"?{options}" if options else "")

    def cut(self) -> None:
        """Close every connection and refuse new ones (they are accepted and closed at once)."""
        self.up = False
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.up = True

    def drop_reply_to(self, *commands: str) -> None:
        """Forward the next message running one of ``commands``, then lose its reply and the connection."""
        self._drop_reply_to = set(commands)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._links, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.up:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        task = asyncio.current_task()
        self._links.add(task)  # type: ignore[arg-type]
        try:
            await self._relay(client_r, client_w, server_r, server_w)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for w in (client_w, server_w):
                w.close()
                self._writers.discard(w)
            self._links.discard(task)  # type: ignore[arg-type]

    async def _relay(self, client_r, client_w, server_r, server_w) -> None:
        lose_next_reply = asyncio.Event()

        async def upstream() -> None:
            while True:
                message = await read_message(client_r)
                name = command_name(message)
                if name is not None and name in self._drop_reply_to:
                    self._drop_reply_to = set()
                    self.dropped.append(name)
                    lose_next_reply.set()
                server_w.write(message)
                await server_w.drain()

        async def downstream() -> None:
            while True:
                message = await read_message(server_r)
                if lose_next_reply.is_set():
                    return  # the server did the write; the client never hears of it
                client_w.write(message)
                await client_w.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

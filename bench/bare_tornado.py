"""Baseline: a bare Tornado WebSocket handler that answers heartbeats.

No auth, accounting or storage, and default, untuned Tornado (no gc or
event-loop tuning): the figure every result of ours is divided by.

    python bench/bare_tornado.py PORT [PROCESSES]
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import tornado.netutil
import tornado.process
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer


class HeartbeatSocket(tornado.websocket.WebSocketHandler):
    def open(self) -> None:
        self.study_time = 0
        self.write_message(json.dumps({"type": "connected", "status": "success", "studyTime": 0}))

    def on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            self.write_message(json.dumps({"type": "error", "status": "error", "code": "invalid_json"}))
            return
        if isinstance(data, dict) and data.get("type") == "heartbeat":
            self.study_time += 1
            self.write_message(
                json.dumps({"type": "heartbeat_response", "status": "success", "studyTime": self.study_time})
            )


async def serve(sockets: list) -> None:
    server = HTTPServer(tornado.web.Application([(r"/api/study-time", HeartbeatSocket)]))
    server.add_sockets(sockets)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def main() -> None:
    port = int(sys.argv[1])
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
    if processes > 1:
        tornado.process.fork_processes(processes)
    asyncio.run(serve(sockets))


if __name__ == "__main__":
    main()

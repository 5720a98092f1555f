"""What MongoDB clients send, counted by PyMongo command monitoring (tests of costs, docs/performance.md).

``Commands`` counts one client's commands (``MongoStore(url, event_listeners=[...])``);
``server_commands`` (a fixture, in conftest.py) counts what every client created
during a test sends, so a whole in-process server (``serve``) can be counted.
"""

from __future__ import annotations

import pytest
import tornado.netutil
from pymongo import monitoring

import server
from service import Service


class Commands(monitoring.CommandListener):
    """Every command a client sent: (name, collection, command)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("hello", "isMaster", "ismaster", "endSessions", "ping"):
            return
        command = event.command
        target = command.get(event.command_name)
        self.seen.append((event.command_name, target if isinstance(target, str) else None, command))

    def succeeded(self, event) -> None: ...

    def failed(self, event) -> None: ...

    def take(self) -> list[tuple[str, str | None, dict]]:
        seen, self.seen = self.seen, []
        return seen


class Forward(monitoring.CommandListener):
    """A listener registered with PyMongo once for the whole test run (PyMongo has no way to
    unregister one), which passes events on to :attr:`to` while a test sets it.

    How a test counts what a whole server sends: the service builds its own
    store (no test hook in production code), and a globally registered
    listener sees every client created after it, as in bench/mongo_cost.py.
    """

    registered = False

    def __init__(self) -> None:
        self.to: Commands | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.to is not None:
            self.to.started(event)

    def succeeded(self, event) -> None: ...

    def failed(self, event) -> None: ...


FORWARD = Forward()


@pytest.fixture
def server_commands():
    """What every MongoDB client created from now on sends, until the test ends."""
    if not Forward.registered:
        monitoring.register(FORWARD)
        Forward.registered = True
    FORWARD.to = Commands()
    yield FORWARD.to
    FORWARD.to = None


async def serve(settings) -> Service:
    service = Service(settings)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    await service.start(sockets, server.make_server(service))
    service.url = f"ws://127.0.0.1:{sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
    return service

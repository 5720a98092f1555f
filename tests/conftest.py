"""Shared fixtures: stores, and a real in-process server on a loopback port.

``store_url`` is parametrised over every store the machine can run, so the
protocol tests and the store contract suite run on each of them.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
import tornado.netutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import server  # noqa: E402
from service import Service  # noqa: E402
from tests.support import ferretdb  # noqa: E402
from tests.support.commands import server_commands  # noqa: E402,F401 (what a server sends, a fixture)
from tests.support.dashboard_page import school  # noqa: E402,F401 (the dashboards' seeded server, a fixture)
from tests.support.helpers import descendants, fast_settings, kill_and_wait, wait_until  # noqa: E402

#: In the environment of this test run, so of every process it starts (they
#: inherit it) and of theirs: how the leak check below finds them, even once
#: they have been handed to another parent (a worker of a killed supervisor).
RUN_TAG = "PYTEST_STUDY_TIME_RUN"
os.environ[RUN_TAG] = f"{os.getpid()}-{uuid.uuid4().hex}"
#: Started once for the whole run on purpose (the ``mongodb_server`` fixture), not a leak.
SESSION_PROCESSES = ("ferretdb",)
#: Seconds a module's processes get to finish exiting after it (a server's graceful stop, a browser's close).
EXIT_GRACE = 15.0


def started_by_this_run() -> dict[tuple[int, str], str]:
    """Every live process this run started, directly or not: (pid, start time) -> its command line.

    A process counts if it descends from pytest or carries :data:`RUN_TAG` in
    its environment; the session's own (:data:`SESSION_PROCESSES`) and what
    they start do not.
    """
    tag = f"{RUN_TAG}={os.environ[RUN_TAG]}".encode()
    below = set(descendants(os.getpid()))
    found: dict[tuple[int, str], str] = {}
    excluded: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
            if fields[0] == "Z":  # exited; only its parent has yet to collect it
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = [a.decode(errors="replace") for a in file.read().split(b"\0") if a]
            if pid not in below:
                with open(f"/proc/{pid}/environ", "rb") as file:
                    if tag not in file.read().split(b"\0"):
                        continue
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if argv and os.path.basename(argv[0]) in SESSION_PROCESSES:
            excluded.update([pid, *descendants(pid)])
            continue
        found[(pid, fields[19])] = " ".join(argv)[:200]  # field 22 of stat: the start time
    return {key: argv for key, argv in found.items() if key[0] not in excluded}


@pytest.fixture(autouse=True, scope="module")
def no_process_left_behind():
    """Fail the module if a process it started (a server, its workers, a browser) still runs after it.

    Autouse and module-scoped, so set up before the module's other fixtures
    and checked after they are torn down (the browser closed). What is left is
    killed, so one leak does not fail every module after it.
    """
    before = set(started_by_this_run())

    def left() -> dict[tuple[int, str], str]:
        return {key: argv for key, argv in started_by_this_run().items() if key not in before}

    yield
    try:
        wait_until(lambda: not left(), EXIT_GRACE, "the module's processes to exit", interval=0.1)
        return
    except AssertionError:
        leaked = left()
    kill_and_wait([pid for pid, _ in leaked])
    pytest.fail(
        "processes left running after the module (killed now):\n"
        + "\n".join(f"  pid {pid}: {argv}" for (pid, _), argv in leaked.items()),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def mongodb_server():
    """The URL (no database) of a real MongoDB-compatible server, started once per test run.

    ``$STUDY_TIME_TEST_MONGODB_URL`` if set, else FerretDB in a temporary
    folder. Without either the MongoDB tests skip, except under ``CI=true``
    where that is a failure.
    """
    url = os.environ.get(ferretdb.URL_ENV)
    if url:
        yield url.rstrip("/")
        return
    binary = ferretdb.find_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(ferretdb.HOW_TO_ENABLE)
        pytest.skip(ferretdb.HOW_TO_ENABLE)
    server = ferretdb.FerretDB(binary).start()
    yield server.url
    server.stop()


def mongodb_url(server_url: str, database: str, options: str = "") -> str:
    """``server_url`` with a database name and extra connection string options."""
    base, _, query = server_url.partition("?")
    query = "&".join(q for q in (query, options) if q)
    return f"{base.rstrip('/')}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
def mongodb_database(request, mongodb_server):
    """A fresh database name on the test server, dropped after the test."""
    name = f"st_{uuid.uuid4().hex[:16]}"
    yield name
    ferretdb.drop_database(mongodb_server, name)


@pytest.fixture(params=["sqlite", "mongodb"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store_url(store_kind, tmp_path, request) -> str:
    if store_kind == "sqlite":
        return f"sqlite:///{tmp_path}/study_time.db"
    if store_kind == "mongodb":
        server = request.getfixturevalue("mongodb_server")
        return mongodb_url(server, request.getfixturevalue("mongodb_database"))
    raise AssertionError(f"unknown store kind {store_kind}")


@pytest.fixture
def start_service(io_loop, store_url):
    """A factory: ``await start_service(**settings)`` runs a real server on 127.0.0.1:<free port>.

    ``clock=FakeClock()`` makes the server's time move only when the test moves it.

    Every service started is shut down (and its store closed) after the test.
    """
    started: list[Service] = []

    async def start(*, clock=None, **overrides) -> Service:
        settings = fast_settings(**{"store": store_url, **overrides})
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        service = await server.start(settings, sockets, clock=clock)
        service.url = f"ws://127.0.0.1:{port}"  # type: ignore[attr-defined]
        service.http_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        started.append(service)
        return service

    yield start
    for service in started:
        if not service.shutting_down:
            io_loop.run_sync(service.shutdown, timeout=10)


@pytest.fixture
def store(io_loop, store_url):
    """An opened store of each kind, closed after the test."""
    from storage.backends import backend_for

    opened = backend_for(store_url).store()
    io_loop.run_sync(opened.open)
    yield opened
    io_loop.run_sync(opened.close)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/support/browser.py), one per test module; skips without it outside CI."""
    from tests.support.browser import chromium

    yield from chromium()


@pytest.fixture
def mongo_url(mongodb_server, mongodb_database) -> str:
    """The URL of this test's own database on the test MongoDB server."""
    return mongodb_url(mongodb_server, mongodb_database)


@pytest.fixture
def mongo_db(mongodb_server, mongodb_database):
    """A plain synchronous PyMongo handle on the test database, as a reporting tool would use."""
    from pymongo import MongoClient

    client = MongoClient(mongodb_server, tz_aware=True)
    yield client[mongodb_database]
    client.close()


@pytest.fixture
def writer_clock(monkeypatch):
    """The writer's monotonic clock, moved by hand (``tests/support/writer_clock.py``)."""
    from tests.support.writer_clock import WriterClock

    return WriterClock(monkeypatch)

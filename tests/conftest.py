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
from tests.support.dashboard_page import school  # noqa: E402,F401 (the dashboards' seeded server, a fixture)
from tests.support.helpers import fast_settings  # noqa: E402


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

"""The MongoDB store beyond the contract: its schema, the reporting queries of
docs/storage.md, and store faults (a lost reply, an outage under load), against
the real test server (FerretDB, or $STUDY_TIME_TEST_MONGODB_URL)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
import tornado.netutil

import server
from storage import StoreError
from storage.backends import backend_for
from storage.mongodb.schema import SESSIONS
from storage.mongodb.store import MongoStore
from storage.writer import SessionWriter
from tests.support.helpers import Client, fast_settings, wait_for
from tests.support.records import record
from tests.support.stored import study_records
from tests.support.tcpproxy import TcpProxy
from tracking.tracker import Tracker

DAY1 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC).timestamp()

# The three example reporting queries of docs/storage.md, verbatim.
TOTAL_PER_LEARNER_IN_COURSE = [
    {"$match": {"courseId": "c1"}},
    # One accumulator per $group: FerretDB 1.24 computes only the first one correctly.
    {"$group": {"_id": "$userId", "seconds": {"$sum": "$seconds"}}},
    {"$sort": {"seconds": -1}},
]
TOTAL_PER_COURSE_FOR_LEARNER = [
    {"$match": {"userId": "u1"}},
    {"$group": {"_id": "$courseId", "seconds": {"$sum": "$seconds"}}},
    {"$sort": {"_id": 1}},
]
TOTAL_PER_DAY_IN_COURSE = [
    {
        "$match": {
            "courseId": "c1",
            "startedAt": {"$gte": datetime(2026, 3, 1, tzinfo=UTC), "$lt": datetime(2026, 4, 1, tzinfo=UTC)},
        }
    },
    {"$group": {"_id": "$day", "seconds": {"$sum": "$seconds"}}},
    {"$sort": {"_id": 1}},
]


@pytest.fixture
def store_kind() -> str:
    """Every test here is about the MongoDB store: conftest's ``store`` is that one."""
    return "mongodb"


def test_a_url_without_a_database_is_a_start_up_error_that_hides_the_url():
    with pytest.raises(StoreError) as raised:
        backend_for("mongodb://admin:s3cret@127.0.0.1:1/").store()
    assert "--store" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert isinstance(backend_for("mongodb+srv://cluster.example.com/study").store(), MongoStore)


@pytest.mark.gen_test
async def test_documents_use_bson_dates_and_the_indexes_exist(store, mongo_db):
    await store.save([record(seconds=12.5, started=DAY1, ended=False)])
    doc = mongo_db[SESSIONS].find_one()
    assert doc["startedAt"] == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert doc["creditedUntil"] == datetime(2026, 3, 1, 9, 0, 12, 500000, tzinfo=UTC)
    assert doc["endedAt"] is None
    assert doc["day"] == "2026-03-01"
    assert doc["seconds"] == 12.5
    assert doc["processId"] == store.process_id
    names = {i["name"] for i in mongo_db[SESSIONS].list_indexes()}
    assert {"user_course_started", "course_started", "open_by_process"} <= names
    for collection in ("study_leases", "study_takeovers", "study_processes"):
        assert len(list(mongo_db[collection].list_indexes())) >= 2, collection


@pytest.mark.gen_test
async def test_the_documented_reporting_queries_run_on_the_schema(store, mongo_db):
    await store.save(
        [
            record("u1", "c1", seconds=100.5, started=DAY1),
            record("u1", "c1", seconds=50, started=DAY2),
            record("u2", "c1", seconds=30, started=DAY2),
            record("u1", "c2", seconds=7.25, started=DAY1),
        ]
    )
    assert list(mongo_db[SESSIONS].aggregate(TOTAL_PER_LEARNER_IN_COURSE)) == [
        {"_id": "u1", "seconds": 150.5},
        {"_id": "u2", "seconds": 30.0},
    ]
    assert list(mongo_db[SESSIONS].aggregate(TOTAL_PER_COURSE_FOR_LEARNER)) == [
        {"_id": "c1", "seconds": 150.5},
        {"_id": "c2", "seconds": 7.25},
    ]
    assert list(mongo_db[SESSIONS].aggregate(TOTAL_PER_DAY_IN_COURSE)) == [
        {"_id": "2026-03-01", "seconds": 100.5},
        {"_id": "2026-03-02", "seconds": 80.0},
    ]


@pytest.mark.gen_test
async def test_a_checkpoint_whose_reply_is_lost_is_retried_without_counting_twice(
    mongodb_server, mongodb_database, store
):
    """The write reaches the server, the reply does not: the writer keeps the
    snapshot and writes it again at the next flush, which changes nothing."""
    port = int(mongodb_server.rsplit(":", 1)[1])
    proxy = await TcpProxy(port).start()
    via_proxy = backend_for(
        proxy.url(mongodb_database, "serverSelectionTimeoutMS=1000&socketTimeoutMS=3000")
    ).store()
    await via_proxy.open()
    try:
        tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0)
        writer = SessionWriter(via_proxy)
        session, _ = tracker.open("u1", "c1", 1000.0, session_id=uuid.uuid4().hex)
        writer.changed(session)
        proxy.drop_reply_to("insert")  # the first snapshot is inserted, its reply lost
        assert await writer.flush() is False
        assert proxy.dropped == ["insert"]
        assert len(await study_records(store)) == 1  # it did reach the store
        assert await writer.flush() is True  # the retry
        tracker.heartbeat(session, 1020.0)
        writer.changed(session)
        proxy.drop_reply_to("update")  # a checkpoint applied, its reply lost
        assert await writer.flush() is False
        (stored,) = await study_records(store)
        assert stored.seconds == 20
        assert await writer.flush() is True
        assert await writer.total_seconds("u1", "c1") == 20
        assert await store.total_seconds("u1", "c1") == 20
        assert len(await study_records(store)) == 1
    finally:
        await via_proxy.close()
        await proxy.close()


@pytest.mark.gen_test(timeout=90)
async def test_an_outage_under_load_loses_nothing_and_refuses_new_connections(
    mongodb_server, mongodb_database, store
):
    """The store is cut off for 12 s while 20 clients heartbeat: they keep getting
    correct totals from memory, new connections get 1013, and once it is back
    the stored totals equal what the clients were told."""
    port = int(mongodb_server.rsplit(":", 1)[1])
    proxy = await TcpProxy(port).start()
    url = proxy.url(
        mongodb_database, "serverSelectionTimeoutMS=500&connectTimeoutMS=500&socketTimeoutMS=2000"
    )
    settings = fast_settings(store=url, heartbeat_interval=0.5, heartbeat_timeout=2.0)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    service = await server.start(settings, sockets)
    base = f"ws://127.0.0.1:{sockets[0].getsockname()[1]}"
    users = [f"learner{i}" for i in range(20)]
    clients = {}
    try:
        for user in users:
            clients[user] = await Client.connect(base, user, "c1")
            await clients[user].connected()
        seen: dict[str, int] = {}
        stop = asyncio.Event()

        async def study(user: str) -> None:
            while not stop.is_set():
                reply = await clients[user].heartbeat(timeout=10)
                assert reply["status"] == "success", reply
                assert reply["studyTime"] >= seen.get(user, 0)
                seen[user] = reply["studyTime"]
                await asyncio.sleep(0.25)

        tasks = [asyncio.ensure_future(study(u)) for u in users]
        await asyncio.sleep(0.5)
        proxy.cut()
        outage_started = time.monotonic()
        await wait_for(lambda: not service.writer.healthy, timeout=10, message="the writer to notice")
        late = await Client.connect(base, "latecomer", "c1")
        code, _, messages = await late.closed(timeout=10)
        assert code == 1013
        assert messages[-1]["code"] == "store_unavailable"
        before = dict(seen)
        await asyncio.sleep(max(0.0, 12 - (time.monotonic() - outage_started)))
        assert all(seen[u] > before[u] for u in users), "heartbeats kept being answered"
        proxy.restore()
        await wait_for(lambda: service.writer.healthy, timeout=20, message="the store to come back")
        stop.set()
        await asyncio.gather(*tasks)
        await wait_for(lambda: service.writer.unsaved == 0, timeout=10, message="the flush")
        for user in users:
            # The last answer was sent from memory; the store now holds that credit.
            assert int(await store.total_seconds(user, "c1")) == seen[user]
            assert seen[user] >= 12
        again = await Client.connect(base, "latecomer", "c1")
        assert (await again.connected())["studyTime"] == 0
        await again.close()
    finally:
        await service.shutdown()
        await proxy.close()

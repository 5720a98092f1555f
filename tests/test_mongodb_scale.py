"""What the MongoDB store sends, counted by PyMongo command monitoring (docs/storage.md, docs/performance.md).

Constant-cost openings at any history, checkpoints that send only what
changed and name the shard key, running totals that never count a second
twice, an idle process that stays quiet, one survivor per orphan, and the
upgrade of a database written by the previous schema. Against the real test
server (FerretDB, or $STUDY_TIME_TEST_MONGODB_URL).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import replace

import pytest

from storage.mongodb.coordination import MongoCoordinator
from storage.mongodb.schema import (
    LEASES,
    META,
    PROCESSES,
    SESSIONS,
    document_from_record,
    record_from_document,
    to_date,
)
from storage.mongodb.store import MongoStore
from storage.writer import SessionWriter
from tests.support.commands import Commands, serve
from tests.support.helpers import ROOT, Client, fast_settings, wait_for
from tests.support.records import T0, record
from tracking.tracker import Tracker


@pytest.fixture
def store_kind() -> str:
    return "mongodb"


@pytest.fixture
def watched(io_loop, mongo_url):
    """A MongoDB store whose commands are counted, and the counter."""
    commands = Commands()
    opened = MongoStore(mongo_url, event_listeners=[commands])
    io_loop.run_sync(opened.open)
    commands.take()
    yield opened, commands
    io_loop.run_sync(opened.close)


def past_sessions(user: str, count: int, seconds: float = 60.0) -> list[dict]:
    """Documents as the previous version wrote them: ended sessions of ``user`` in course c1."""
    return [
        document_from_record(record(user, seconds=seconds, started=T0 + i * 1000), "gone")
        for i in range(count)
    ]


@pytest.mark.gen_test(timeout=60)
async def test_an_opening_reads_the_same_two_documents_whatever_the_history(
    mongo_url, mongo_db, server_commands
):
    mongo_db[SESSIONS].insert_many(past_sessions("veteran", 2000))
    commands = server_commands
    # A heartbeat timeout far longer than the test: a stall of the machine
    # between opening and closing must not end a session as a timeout.
    slow = {"heartbeat_interval": 5.0, "heartbeat_timeout": 10.0}
    service = await serve(fast_settings(store=mongo_url, **slow))  # upgrades: builds the totals
    try:
        shapes = {}
        # A newcomer's first session builds its running total (from nothing);
        # its second, and the veteran's first (upgraded at start), only read it.
        for n, user in enumerate(("newcomer", "newcomer", "veteran")):
            commands.take()
            client = await Client.connect(service.url, user, "c1")
            hello = await client.connected()
            shapes[n] = [
                (name, target)
                for name, target, _ in commands.take()
                if target not in ("study_takeovers", "study_processes")
            ]
            assert hello["studyTime"] == (2000 * 60 if user == "veteran" else 0)
            await client.close()
            await wait_for(lambda: service.writer.unsaved == 0, message="the final snapshot")
        # One findAndModify on the learner's lease-and-total document, nothing
        # else before the answer (the session document is written by the next flush).
        for n in (1, 2):
            opening = [s for s in shapes[n] if s[0] in ("findAndModify", "aggregate", "find")]
            assert opening == [("findAndModify", LEASES)], (n, shapes[n])
        assert ("aggregate", SESSIONS) in shapes[0]
    finally:
        await service.shutdown()


@pytest.mark.gen_test
async def test_a_session_is_inserted_once_then_checkpoints_set_only_what_changed_on_its_shard_key(watched):
    store, commands = watched
    tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0)
    writer = SessionWriter(store)
    session, _ = tracker.open("u1", "c1", 1000.0, session_id=uuid.uuid4().hex, remote_addr="10.0.0.1")
    writer.changed(session)
    assert await writer.flush()
    ((name, target, command),) = commands.take()
    assert (name, target, len(command["documents"])) == ("insert", SESSIONS, 1)  # no update-miss, no find
    tracker.heartbeat(session, 1030.0)
    writer.changed(session)
    assert await writer.flush()
    ((name, target, command),) = commands.take()
    assert (name, target) == ("update", SESSIONS)
    (statement,) = command["updates"]
    assert statement["q"]["userId"] == "u1" and statement["q"]["_id"] == session.session_id
    assert set(statement["u"]) == {"$set"}
    assert set(statement["u"]["$set"]) == {
        "creditedUntil",
        "exact.creditedUntil",
        "seconds",
        "heartbeats",
        "lastClientTime",
        "rev",
    }
    tracker.end(session, 1040.0, tracker_reason())
    writer.ended(session)
    assert await writer.flush()
    ((name, target, command),) = commands.take()
    (statement,) = command["updates"]
    assert {"endedAt", "endReason", "exact.endedAt"} <= set(statement["u"]["$set"])
    assert "remoteAddr" not in statement["u"]["$set"] and "startedAt" not in statement["u"]["$set"]
    (stored,) = [record_from_document(d) async for d in store.db[SESSIONS].find({"userId": "u1"})]
    assert stored == session.record()


def tracker_reason():
    from tracking.session import EndReason

    return EndReason.CLIENT_CLOSED


@pytest.mark.gen_test
async def test_a_live_session_is_checkpointed_once_per_checkpoint_interval(watched):
    store, commands = watched
    clock = [0.0]
    tracker = Tracker(heartbeat_timeout=600, min_heartbeat_interval=0)
    writer = SessionWriter(store, checkpoint_interval=3600)
    session, _ = tracker.open("u1", "c1", 1000.0, session_id=uuid.uuid4().hex)
    writer.changed(session)
    assert await writer.flush()  # a new session is written at once
    for beat in range(1, 5):
        clock[0] = 1000.0 + 30 * beat
        tracker.heartbeat(session, clock[0])
        writer.changed(session)
        assert await writer.flush()
    assert [name for name, _, _ in commands.take()] == ["insert"]  # no checkpoint due yet
    assert writer.unsaved == 1 and not writer.is_saved(session.session_id)
    assert await writer.drain(5)  # shutting down writes it whatever the interval
    (stored,) = [record_from_document(d) async for d in store.db[SESSIONS].find({"userId": "u1"})]
    assert stored.seconds == 120


@pytest.mark.gen_test
async def test_a_retried_or_recovered_session_is_added_to_the_running_total_once(watched, mongo_db):
    store, _ = watched
    tracker = Tracker(heartbeat_timeout=600, min_heartbeat_interval=0)
    writer = SessionWriter(store)
    coordinator = MongoCoordinator(store, writer, heartbeat_interval=30, process_timeout=60)
    await coordinator.start(1000.0)
    first, _ = tracker.open("u1", "c1", 1000.0, session_id="first")
    assert await coordinator.claim(first) == 0
    tracker.heartbeat(first, 1030.0)
    tracker.end(first, 1040.0, tracker_reason())
    writer.ended(first)
    coordinator.ended(first)
    # A new session opens before the first's final snapshot is written: its
    # total has the first's credit, from memory.
    second, _ = tracker.open("u1", "c1", 1050.0, session_id="second")
    assert await coordinator.claim(second) == pytest.approx(40)
    assert await writer.flush()
    await coordinator.poll(1051.0)
    lease = mongo_db[LEASES].find_one({"_id": "u1/c1"})
    assert lease["seconds"] == pytest.approx(40) and set(lease["open"]) == {"second"}
    # The same final snapshot again (a lost reply), and the release again: nothing more.
    await store.save([first.record()])
    coordinator._ended.add("first")
    coordinator._sessions["first"] = first
    await coordinator.poll(1052.0)
    assert mongo_db[LEASES].find_one({"_id": "u1/c1"})["seconds"] == pytest.approx(40)
    # The second is checkpointed, then its process dies: one survivor closes
    # it and adds its checkpoint once, however many try.
    tracker.heartbeat(second, 1080.0)
    writer.changed(second)
    assert await writer.flush()
    mongo_db[PROCESSES].update_one({"_id": store.process_id}, {"$set": {"expiresAt": to_date(0)}})
    survivors = [MongoStore(store._url), MongoStore(store._url)]
    for survivor in survivors:
        await survivor.open()
    try:
        # One after the other: FerretDB does not make concurrent updates of
        # one document atomic, as MongoDB does (docs/storage.md).
        results = [await s.recover(2000.0) for s in survivors]
    finally:
        for survivor in survivors:
            await survivor.close()
    assert [len(r) for r in results] == [1, 0]
    lease = mongo_db[LEASES].find_one({"_id": "u1/c1"})
    assert lease["seconds"] == pytest.approx(70) and not lease.get("open")
    assert "sessionId" not in lease  # the dead process's lease is freed
    assert await store.total_seconds("u1", "c1") == pytest.approx(70)


@pytest.mark.gen_test
async def test_each_orphan_is_closed_by_exactly_one_of_two_survivors(mongo_url, mongo_db):
    """The survivor that claims a dead process closes its sessions; the other one
    does not touch them while the claim holds, and finds nothing left after."""
    dead = "dead-host:1:abc"
    orphans = [replace(record(f"u{i}", ended=False, seconds=5.0), rev=3) for i in range(10)]
    mongo_db[SESSIONS].insert_many([document_from_record(r, dead) for r in orphans])
    # Claimed a moment ago by a survivor that is still at work on it.
    mongo_db[PROCESSES].insert_one(
        {"_id": dead, "expiresAt": to_date(T0), "reaper": "other", "reapUntil": to_date(T0 + 160)}
    )
    counters = [Commands(), Commands()]
    survivors = [MongoStore(mongo_url, event_listeners=[c]) for c in counters]
    for survivor in survivors:
        await survivor.open()
    try:
        for c in counters:
            c.take()
        assert await survivors[0].recover(T0 + 100) == []
        assert [target for _, target, _ in counters[0].take() if target == SESSIONS] == [SESSIONS]  # the find
        # The claim lapses (that survivor died): the next one takes it over, once.
        assert len(await survivors[1].recover(T0 + 200)) == 10
        assert await survivors[0].recover(T0 + 201) == []
    finally:
        for survivor in survivors:
            await survivor.close()
    closes = [
        statement
        for c in counters
        for name, target, command in c.seen
        if (name, target) == ("update", SESSIONS)
        for statement in command["updates"]
        if statement["u"]["$set"].get("endReason") == "server_lost"
    ]
    assert len(closes) == 10  # one statement per orphan, by the survivor that claimed the process
    assert all(statement["q"]["userId"].startswith("u") for statement in closes)  # on its shard key
    assert mongo_db[SESSIONS].count_documents({"endReason": "server_lost"}) == 10
    assert mongo_db[PROCESSES].count_documents({}) == 0


@pytest.mark.gen_test(timeout=30)
async def test_an_idle_process_reads_no_notices_and_refreshes_once_per_quarter_timeout(watched):
    store, commands = watched
    writer = SessionWriter(store)
    coordinator = MongoCoordinator(store, writer, heartbeat_interval=0.2, process_timeout=2.0)
    await coordinator.start(1000.0)
    commands.take()
    polls = 0
    loop = asyncio.get_running_loop()
    began = loop.time()
    while loop.time() - began < 2.0:  # 20 polls in two seconds, as at a 0.2 s heartbeat
        await coordinator.poll(1000.0 + loop.time() - began)
        polls += 1
        await asyncio.sleep(0.1)
    seen = [(name, target) for name, target, _ in commands.take()]
    assert polls >= 15
    assert ("find", "study_takeovers") not in seen
    # A refresh and a look every 0.5 s (a quarter of the timeout): at most 5 of each in 2 s.
    assert len(seen) <= 10, seen
    assert set(seen) <= {("update", PROCESSES), ("find", PROCESSES)}


@pytest.mark.gen_test(timeout=60)
async def test_a_database_of_the_previous_schema_is_upgraded_and_every_total_kept(mongo_url, mongo_db):
    """Written as version 1 wrote it: sessions (one left open by a crash) and
    leases without totals, no schema version. The new server builds each
    learner's total once, and the learners are told exactly those totals."""
    expected = {"ann": 3 * 60.0 + 12.5, "bob": 45.25, "cy": 2 * 60.0}
    mongo_db[SESSIONS].insert_many(past_sessions("ann", 3) + past_sessions("bob", 1, 45.25))
    mongo_db[SESSIONS].insert_many(past_sessions("cy", 2))
    mongo_db[SESSIONS].insert_one(document_from_record(record("ann", seconds=12.5, ended=False), "gone"))
    mongo_db[LEASES].insert_one(
        {"_id": "ann/c1", "userId": "ann", "courseId": "c1", "sessionId": "x", "processId": "gone"}
    )
    result = subprocess.run(
        [sys.executable, "server.py", "migrate", f"--store={mongo_url}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "running totals built: 3" in result.stdout
    assert mongo_db[META].find_one({"_id": "schema"})["version"] == 2
    again = subprocess.run(
        [sys.executable, "server.py", "migrate", f"--store={mongo_url}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "running totals built: 0" in again.stdout
    service = await serve(fast_settings(store=mongo_url))
    try:
        for user, seconds in expected.items():
            assert mongo_db[LEASES].find_one({"_id": f"{user}/c1"})["seconds"] == pytest.approx(seconds)
            client = await Client.connect(service.url, user, "c1")
            assert (await client.connected())["studyTime"] == int(seconds)
            await client.close()
        # The crash's open session is closed as server_lost, its credit counted once.
        await wait_for(
            lambda: mongo_db[SESSIONS].count_documents({"endReason": "server_lost"}) == 1, message="recovery"
        )
    finally:
        await service.shutdown()
    assert mongo_db[LEASES].find_one({"_id": "ann/c1"})["seconds"] == pytest.approx(expected["ann"], abs=1)


@pytest.mark.gen_test
async def test_notices_are_polled_on_a_server_without_change_streams_and_watched_on_a_replica_set(watched):
    """FerretDB (no replica set) gets the polling fallback; on a replica set the
    coordinator watches inserts of its own notices only."""
    from storage.mongodb.coordination import notice_pipeline

    store, _ = watched
    coordinator = MongoCoordinator(store, SessionWriter(store), heartbeat_interval=2, process_timeout=60)
    await coordinator.start(1000.0)
    hello = await store.db.command("hello")
    if "setName" in hello:
        pytest.skip("a replica set: the change stream path runs instead")
    assert coordinator._watch is None and not coordinator._watching
    assert notice_pipeline("p1") == [{"$match": {"operationType": "insert", "fullDocument.processId": "p1"}}]
    await coordinator.stop(saved=True)


@pytest.mark.gen_test
async def test_the_change_stream_asks_for_this_process_s_new_notices_and_falls_back_to_polling(watched):
    """The replica-set path's command, as MongoDB would receive it (command monitoring sees it
    before the server answers); FerretDB refuses change streams, and the coordinator then reads
    its notices at every poll, as it does on any server without them."""
    store, commands = watched
    coordinator = MongoCoordinator(store, SessionWriter(store), heartbeat_interval=2, process_timeout=60)
    await coordinator.start(1000.0)
    commands.take()
    # What _start_watching does once hello names a replica set or mongos.
    await coordinator._watch_notices()
    ((name, target, command),) = [c for c in commands.take() if c[0] == "aggregate"]
    assert (name, target) == ("aggregate", "study_takeovers")
    stages = command["pipeline"]
    assert "$changeStream" in stages[0]
    assert stages[1:] == [
        {"$match": {"operationType": "insert", "fullDocument.processId": coordinator.process_id}}
    ]
    # Refused here: not watching, and the next poll of a process with sessions reads its notices.
    assert not coordinator._watching
    tracker = Tracker(heartbeat_timeout=600, min_heartbeat_interval=0)
    session, _ = tracker.open("u1", "c1", 1000.0, session_id="s1")
    await coordinator.claim(session)
    commands.take()
    await coordinator.poll(1001.0)
    assert ("find", "study_takeovers") in [(n, t) for n, t, _ in commands.take()]
    await coordinator.stop(saved=True)


def ttl_requests(commands: Commands) -> list[dict]:
    """The indexes with ``expireAfterSeconds`` that ``createIndexes`` commands asked for."""
    return [
        index
        for name, target, command in commands.take()
        if (name, target) == ("createIndexes", SESSIONS)
        for index in command["indexes"]
        if "expireAfterSeconds" in index
    ]


@pytest.mark.gen_test
async def test_keep_sessions_days_asks_mongodb_for_a_ttl_index_on_endedat(watched):
    """The MongoDB path's command, as MongoDB would receive it (command monitoring sees it
    before the server answers): a TTL index on endedAt alone, the horizon in seconds."""
    store, commands = watched
    expires = await store.retain(30 * 86400)
    assert ttl_requests(commands) == [
        {"key": {"endedAt": 1}, "name": "ended_ttl", "expireAfterSeconds": 30 * 86400}
    ]
    listed = [i async for i in await store.db[SESSIONS].list_indexes() if i.get("expireAfterSeconds")]
    assert expires == bool(listed)  # True on MongoDB; FerretDB 1.24 refuses it
    if expires:
        assert await store.retain(30 * 86400)  # already there: nothing sent
        assert ttl_requests(commands) == []


@pytest.mark.gen_test
async def test_without_ttl_indexes_the_hourly_delete_still_expires_old_sessions(watched, mongo_db):
    """FerretDB refuses the TTL index: retain() says so, and the writer deletes old ended
    sessions hourly; open sessions and the running totals stay."""
    store, commands = watched
    if await store.retain(30 * 86400):
        pytest.skip("a server with TTL indexes: it expires the records itself")
    mongo_db[LEASES].insert_one({"_id": "u1/c1", "userId": "u1", "courseId": "c1", "seconds": 70.0})
    old = record(seconds=60, started=T0)  # ended years ago
    still_open = record(seconds=10, started=T0, ended=False)
    await store.save([old, still_open])
    writer = SessionWriter(store, keep_seconds=30 * 86400)
    writer.store_expires = False  # what the runtime sets from retain()
    commands.take()
    assert await writer.flush()
    assert [(n, t) for n, t, _ in commands.take()] == [("delete", SESSIONS)]
    assert {d["_id"] for d in mongo_db[SESSIONS].find()} == {still_open.session_id}
    assert mongo_db[LEASES].find_one({"_id": "u1/c1"})["seconds"] == 70.0
    # Where the store expires records itself, the writer sends no delete.
    writer = SessionWriter(store, keep_seconds=30 * 86400)
    writer.store_expires = True
    assert await writer.flush()
    assert commands.take() == []


@pytest.mark.gen_test
async def test_keep_forever_asks_for_no_ttl_index_and_a_changed_horizon_is_set_on_the_index(watched):
    """days = 0 sends no TTL index; a changed horizon goes to the existing index by collMod,
    or drop and create where collMod is refused (FerretDB refuses both collMod and TTL)."""
    from storage.mongodb.schema import retention_step

    store, commands = watched
    assert not await store.retain(0)
    assert ttl_requests(commands) == []
    # An index on endedAt alone (here without a TTL, which FerretDB cannot hold) gets the horizon.
    await store.db[SESSIONS].create_index([("endedAt", 1)], name="ended_ttl")
    commands.take()
    expires = await store.retain(86400)
    sent = commands.take()
    ((_, _, collmod),) = [c for c in sent if c[0] == "collMod"]
    assert collmod["collMod"] == SESSIONS
    assert collmod["index"] == {"name": "ended_ttl", "expireAfterSeconds": 86400}
    if not expires:  # refused: dropped and asked for again, then the hourly fallback
        assert ("dropIndexes", SESSIONS) in [(n, t) for n, t, _ in sent]
        assert [i for c in sent if c[0] == "createIndexes" for i in c[2]["indexes"]] == [
            {"key": {"endedAt": 1}, "name": "ended_ttl", "expireAfterSeconds": 86400}
        ]
    # What listIndexes shows on MongoDB decides the step (keep forever drops a TTL index).
    ttl = {"v": 2, "key": {"endedAt": 1}, "name": "ended_ttl", "expireAfterSeconds": 86400}
    plain = {"v": 2, "key": {"endedAt": 1}, "name": "endedAt_1"}
    assert retention_step(ttl, 0) == "drop"
    assert retention_step(plain, 0) == "none"  # an operator's own index on endedAt stays
    assert retention_step(None, 0) == "none"
    assert retention_step(None, 86400) == "create"
    assert retention_step(ttl, 86400) == "keep"
    assert retention_step(ttl, 2 * 86400) == "change"
    assert retention_step(plain, 86400) == "change"


@pytest.mark.gen_test(timeout=60)
async def test_the_server_applies_keep_sessions_days_at_start(mongo_url, server_commands):
    service = await serve(fast_settings(store=mongo_url, keep_sessions_days=7))
    try:
        requested = [
            index
            for name, _, command in server_commands.take()
            if name == "createIndexes"
            for index in command["indexes"]
            if "expireAfterSeconds" in index
        ]
        assert requested == [{"key": {"endedAt": 1}, "name": "ended_ttl", "expireAfterSeconds": 7 * 86400}]
        # FerretDB refuses it: the writer keeps its hourly delete (on MongoDB it leaves it to the server).
        ttl = [
            i async for i in await service.store.db[SESSIONS].list_indexes() if i.get("expireAfterSeconds")
        ]
        assert service.writer.store_expires == bool(ttl)
    finally:
        await service.shutdown()

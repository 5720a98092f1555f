"""The SQLite store's running totals (``study_totals``): built once for a file written before them."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading

import pytest

from storage.sqlite.schema import COLUMNS
from storage.sqlite.store import STORE_THREAD_NICE, SQLiteStore
from tests.support.records import T0, record

# The schema of the previous version: sessions only, no totals, user_version 0.
OLD_SCHEMA = """
CREATE TABLE study_sessions (
    session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, course_id TEXT NOT NULL,
    started_at REAL NOT NULL, credited_until REAL NOT NULL, seconds REAL NOT NULL,
    heartbeats INTEGER NOT NULL, rev INTEGER NOT NULL, ended_at REAL, end_reason TEXT,
    remote_addr TEXT, user_agent TEXT, last_client_time TEXT
);
"""


@pytest.mark.gen_test
async def test_a_file_of_the_previous_version_gets_its_totals_once_and_keeps_them_exact(tmp_path):
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    rows = [
        record("u1", seconds=60.25, started=T0),
        record("u1", seconds=30, started=T0 + 100),
        record("u2", seconds=5, started=T0, ended=False),
    ]
    old.executemany(
        f"INSERT INTO study_sessions VALUES ({', '.join('?' for _ in COLUMNS)})",
        [tuple(getattr(r, c) for c in COLUMNS) for r in rows],
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.upgraded == 2
        assert await store.total_seconds("u1", "c1") == pytest.approx(90.25)
        assert await store.total_seconds("u2", "c1") == pytest.approx(5)
        await store.save([record("u1", seconds=9.75, started=T0 + 200)])
        assert await store.total_seconds("u1", "c1") == pytest.approx(100)
    finally:
        await store.close()
    again = SQLiteStore(path)
    await again.open()  # already upgraded: nothing rebuilt, nothing counted twice
    try:
        assert again.upgraded == 0
        assert await again.total_seconds("u1", "c1") == pytest.approx(100)
    finally:
        await again.close()


@pytest.mark.gen_test
async def test_keep_sessions_days_deletes_old_records_hourly_and_keeps_the_totals(tmp_path):
    from storage.writer import SessionWriter
    from tracking.tracker import Tracker

    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()
    try:
        await store.save([record("u1", seconds=60, started=T0)])  # ended years ago
        writer = SessionWriter(store, keep_seconds=30 * 86400)
        session, _ = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0).open(
            "u1", "c1", T0 + 1e8, session_id="s"
        )
        writer.changed(session)
        assert await writer.flush()
        count = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM study_sessions").fetchone()[0]
        assert count == 1  # the old record went; the new session stays
        assert await store.total_seconds("u1", "c1") == pytest.approx(60)  # the total did not
        await store.save([record("u1", seconds=1, started=T0 + 10)])
        assert await writer.flush()  # within the hour: nothing deleted
        count = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM study_sessions").fetchone()[0]
        assert count == 2
    finally:
        await store.close()


@pytest.mark.gen_test
async def test_an_opening_reads_the_last_committed_total_at_once_while_a_write_holds_the_database(tmp_path):
    # SQLiteStore.total_seconds_now runs on the IOLoop's thread: a write
    # transaction (a checkpoint on the store's thread, here another
    # connection's) must neither block it nor show it uncommitted credit.
    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()
    writing = sqlite3.connect(store.path, isolation_level=None)
    try:
        await store.save([record("u1", seconds=30, started=T0)])
        writing.execute("BEGIN IMMEDIATE")
        writing.execute("UPDATE study_sessions SET seconds = 45 WHERE user_id = 'u1'")
        assert store.total_seconds_now("u1", "c1") == pytest.approx(30)
        assert store.total_seconds_now("u2", "c1") == 0
        writing.execute("COMMIT")
        assert store.total_seconds_now("u1", "c1") == pytest.approx(45)
    finally:
        writing.close()
        await store.close()
    assert store.total_seconds_now("u1", "c1") is None  # closed: the caller's slower path says why


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
@pytest.mark.gen_test
async def test_the_store_s_thread_gives_the_core_to_the_ioloop(tmp_path):
    # A checkpoint's SQLite work must not take turns with heartbeats on a
    # shared core: the store's thread runs at a lower priority, the IOLoop's
    # (this thread) keeps its own.
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if ours >= 19:
        pytest.skip("the tests run at the lowest priority already: nothing lower to give")
    store = SQLiteStore(str(tmp_path / "db"))
    await store.open()
    try:
        store_thread = await store._run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert store_thread == min(19, ours + STORE_THREAD_NICE) > ours
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours
        await store.save([record("u1", seconds=30, started=T0)])  # and it still writes
        assert store.total_seconds_now("u1", "c1") == pytest.approx(30)
    finally:
        await store.close()

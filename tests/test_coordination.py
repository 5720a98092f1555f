"""Coordination across processes: the pure credit cap, and a process the others presumed dead."""

from __future__ import annotations

import pytest
import tornado.netutil

import server
from storage.backends import backend_for
from storage.mongodb.schema import PROCESSES
from tests.conftest import mongodb_url
from tests.support.clock import FakeClock
from tests.support.helpers import Client, fast_settings, wait_for
from tests.support.stored import study_records
from tracking.session import EndReason
from tracking.tracker import Tracker


def test_a_takeover_takes_back_the_credit_earned_after_it():
    clock = FakeClock(1000.0)
    tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0)
    session, _ = tracker.open("u1", "c1", clock(), session_id="a")
    tracker.heartbeat(session, clock.advance(30))
    tracker.heartbeat(session, clock.advance(30))  # accepted before this process heard of the takeover
    rev = session.rev
    assert tracker.end(session, clock.advance(5), EndReason.REPLACED, credit_until=1040.0)
    assert session.seconds == pytest.approx(40)
    assert session.credited_until == 1040.0
    assert session.rev > rev


def test_a_session_that_ended_after_the_takeover_instant_is_capped_again():
    tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0)
    session, _ = tracker.open("u1", "c1", 1000.0, session_id="a")
    tracker.heartbeat(session, 1020.0)
    tracker.end(session, 1025.0, EndReason.CLIENT_CLOSED)
    assert session.seconds == pytest.approx(25)
    rev = session.rev
    assert tracker.cap(session, 1010.0)
    assert (session.seconds, session.credited_until, session.rev) == (pytest.approx(10), 1010.0, rev + 1)
    assert not tracker.cap(session, 1012.0)  # nothing earned after it any more
    assert tracker.cap(session, 900.0)  # never below nothing
    assert session.seconds == 0


@pytest.mark.gen_test(timeout=30)
async def test_a_process_presumed_dead_closes_its_connections_and_keeps_the_record(
    mongodb_server, mongodb_database
):
    """If the others closed this process's sessions (it was cut off for
    --process-timeout), it notices at its next poll and closes the clients with
    1013, and its later writes cannot reopen the records."""
    url = mongodb_url(mongodb_server, mongodb_database)
    settings = fast_settings(store=url)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    service = await server.start(settings, sockets)
    other = backend_for(url).store()
    await other.open()
    try:
        client = await Client.connect(f"ws://127.0.0.1:{sockets[0].getsockname()[1]}", "u1", "c1")
        await client.connected()
        await client.heartbeat()
        await wait_for(lambda: service.writer.unsaved == 0, message="the checkpoint")
        # What another process does when this one's liveness record expires.
        await other.db[PROCESSES].delete_many({})
        (lost,) = await other.recover(service.clock())
        code, _, messages = await client.closed(timeout=5)
        assert code == 1013
        assert messages[-1]["code"] == "store_unavailable"
        await wait_for(lambda: service.writer.unsaved == 0, message="the final write")
        (stored,) = await study_records(other, user_id="u1")
        assert stored.end_reason == "server_lost"
        assert stored.seconds == lost.seconds
        assert await other.db[PROCESSES].count_documents({"_id": service.store.process_id}) == 1
    finally:
        await other.close()
        await service.shutdown()

"""The WebSocket protocol of docs/protocol.md, through a real server and a real client.

Accounting assertions use a fake server clock (``clock=FakeClock()``), so
credited seconds are exact and no test sleeps to make time pass; timeouts
and flushes use short real intervals with bounded waits.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from tests.support.clock import FakeClock
from tests.support.helpers import Client, heartbeat, scrape, wait_for
from tests.support.stored import study_records

#: The documented intervals, for tests that move a fake server clock by hand.
DOCUMENTED = dict(heartbeat_interval=30.0, heartbeat_timeout=60.0, min_heartbeat_interval=10.0)


async def fake_clock_service(start_service, **overrides):
    clock = FakeClock()
    service = await start_service(clock=clock, **{**DOCUMENTED, **overrides})
    return service, clock


async def flushed(service) -> None:
    await wait_for(lambda: service.writer.unsaved == 0, message="the writer to flush")


async def stored(service, user="u1", course="c1"):
    await flushed(service)
    return await study_records(service.store, user_id=user, course_id=course)


@pytest.mark.gen_test
async def test_connect_announces_the_session_and_the_configured_intervals(start_service):
    service = await start_service()
    client = await Client.connect(service.url, "u1", "c1")
    message = await client.connected()
    assert message == {
        "type": "connected",
        "status": "success",
        "sessionId": message["sessionId"],
        "studyTime": 0,
        "heartbeatInterval": 0.4,
        "heartbeatTimeout": 0.8,
    }
    assert len(message["sessionId"]) == 32
    await client.close()


@pytest.mark.gen_test
async def test_default_intervals_are_announced_as_whole_seconds(start_service):
    service = await start_service(
        heartbeat_interval=30.0, heartbeat_timeout=60.0, min_heartbeat_interval=10.0
    )
    client = await Client.connect(service.url)
    message = await client.connected()
    assert (message["heartbeatInterval"], message["heartbeatTimeout"]) == (30, 60)
    assert isinstance(message["heartbeatInterval"], int)
    await client.close()


@pytest.mark.gen_test
async def test_heartbeats_answer_the_cumulative_server_time(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(30)
    assert await client.heartbeat() == {"type": "heartbeat_response", "status": "success", "studyTime": 30}
    clock.advance(29.5)
    assert (await client.heartbeat())["studyTime"] == 59
    clock.advance(30.5)
    assert (await client.heartbeat())["studyTime"] == 90
    await client.close()
    (record,) = await stored(service)
    assert record.seconds == 90
    assert record.heartbeats == 3
    assert record.end_reason == "client_closed"


@pytest.mark.gen_test
async def test_a_session_s_socket_stays_registered_for_reading_between_heartbeats(start_service, monkeypatch):
    # Tornado takes a socket off the IOLoop's readers after each frame and puts
    # it back for the next (two poller changes per message); a session's
    # socket stays (handlers/tornado_internals.py, keep_reading), and still
    # answers every heartbeat.
    loop = IOLoop.current()
    unregistered = []
    real_update_handler = loop.update_handler

    def update_handler(fd, events):
        # The server's side of a connection only (the test's client shares the IOLoop).
        if not events & IOLoop.READ and fd.getsockname()[1] == port:
            unregistered.append(fd)
        real_update_handler(fd, events)

    monkeypatch.setattr(loop, "update_handler", update_handler)
    service = await start_service(min_heartbeat_interval=0.0)
    port = int(service.url.rsplit(":", 1)[1])
    client = await Client.connect(service.url)
    await client.connected()
    unregistered.clear()
    for _ in range(5):
        assert (await client.heartbeat())["status"] == "success"
    assert unregistered == []
    await client.close()


@pytest.mark.gen_test
async def test_a_client_gone_while_its_session_opens_ends_it_as_a_lost_connection(start_service):
    # The session exists from the moment it is opened, while its total is still
    # being read from the store: a client that drops then must end it as soon
    # as the opening is over, not leave it to time out holding a place under
    # the caps (Tornado reads nothing, not even the close, until open() returns).
    service = await start_service(heartbeat_interval=10, heartbeat_timeout=30)
    release = asyncio.Event()
    claim = service.coordinator.claim

    async def slow_claim(session):
        await release.wait()
        return await claim(session)

    service.coordinator.claim = slow_claim
    client = await Client.connect(service.url)  # upgraded; the opening waits for the claim
    await wait_for(lambda: len(service.tracker) == 1, message="the session to be opening")
    client.drop()
    release.set()
    await wait_for(lambda: len(service.tracker) == 0, message="the dropped session to end")
    (record,) = await stored(service)
    assert record.end_reason == "connection_lost"


@pytest.mark.gen_test
async def test_a_close_frame_without_a_status_code_is_a_clean_end_that_earns_the_tail(start_service):
    # ws.close() with no arguments, as in the API document's own example and in
    # browsers, sends a close frame with no body: still the client closing.
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(30)
    await client.heartbeat()
    clock.advance(4)
    await client.close(code=None)
    (record,) = await stored(service)
    assert (record.end_reason, record.seconds) == ("client_closed", 34)


@pytest.mark.parametrize(
    ("reason", "recorded"),
    [
        ("idle", "idle"),  # the browser client's idle pause
        ("page_hidden", "page_hidden"),  # its pause while the page is hidden
        ("stopped", "client_closed"),  # the client's other clean closes are plain closes
        ("page_unloaded", "client_closed"),
        (None, "client_closed"),
        ("IDLE", "client_closed"),  # exactly the documented words, nothing like them
        ("idle ", "client_closed"),
        ('<img src=x onerror="alert(1)">', "client_closed"),  # a client's own text is never stored
        ("mail me: ann@example.edu", "client_closed"),
        ("\u7a7a\u95f2", "client_closed"),
    ],
)
@pytest.mark.gen_test
async def test_a_pause_the_client_names_in_its_close_is_recorded_and_earns_the_tail_as_any_clean_close(
    start_service, reason, recorded
):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(30)
    await client.heartbeat()
    clock.advance(4)
    await client.close(reason=reason)
    (record,) = await stored(service)
    assert (record.end_reason, record.seconds, record.credited_until - record.started_at) == (
        recorded,
        34,
        34,
    )
    metrics = await scrape(service)
    assert metrics[f'study_time_sessions_closed_total{{reason="{recorded}"}}'] == 1


@pytest.mark.gen_test
async def test_client_timestamps_are_validated_but_never_credited(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    # Every ISO 8601 form a client may send is accepted...
    for timestamp in (
        "2023-12-25T10:00:00",
        "2023-12-25T10:00:00Z",
        "2023-12-25T10:00:00.123Z",
        "2023-12-25T10:00:00.123456789Z",
        "2023-12-25T18:00:00+08:00",
        "2023-12-25T10:00:00.5-05:00",
    ):
        clock.advance(10)
        reply = await client.heartbeat(timestamp)
        assert reply["status"] == "success", (timestamp, reply)
    # ...and a client clock years away changes nothing: only the server's counts.
    assert reply["studyTime"] == 60
    await client.close()
    (record,) = await stored(service)
    assert record.last_client_time == "2023-12-25T10:00:00.500000-05:00"


@pytest.mark.gen_test
async def test_a_bad_or_missing_timestamp_is_refused_without_credit(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    for bad in (
        {"type": "heartbeat"},
        heartbeat("yesterday"),
        heartbeat("2023-13-45T99:00:00"),
        {"type": "heartbeat", "timestamp": 1703498400},
        {"type": "heartbeat", "timestamp": None},
        heartbeat("9" * 70),
    ):
        clock.advance(0.2)
        client.send(bad)
        reply = await client.expect("heartbeat_response")
        assert reply["status"] == "error"
        assert reply["code"] == "invalid_timestamp"
        assert reply["message"]
        assert reply["studyTime"] == 0
    clock.advance(0.2)
    assert (await client.heartbeat())["studyTime"] == 1  # credit from the opening: 1.4s
    await client.close()


def long_iso_timestamp(length: int) -> str:
    """A valid ISO 8601 timestamp of exactly ``length`` characters (fractional digits pad it)."""
    head, tail = "2023-12-25T10:00:00.", "+08:00"
    return head + "1" * (length - len(head) - len(tail)) + tail


@pytest.mark.gen_test
async def test_a_valid_timestamp_is_accepted_up_to_64_characters_and_refused_beyond(start_service):
    # Python parses a valid ISO timestamp of any length (any number of
    # fractional digits), so only the 64-character cap refuses the longer one.
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(10)
    reply = await client.heartbeat(long_iso_timestamp(64))
    assert (reply["status"], reply["studyTime"]) == ("success", 10)
    clock.advance(10)
    reply = await client.heartbeat(long_iso_timestamp(65))
    assert (reply["status"], reply["code"], reply["studyTime"]) == ("error", "invalid_timestamp", 10)
    await client.close()
    (record,) = await stored(service)
    assert record.heartbeats == 1
    assert record.last_client_time == "2023-12-25T10:00:00.111111+08:00"


@pytest.mark.gen_test
async def test_too_frequent_heartbeats_are_refused_without_credit(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(2)
    assert (await client.heartbeat())["status"] == "success"  # the first is never too frequent
    clock.advance(9)
    reply = await client.heartbeat()
    assert reply["status"] == "error"
    assert reply["code"] == "too_frequent"
    assert "10s" in reply["message"]
    assert reply["studyTime"] == 2
    clock.advance(1)
    assert (await client.heartbeat()) == {"type": "heartbeat_response", "status": "success", "studyTime": 12}
    await client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('{"type": "heartbeat"', "invalid_json"),
        ("[1, 2, 3]", "invalid_json"),
        ('"heartbeat"', "invalid_json"),
        ('{"type": "subscribe"}', "unknown_type"),
        ('{"timestamp": "2023-12-25T10:00:00"}', "unknown_type"),
        (b"\x00\x01binary", "binary_not_supported"),
    ],
)
async def test_malformed_messages_get_an_error_and_the_connection_stays_open(start_service, frame, code):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    client.send(frame)
    reply = await client.expect("error")
    assert reply["status"] == "error"
    assert reply["code"] == code
    assert reply["message"]
    clock.advance(1)
    assert (await client.heartbeat())["studyTime"] == 1
    await client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "query",
    [
        "",
        "userId=u1",
        "courseId=c1",
        "userId=&courseId=c1",
        "userId=u1&courseId=",
        "userId=" + "a" * 129 + "&courseId=c1",
        "userId=u%201&courseId=c1",
        "userId=u1&courseId=c1%3Bdrop",
        "userId=%E5%AD%A6%E7%94%9F&courseId=c1",
        "userId=u1&courseId=%24where",
    ],
)
async def test_missing_or_invalid_ids_are_refused_with_4400(start_service, query):
    service = await start_service()
    client = await Client.connect(service.url, query=query)
    code, reason, messages = await client.closed()
    assert code == 4400
    assert reason
    assert messages[0]["type"] == "error"
    assert messages[0]["code"] == "invalid_params"
    assert "userId" in messages[0]["message"] or "courseId" in messages[0]["message"]
    assert len(service.tracker) == 0
    assert await study_records(service.store) == []


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("courseId=c1", "userId is required"),
        ("userId=&courseId=c1", "userId is required"),
        ("userId=u1&courseId=", "courseId is required"),
        ("userId=u%201&courseId=c1", "userId must be 1-128 characters of letters, digits and _ . : @ -"),
        ("userId=u1&courseId=c1%3B", "courseId must be 1-128 characters of letters, digits and _ . : @ -"),
    ],
)
async def test_the_4400_error_says_which_id_is_missing_or_invalid(start_service, query, message):
    service = await start_service()
    client = await Client.connect(service.url, query=query)
    code, _, messages = await client.closed()
    assert code == 4400
    assert messages[0]["message"] == message


@pytest.mark.gen_test
async def test_every_allowed_id_character_is_accepted(start_service):
    service = await start_service()
    user = "AZaz09_.:@-" + "x" * 117
    client = await Client.connect(service.url, user, "course-1.2:3@x_y")
    await client.connected()
    await client.close()


@pytest.mark.gen_test
async def test_the_study_record_keeps_the_client_s_user_agent_cut_at_256_characters(start_service):
    service = await start_service()
    browser = "Mozilla/5.0 (X11; Linux x86_64) StudyTimeTest/1.0"
    long_agent = "Agent/" + "x" * 300
    for user, agent in (("u1", browser), ("u2", long_agent)):
        client = await Client.connect(service.url, user, "c1", headers={"User-Agent": agent})
        await client.connected()
        await client.close()
    (first,) = await stored(service, user="u1")
    (second,) = await stored(service, user="u2")
    assert first.user_agent == browser
    assert second.user_agent == long_agent[:256]
    assert first.remote_addr == second.remote_addr == "127.0.0.1"


@pytest.mark.gen_test
async def test_reconnecting_continues_the_total(start_service):
    service, clock = await fake_clock_service(start_service)
    first = await Client.connect(service.url)
    await first.connected()
    clock.advance(30)
    await first.heartbeat()
    clock.advance(5.5)
    await first.close()  # a clean close earns the 5.5s since the heartbeat
    second = await Client.connect(service.url)
    assert (await second.connected())["studyTime"] == 35
    clock.advance(30)
    assert (await second.heartbeat())["studyTime"] == 65  # 35.5 + 30
    await second.close()
    other_course = await Client.connect(service.url, "u1", "c2")
    assert (await other_course.connected())["studyTime"] == 0
    await other_course.close()
    records = await stored(service)
    assert [r.seconds for r in records] == [35.5, 30]


@pytest.mark.gen_test
async def test_a_lost_connection_earns_nothing_after_the_last_heartbeat(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(30)
    await client.heartbeat()
    clock.advance(20)
    client.drop()
    await wait_for(lambda: len(service.tracker) == 0, message="the server to notice the drop")
    (record,) = await stored(service)
    assert record.end_reason == "connection_lost"
    assert record.seconds == 30


@pytest.mark.gen_test
async def test_a_new_connection_replaces_the_old_with_4409_without_double_counting(start_service):
    service, clock = await fake_clock_service(start_service)
    old = await Client.connect(service.url)
    await old.connected()
    clock.advance(30)
    await old.heartbeat()
    clock.advance(10)
    new = await Client.connect(service.url)
    connected = await new.connected()
    assert connected["studyTime"] == 40  # the old session's tail is counted once, here
    code, reason, messages = await old.closed()
    assert code == 4409
    assert reason
    assert messages == [
        {"type": "error", "status": "error", "code": "replaced", "message": messages[0]["message"]}
    ]
    clock.advance(30)
    assert (await new.heartbeat())["studyTime"] == 70
    await new.close()
    old_record, new_record = await stored(service)
    assert (old_record.end_reason, old_record.seconds) == ("replaced", 40)
    assert (new_record.end_reason, new_record.seconds) == ("client_closed", 30)
    assert old_record.credited_until <= new_record.started_at  # rule 3


@pytest.mark.gen_test
async def test_silence_times_out_with_4408_and_keeps_the_credit(start_service):
    service = await start_service()  # real clock: heartbeat timeout 0.8s, sweep every 0.05s
    client = await Client.connect(service.url)
    await client.connected()
    reply = await client.heartbeat()
    assert reply["status"] == "success"
    code, reason, messages = await client.closed(timeout=5)
    assert code == 4408
    assert reason
    assert messages[-1]["code"] == "heartbeat_timeout"
    (record,) = await stored(service)
    assert record.end_reason == "timeout"
    assert record.heartbeats == 1
    # Nothing after the last heartbeat: credit is the time from opening to it.
    assert record.credited_until - record.started_at == pytest.approx(record.seconds, abs=1e-6)
    assert record.ended_at - record.credited_until >= 0.8


@pytest.mark.gen_test
async def test_heartbeats_keep_the_session_alive_past_the_timeout(start_service):
    service = await start_service()
    client = await Client.connect(service.url)
    await client.connected()
    # 8 heartbeats 0.3s apart span 2.4s: three timeouts, and the session survives.
    seen = []
    for _ in range(8):
        await asyncio.sleep(0.3)
        seen.append((await client.heartbeat())["studyTime"])
    assert seen == sorted(seen)
    assert seen[-1] >= 2
    await client.close()
    (record,) = await stored(service)
    assert record.end_reason == "client_closed"
    assert record.heartbeats == 8


@pytest.mark.gen_test
async def test_oversized_frames_are_refused_with_1009(start_service):
    service = await start_service(max_message_size=4096)
    client = await Client.connect(service.url)
    await client.connected()
    client.send(json.dumps({"type": "heartbeat", "timestamp": "x" * 5000}))
    code, _, _ = await client.closed()
    assert code in (1009, None)  # Tornado sends 1009 then drops the connection
    await wait_for(lambda: len(service.tracker) == 0)
    # The server still serves others.
    again = await Client.connect(service.url)
    await again.connected()
    await again.close()


@pytest.mark.gen_test
async def test_flooding_is_closed_with_4429_and_keeps_earned_credit(start_service):
    service, clock = await fake_clock_service(start_service, flood_rate=1.0, flood_burst=20.0)
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(0.5)
    await client.heartbeat()
    for _ in range(40):
        client.send("x")
    code, reason, messages = await client.closed()
    assert code == 4429
    assert reason
    assert messages[-1]["code"] == "too_many_messages"
    (record,) = await stored(service)
    assert (record.end_reason, record.seconds) == ("rate_limited", 0.5)


@pytest.mark.gen_test
async def test_heartbeats_at_the_documented_rate_never_trip_the_flood_limit(start_service):
    service, clock = await fake_clock_service(start_service, flood_rate=1.0, flood_burst=20.0)
    client = await Client.connect(service.url)
    await client.connected()
    for _ in range(50):
        clock.advance(10)
        assert (await client.heartbeat())["status"] == "success"
    await client.close()


@pytest.mark.gen_test
async def test_store_unavailable_at_opening_closes_with_1013(start_service):
    service = await start_service()
    await service.store.close()  # the store is gone
    client = await Client.connect(service.url)
    code, reason, messages = await client.closed()
    assert code == 1013
    assert reason
    assert messages[-1]["code"] == "store_unavailable"
    assert len(service.tracker) == 0
    await service.store.open()


@pytest.mark.gen_test
async def test_credit_survives_a_store_outage_and_is_written_when_it_returns(start_service):
    service, clock = await fake_clock_service(start_service)
    client = await Client.connect(service.url)
    await client.connected()
    await flushed(service)
    await service.store.close()  # outage
    for _ in range(3):
        clock.advance(20)
        assert (await client.heartbeat())["status"] == "success"
    assert not await service.writer.flush()
    await service.store.open()  # back
    await flushed(service)
    (record,) = await study_records(service.store, user_id="u1")
    assert record.seconds == 60
    await client.close()


@pytest.mark.gen_test
async def test_health_and_the_static_page_are_served(start_service):
    service = await start_service()
    http = AsyncHTTPClient()
    health = await http.fetch(service.http_url + "/healthz")
    assert health.code == 200
    assert json.loads(health.body) == {"status": "ok"}
    page = await http.fetch(service.http_url + "/")
    assert page.code == 200
    assert b"study-time" in page.body


@pytest.mark.gen_test
async def test_one_log_line_per_open_and_close_and_no_query_in_the_access_log(start_service, caplog):
    caplog.set_level(logging.INFO)
    service = await start_service()
    client = await Client.connect(service.url, query="userId=u1&courseId=c1&token=SECRET-TOKEN-123")
    session_id = (await client.connected())["sessionId"]
    await client.close()
    await wait_for(lambda: len(service.tracker) == 0)
    lines = [r.getMessage() for r in caplog.records]
    opened = [line for line in lines if line.startswith("session opened")]
    closed = [line for line in lines if line.startswith("session closed")]
    assert len(opened) == 1 and len(closed) == 1
    for line in (opened[0], closed[0]):
        assert "user=u1" in line and "course=c1" in line and session_id in line and "127.0.0.1" in line
    assert "reason=client_closed" in closed[0] and "credited=" in closed[0]
    assert any("/api/study-time" in line for line in lines)
    assert not any("SECRET-TOKEN-123" in line for line in lines)


@pytest.mark.gen_test
async def test_a_session_ended_by_the_service_is_ended_once_not_again_when_its_socket_closes(start_service):
    # A heartbeat found late ends the session (4408); the socket's close that
    # follows has no session left to end: the service does not double back.
    service, clock = await fake_clock_service(start_service)
    ends = []
    end = service.sessions.end

    def spy(session, reason, now=None):
        ends.append(reason)
        end(session, reason, now)

    service.sessions.end = spy
    client = await Client.connect(service.url)
    await client.connected()
    clock.advance(61)
    client.send(heartbeat())
    code, _, messages = await client.closed(timeout=5)
    assert code == 4408 and messages[-1]["code"] == "heartbeat_timeout"
    await wait_for(lambda: len(service.connections) == 0, message="the socket to close")
    assert ends == []
    (record,) = await stored(service)
    assert record.end_reason == "timeout"

"""The WebSocket protocol of docs/protocol.md, through a real server and a real client."""

from __future__ import annotations

import pytest

from tests.helpers import Client, wait_for


@pytest.mark.gen_test
async def test_connect_announces_the_session_and_intervals(start_service):
    service = await start_service()
    client = await Client.connect(service.url, "u1", "c1")
    message = await client.connected()
    assert message["status"] == "success"
    assert message["studyTime"] == 0
    assert message["heartbeatInterval"] == 0.4
    assert message["heartbeatTimeout"] == 0.8
    assert len(message["sessionId"]) >= 16
    await client.close()


@pytest.mark.gen_test
async def test_heartbeats_credit_time_and_reconnecting_continues_the_total(start_service):
    service = await start_service(heartbeat_interval=1.0, heartbeat_timeout=2.0)
    client = await Client.connect(service.url)
    await client.connected()
    service.clock_offset = 0
    reply = await client.heartbeat()
    assert reply == {"type": "heartbeat_response", "status": "success", "studyTime": 0}
    await client.close()
    session = await service.store.sessions(user_id="u1")
    await wait_for(lambda: service.writer.unsaved == 0, message="flush")
    (record,) = await service.store.sessions(user_id="u1")
    assert record.end_reason == "client_closed"
    assert record.heartbeats == 1
    second = await Client.connect(service.url)
    message = await second.connected()
    assert message["studyTime"] == int(record.seconds)
    assert session is not None
    await second.close()

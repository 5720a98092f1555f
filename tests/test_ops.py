"""Operations: /metrics, /healthz, /readyz, JSON logs, proxy headers and HTTP limits, on a real server."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.support.auth_helpers import SECRET, claims, hs256
from tests.support.helpers import Client, ServerProcess, scrape, wait_for
from tests.support.rawws import RawSocket
from tests.support.stored import study_records


async def get(url: str) -> tuple[int, dict]:
    try:
        response = await AsyncHTTPClient().fetch(url)
    except HTTPClientError as exc:
        response = exc.response
    return response.code, json.loads(response.body)


@pytest.mark.gen_test(timeout=30)
async def test_metrics_count_heartbeats_sessions_refusals_and_checkpoints(start_service):
    service = await start_service(min_heartbeat_interval=0.2, heartbeat_interval=0.4)
    before = await scrape(service)
    assert before["study_time_open_connections"] == 0
    assert before['study_time_heartbeats_total{status="accepted"}'] == 0

    client = await Client.connect(service.url, "u1", "c1")
    await client.connected()
    await asyncio.sleep(0.25)
    assert (await client.heartbeat())["status"] == "success"
    assert (await client.heartbeat())["code"] == "too_frequent"
    assert (await client.heartbeat("yesterday"))["code"] == "invalid_timestamp"
    during = await scrape(service)
    assert during["study_time_open_connections"] == 1
    assert during["study_time_live_sessions"] == 1
    assert during['study_time_heartbeats_total{status="accepted"}'] == 1
    assert during['study_time_heartbeats_total{status="too_frequent"}'] == 1
    assert during['study_time_heartbeats_total{status="invalid_timestamp"}'] == 1

    bad = await Client.connect(service.url, "bad!id", "c1")
    code, _, messages = await bad.closed()
    assert code == 4400 and messages[0]["code"] == "invalid_params"
    await client.close()
    await wait_for(lambda: service.writer.unsaved == 0, message="the checkpoint")

    after = await scrape(service)
    assert after['study_time_sessions_closed_total{reason="client_closed"}'] == 1
    assert after['study_time_connections_refused_total{reason="invalid_params"}'] == 1
    # Lifecycle ends are sessions closed, not refusals.
    assert 'study_time_connections_refused_total{reason="heartbeat_timeout"}' not in after
    (record,) = await study_records(service.store, user_id="u1")
    assert after["study_time_credited_seconds_total"] == pytest.approx(record.seconds, abs=1e-5)
    assert after["study_time_checkpoint_seconds_count"] >= 1
    assert after["study_time_checkpoint_sessions_total"] >= 1
    assert after["study_time_checkpoint_failures_total"] == 0
    assert after["study_time_unsaved_sessions"] == 0
    assert after["study_time_open_connections"] == 0


@pytest.mark.gen_test(timeout=30)
async def test_flooding_and_timeouts_are_counted_by_reason(start_service):
    service = await start_service(flood_rate=1.0, flood_burst=3.0)
    flooder = await Client.connect(service.url, "f1", "c1")
    await flooder.connected()
    for _ in range(5):
        flooder.send({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"})
    code, _, _ = await flooder.closed()
    assert code == 4429
    silent = await Client.connect(service.url, "s1", "c1")
    await silent.connected()
    code, _, _ = await silent.closed()
    assert code == 4408
    samples = await scrape(service)
    # A flood ends a session (rate_limited): it is not a refused connection.
    assert 'study_time_connections_refused_total{reason="too_many_messages"}' not in samples
    assert samples['study_time_sessions_closed_total{reason="rate_limited"}'] == 1
    assert samples['study_time_sessions_closed_total{reason="timeout"}'] == 1


@pytest.mark.gen_test(timeout=30)
async def test_each_service_has_its_own_registry(start_service, tmp_path):
    first = await start_service()
    second = await start_service(store=f"sqlite:///{tmp_path}/second.db")
    client = await Client.connect(first.url)
    await client.connected()
    assert (await scrape(first))["study_time_open_connections"] == 1
    assert (await scrape(second))["study_time_open_connections"] == 0
    await client.close()


@pytest.mark.gen_test(timeout=30)
async def test_readyz_says_why_it_is_not_ready(start_service):
    service = await start_service()
    assert await get(f"{service.http_url}/healthz") == (200, {"status": "ok"})
    assert await get(f"{service.http_url}/readyz") == (200, {"status": "ready"})

    await service.store.close()  # the store stops answering
    code, body = await get(f"{service.http_url}/readyz")
    assert code == 503
    assert body["reason"] == "store_unavailable"
    assert (await get(f"{service.http_url}/healthz"))[0] == 200  # the process is still up
    await service.store.open()
    assert (await get(f"{service.http_url}/readyz"))[0] == 200

    # A shutting-down server is not ready (checked before the listener stops).
    service.sessions.shutting_down = True
    code, body = await get(f"{service.http_url}/readyz")
    service.sessions.shutting_down = False
    assert code == 503 and body["reason"] == "shutting_down"


@pytest.mark.gen_test(timeout=30)
async def test_remote_address_comes_from_the_proxy_only_when_trusted(start_service, tmp_path):
    headers = {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7"}
    untrusting = await start_service()
    trusting = await start_service(trust_proxy_headers=True, store=f"sqlite:///{tmp_path}/trusting.db")
    for service, expected in ((untrusting, "127.0.0.1"), (trusting, "203.0.113.7")):
        client = await Client.connect(service.url, "u1", "c1", headers=headers)
        await client.connected()
        await client.close()
        await wait_for(lambda s=service: s.writer.unsaved == 0, message="the checkpoint")
        (record,) = await study_records(service.store, user_id="u1")
        assert record.remote_addr == expected


@pytest.mark.gen_test(timeout=30)
async def test_incomplete_requests_and_bodies_are_cut_off(start_service):
    service = await start_service(http_idle_timeout=0.5)
    port = int(service.http_url.rsplit(":", 1)[1])
    # A request head that never ends: disconnected after --http-idle-timeout,
    # not Tornado's default hour.
    slow = await RawSocket.open(port)
    slow.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await slow.eof(timeout=10)
    # A connection that sends nothing at all.
    silent = await RawSocket.open(port)
    await silent.eof(timeout=10)
    # A body far larger than any endpoint takes is refused before it is read.
    big = await RawSocket.open(port)
    big.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    await big.eof(timeout=10)
    assert (await get(f"{service.http_url}/healthz"))[0] == 200


def test_json_logs_carry_session_fields_and_no_credentials(tmp_path):
    store = f"sqlite:///{tmp_path}/study_time.db"
    with ServerProcess(f"--store={store}", "--log-format=json") as server:

        async def session() -> None:
            client = await Client.connect(server.url, query="userId=u1&courseId=c1&token=s3cr3t-t0ken")
            await client.connected()
            await client.close()

        asyncio.run(session())
        assert server.terminate() == 0
    lines = [json.loads(line) for line in server.output]  # every line is one JSON object
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= line.keys()
    opened = next(line for line in lines if line.get("event") == "session_opened")
    closed = next(line for line in lines if line.get("event") == "session_closed")
    assert opened["user"] == "u1" and opened["course"] == "c1" and opened["remote"] == "127.0.0.1"
    assert closed["session"] == opened["session"]
    assert closed["reason"] == "client_closed"
    assert isinstance(closed["credited_seconds"], float)
    assert "s3cr3t-t0ken" not in server.log


def test_log_format_is_validated():
    import settings

    with pytest.raises(settings.SettingsError, match="--log-format"):
        settings.load(["--log-format=xml"], {})


@pytest.mark.gen_test(timeout=30)
async def test_auth_refusals_are_counted_by_reason(start_service):
    service = await start_service(auth="jwt", jwt_secret=SECRET)
    nobody = await Client.connect(service.url, "u1", "c1")
    assert (await nobody.closed())[0] == 4401
    other = await Client.connect(
        service.url, "u1", "c1", headers={"Authorization": f"Bearer {hs256(claims('u2'))}"}
    )
    assert (await other.closed())[0] == 4403
    allowed = await Client.connect(
        service.url, "u1", "c1", headers={"Authorization": f"Bearer {hs256(claims('u1'))}"}
    )
    await allowed.connected()
    await allowed.close()
    samples = await scrape(service)
    assert samples['study_time_connections_refused_total{reason="unauthorized"}'] == 1
    assert samples['study_time_connections_refused_total{reason="forbidden"}'] == 1
    assert samples['study_time_sessions_closed_total{reason="client_closed"}'] == 1

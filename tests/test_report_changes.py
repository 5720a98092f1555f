"""``/api/reports/changes``, the dashboards' long poll (handlers/report_events.py): an ended session
answers it within a second, written by this process or (several processes on MongoDB) by another;
nothing new answers ``changed: false`` when the hold ends; it is authorised like the other reports."""

from __future__ import annotations

import asyncio

import pytest
from tornado.simple_httpclient import HTTPStreamClosedError

import handlers.report_events as report_events
from tests.support.helpers import Client
from tests.support.reports import body, get


async def as_of(service, **scope) -> str:
    return body(await get(service, "/api/reports/daily", **scope))["asOf"]


async def end_a_session(service, user: str, course: str) -> None:
    client = await Client.connect(service.url, user, course)
    await client.connected()
    await client.heartbeat()
    await client.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_session_ended_on_this_process_answers_the_long_poll_within_a_second(start_service):
    service = await start_service(flush_interval=30, min_heartbeat_interval=0)
    since = await as_of(service, userId="u1")
    loop = asyncio.get_running_loop()
    poll = asyncio.ensure_future(get(service, "/api/reports/changes", userId="u1", since=since, wait="20"))
    other = asyncio.ensure_future(get(service, "/api/reports/changes", userId="u2", since=since, wait="3"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await end_a_session(service, "u1", "c1")
    ended = loop.time()
    answer = body(await asyncio.wait_for(poll, 5))
    assert loop.time() - ended < 1.5
    assert (answer["changed"], answer["userId"], answer["courseId"]) == (True, "u1", None)
    # The report read now has the session, closed.
    (session,) = body(await get(service, "/api/reports/sessions", userId="u1"))["sessions"]
    assert not session["open"]
    # Another learner's poll is not woken: it ends with its hold, unchanged.
    assert body(await other)["changed"] is False
    # A poll from figures read before the end answers at once; from figures read after, it waits.
    assert body(await get(service, "/api/reports/changes", courseId="c1", since=since, wait="5"))["changed"]
    later = await as_of(service, userId="u1")
    started = loop.time()
    assert not body(await get(service, "/api/reports/changes", userId="u1", since=later, wait="1"))["changed"]
    assert loop.time() - started >= 0.9


@pytest.mark.gen_test(timeout=30)
async def test_the_long_poll_is_authorised_and_validated_like_the_other_reports(start_service):
    from tests.support.auth_helpers import SECRET, bearer, claims, hs256

    service = await start_service(auth="jwt", jwt_secret=SECRET)
    learner = bearer(hs256(claims("u1")))
    since = "2024-01-01T00:00:00+00:00"
    path = "/api/reports/changes"
    assert (await get(service, path, userId="u1", since=since, wait="0")).code == 401
    assert (await get(service, path, headers=learner, userId="u2", since=since, wait="0")).code == 403
    assert (await get(service, path, headers=learner, courseId="c1", since=since, wait="0")).code == 403
    for query, parameter in [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": since, "wait": "99"}, "wait"),
    ]:
        response = await get(service, path, headers=learner, userId="u1", **query)
        assert response.code == 400 and body(response)["error"]["parameter"] == parameter, response.body
    answer = body(await get(service, path, headers=learner, userId="u1", since=since, wait="0"))
    assert answer["changed"] is True  # older than anything remembered: read the figures again


@pytest.mark.parametrize("store_kind", ["mongodb"])
@pytest.mark.gen_test(timeout=60)
async def test_a_session_ended_on_another_process_answers_within_the_check_interval(
    start_service, monkeypatch
):
    monkeypatch.setattr(report_events, "CHECK_SECONDS", 0.5)
    a = await start_service(flush_interval=30, min_heartbeat_interval=0)
    b = await start_service(flush_interval=30, min_heartbeat_interval=0)
    since = await as_of(a, courseId="c1")
    poll = asyncio.ensure_future(get(a, "/api/reports/changes", courseId="c1", since=since, wait="20"))
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    await end_a_session(b, "u1", "c1")
    ended = loop.time()
    assert body(await asyncio.wait_for(poll, 10))["changed"] is True
    # Its write (at most 0.5 s) and one check (0.5 s here, CHECK_SECONDS), with room for a slow machine.
    assert loop.time() - ended < 3


@pytest.mark.gen_test(timeout=30)
async def test_a_held_long_poll_does_not_hold_up_a_shutdown(start_service):
    service = await start_service()
    since = await as_of(service, userId="u1")
    poll = asyncio.ensure_future(get(service, "/api/reports/changes", userId="u1", since=since, wait="25"))
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await service.shutdown()
    assert loop.time() - started < 5
    with pytest.raises(HTTPStreamClosedError):  # cut off, not answered
        await asyncio.wait_for(poll, 5)

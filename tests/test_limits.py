"""Caps on what one learner and one client address may hold open, on a real server over loopback.

``--max-sessions-per-user`` bounds a learner's live sessions across courses
(close 4430) and ``--max-connections-per-address`` the connections from one
client address (close 4431), that address being the proxy's client only with
``--trust-proxy-headers``.
"""

from __future__ import annotations

import pytest

from tests.support.helpers import Client, run_server, scrape, wait_for
from tests.support.stored import live_sessions

SESSIONS_REFUSED = 'study_time_connections_refused_total{reason="too_many_sessions"}'
CONNECTIONS_REFUSED = 'study_time_connections_refused_total{reason="too_many_connections"}'


async def refused(client: Client) -> tuple[int | None, str | None, dict]:
    """The close code, the close reason and the ``error`` message of a refused connection."""
    code, reason, messages = await client.closed()
    assert len(messages) == 1 and messages[0]["type"] == "error", messages
    return code, reason, messages[0]


@pytest.mark.gen_test(timeout=30)
async def test_a_learner_s_sessions_across_courses_are_capped_and_a_closed_one_frees_a_slot(start_service):
    service = await start_service(max_sessions_per_user=3)
    open_ = [await Client.connect(service.url, "u1", f"c{n}") for n in range(3)]
    for client in open_:
        await client.connected()

    over = await Client.connect(service.url, "u1", "c3")
    code, reason, error = await refused(over)
    assert code == 4430 and reason == "too many sessions open for this learner"
    assert error["code"] == "too_many_sessions" and "3 sessions" in error["message"]
    assert live_sessions(service.tracker, "u1", "c3") == 0  # refused before any session existed

    # Another learner has slots of their own.
    other = await Client.connect(service.url, "u2", "c3")
    await other.connected()

    # Reconnecting to a course already open replaces it: no extra session, so no refusal.
    again = await Client.connect(service.url, "u1", "c1")
    await again.connected()
    code, _, _ = await open_[1].closed()
    assert code == 4409
    assert live_sessions(service.tracker, "u1") == 3

    # Closing one frees its slot.
    await open_[0].close()
    await wait_for(lambda: live_sessions(service.tracker, "u1") == 2, message="the closed session to end")
    now_fits = await Client.connect(service.url, "u1", "c3")
    await now_fits.connected()

    samples = await scrape(service)
    assert samples[SESSIONS_REFUSED] == 1
    assert samples.get(CONNECTIONS_REFUSED, 0) == 0
    for client in (open_[2], other, again, now_fits):
        await client.close()


@pytest.mark.gen_test(timeout=30)
async def test_connections_from_one_address_are_capped_and_freed_however_they_close(start_service):
    service = await start_service(max_connections_per_address=2)
    count = service.connections.per_address
    # Without --trust-proxy-headers the forwarded addresses are ignored: all are 127.0.0.1.
    first = await Client.connect(service.url, "u1", "c1", headers={"X-Forwarded-For": "203.0.113.1"})
    second = await Client.connect(service.url, "u2", "c1", headers={"X-Forwarded-For": "203.0.113.2"})
    await first.connected()
    await second.connected()

    third = await Client.connect(service.url, "u3", "c1", headers={"X-Forwarded-For": "203.0.113.3"})
    code, reason, error = await refused(third)
    assert code == 4431 and reason == "too many connections from this address"
    assert error["code"] == "too_many_connections"
    assert count.count("127.0.0.1") == 2  # the refused one never held a slot

    # A connection refused before any session exists releases its slot when it closes.
    await first.close()
    await wait_for(lambda: count.count("127.0.0.1") == 1, message="the closed connection to be released")
    bad = await Client.connect(service.url, "bad!id", "c1")
    code, _, _ = await bad.closed()
    assert code == 4400
    await wait_for(lambda: count.count("127.0.0.1") == 1, message="the refused connection to be released")

    # So does a dropped one (no close frame).
    dropped = await Client.connect(service.url, "u4", "c1")
    await dropped.connected()
    dropped.drop()
    await wait_for(lambda: count.count("127.0.0.1") == 1, message="the dropped connection to be released")

    fourth = await Client.connect(service.url, "u5", "c1")
    await fourth.connected()
    samples = await scrape(service)
    assert samples[CONNECTIONS_REFUSED] == 1
    await second.close()
    await fourth.close()
    await wait_for(lambda: len(count) == 0, message="every address to be forgotten")


@pytest.mark.gen_test(timeout=30)
async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_cap(start_service):
    service = await start_service(trust_proxy_headers=True, max_connections_per_address=1)
    one = await Client.connect(service.url, "u1", "c1", headers={"X-Forwarded-For": "203.0.113.1"})
    two = await Client.connect(
        service.url, "u2", "c1", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.2"}
    )
    await one.connected()
    await two.connected()  # same peer (127.0.0.1), another client behind the proxy

    same = await Client.connect(service.url, "u3", "c1", headers={"X-Forwarded-For": "203.0.113.1"})
    code, _, error = await refused(same)
    assert code == 4431 and error["code"] == "too_many_connections"
    assert service.connections.per_address.count("203.0.113.1") == 1
    assert service.connections.per_address.count("203.0.113.2") == 1
    assert (await scrape(service))[CONNECTIONS_REFUSED] == 1
    await one.close()
    await two.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-sessions-per-user=-1"], {}, "invalid --max-sessions-per-user: expected zero or a positive"),
        (["--max-sessions-per-user=lots"], {}, "invalid --max-sessions-per-user: expected a number"),
        (["--max-connections-per-address=-5"], {}, "invalid --max-connections-per-address"),
        (
            [],
            {"STUDY_TIME_MAX_CONNECTIONS_PER_ADDRESS": "many"},
            "invalid STUDY_TIME_MAX_CONNECTIONS_PER_ADDRESS",
        ),
    ],
)
def test_bad_cap_settings_stop_start_up_naming_the_setting(tmp_path, args, env, message):
    result = run_server("--port=0", f"--store=sqlite:///{tmp_path}/db", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr

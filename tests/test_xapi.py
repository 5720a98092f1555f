"""xAPI forwarding, end to end: real server processes, a real LRS, a real validator.

The LRS is Learning Locker's xapi-statements from npm (tests/support/lrs.py,
installed by scripts/ensure-lrs.sh), its statements in memory; the
statements are checked with Learning Locker's xapi-validation. An outage is
the LRS stopped with SIGSTOP (its port open, nothing answering: requests time
out), so what it had already stored survives it; the server is restarted in
the middle of it. Both stores (SQLite, and MongoDB through FerretDB).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.helpers import ROOT, Client, ServerProcess, parse_metrics, run_server, wait_for
from tests.support.lrs import LRS, node, validate
from tests.support.stored import study_records
from tracking.session import SessionRecord
from xapi.statements import StatementConfig, iso_duration, statement, statement_id

HOME = "https://lms.example.edu"
EXT = f"{HOME}/xapi/extensions/"
FAST_ARGS = (
    "--heartbeat-interval=0.4",
    "--heartbeat-timeout=2",
    "--min-heartbeat-interval=0.05",
    "--sweep-interval=0.05",
    "--flush-interval=0.2",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lrs():
    node()  # skips (or fails under CI) without Node or the packages
    made = LRS(free_port()).start()
    yield made
    made.stop()


def xapi_args(lrs: LRS, key_file) -> tuple[str, ...]:
    return (
        f"--xapi-endpoint={lrs.endpoint}",
        f"--xapi-home-page={HOME}",
        f"--xapi-auth-file={key_file}",
        "--xapi-timeout=1",
        "--xapi-max-retry-delay=1",
    )


# The statement itself: pure.

RECORD = SessionRecord(
    session_id="0f" * 16,
    user_id="learner@example.edu",
    course_id="course:math-101",
    started_at=1764745200.0,  # 2025-12-03T07:00:00Z
    credited_until=1764747012.25,
    seconds=1812.25,
    heartbeats=61,
    rev=63,
    ended_at=1764747012.25,
    end_reason="client_closed",
)
CONFIG = StatementConfig(home_page=HOME, activity=f"{HOME}/courses/{{courseId}}")


def test_a_statement_says_who_did_what_for_how_long_and_when_and_passes_the_validator():
    made = statement(RECORD, CONFIG)
    assert made == {
        "id": statement_id(RECORD.session_id),
        "actor": {"objectType": "Agent", "account": {"homePage": HOME, "name": "learner@example.edu"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended", "display": {"en-US": "attended"}},
        "object": {
            "objectType": "Activity",
            "id": f"{HOME}/courses/course%3Amath-101",
            "definition": {"type": "http://adlnet.gov/expapi/activities/course"},
        },
        "result": {"duration": "PT30M12.25S"},
        "context": {
            "platform": "study-time",
            "extensions": {
                f"{EXT}session-id": RECORD.session_id,
                f"{EXT}end-reason": "client_closed",
                f"{EXT}course-id": "course:math-101",
                f"{EXT}ended-at": "2025-12-03T07:30:12.250Z",
            },
        },
        "timestamp": "2025-12-03T07:00:00.000Z",
    }
    # The id is a UUID v5 of the session id: the same every time, another for another session.
    # Pinned: a changed namespace would make every session a new statement to an LRS that has it.
    assert made["id"] == "3a2b1ccc-f518-5156-98fc-d17090a3cd7c"
    assert statement_id("1" * 32) != made["id"]
    node()
    assert validate([made]) == [[]]
    broken = {**made, "result": {"duration": "30 minutes"}}
    assert validate([broken]) != [[]], "the validator finds nothing wrong with anything"


@pytest.mark.parametrize(
    ("seconds", "duration"),
    [
        (0, "PT0S"),
        (0.004, "PT0S"),
        (59.999, "PT59.99S"),
        (60, "PT1M"),
        (3723.5, "PT1H2M3.5S"),
        (90000, "PT25H"),
    ],
)
def test_durations_are_iso_8601_to_the_hundredth(seconds, duration):
    assert iso_duration(seconds) == duration


def test_an_open_session_has_no_statement():
    with pytest.raises(ValueError, match="still open"):
        statement(SessionRecord("a" * 32, "u", "c", 0.0, 1.0, 1.0, 1, 1), CONFIG)


# End to end.


async def study(
    server: ServerProcess, user: str, course: str, heartbeats: int = 2, reason: str | None = None
) -> None:
    client = await Client.connect(server.url, user, course)
    await client.connected()
    for _ in range(heartbeats):
        await asyncio.sleep(0.1)
        await client.heartbeat()
    await client.close(reason=reason)


def metrics(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.gen_test(timeout=180)
async def test_every_statement_arrives_exactly_once_through_an_lrs_outage_and_a_restart(
    store_url, lrs, tmp_path
):
    key = tmp_path / "lrs.key"
    key.write_text("study-time:s3cret\n")
    args = (f"--store={store_url}", *FAST_ARGS, *xapi_args(lrs, key))
    with ServerProcess(*args) as server:
        await study(server, "u1", "c1")
        await wait_for(
            lambda: len(lrs.statements()) == 1, timeout=20, interval=0.2, message="the first statement"
        )
        await wait_for(
            lambda: metrics(server)['study_time_xapi_deliveries_total{outcome="stored"}'] == 1,
            timeout=20,
            interval=0.2,
            message="the first delivery counted",
        )
        # The LRS hangs: two more sessions end; their deliveries time out and are retried.
        lrs.pause()
        await study(server, "u1", "c2")
        await study(server, "u2", "c1", reason="idle")  # the browser client's idle pause
        await wait_for(
            lambda: metrics(server)['study_time_xapi_deliveries_total{outcome="retry"}'] >= 2,
            timeout=20,
            interval=0.2,
            message="failed deliveries",
        )
        assert metrics(server)["study_time_xapi_outbox_waiting"] == 2
        assert server.terminate() == 0
    # Restarted with the LRS still hanging: the outbox kept both.
    with ServerProcess(*args) as server:
        await wait_for(
            lambda: metrics(server)["study_time_xapi_outbox_waiting"] == 2,
            timeout=20,
            interval=0.2,
            message="outbox",
        )
        assert metrics(server)["study_time_xapi_outbox_oldest_age_seconds"] > 0
        lrs.resume()
        await wait_for(
            lambda: metrics(server)["study_time_xapi_outbox_waiting"] == 0,
            timeout=30,
            interval=0.2,
            message="the outbox emptied",
        )
        assert metrics(server)["study_time_xapi_outbox_failed"] == 0
        assert "s3cret" not in server.log
    # Exactly once each (the LRS may also have read the timed-out requests of the first process).
    received = await in_thread(lrs.statements)
    records = await study_records(store_url)
    assert len(records) == 3
    assert sorted(s["id"] for s in received) == sorted(statement_id(r.session_id) for r in records)
    by_id = {s["id"]: s for s in received}
    for record in records:
        got = by_id[statement_id(record.session_id)]
        assert got["actor"]["account"] == {"homePage": HOME, "name": record.user_id}
        assert got["object"]["id"] == f"{HOME}/courses/{record.course_id}"
        assert got["result"]["duration"] == iso_duration(record.seconds)
        assert got["context"]["extensions"][f"{EXT}session-id"] == record.session_id
        paused = (record.user_id, record.course_id) == ("u2", "c1")
        assert got["context"]["extensions"][f"{EXT}end-reason"] == ("idle" if paused else "client_closed")
    # What the LRS stores is valid xAPI (its own fields included).
    assert await in_thread(validate, received) == [[]] * 3
    # The backfill: the same statements, the LRS keeps one of each (204: already there).
    done = await in_thread(
        lambda: subprocess.run(
            [
                sys.executable,
                "server.py",
                "report",
                "sessions",
                "--user=u1",
                "--format=xapi",
                f"--store={store_url}",
                f"--xapi-home-page={HOME}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    )
    backfill = json.loads(done.stdout)
    assert len(backfill) == 2
    for item in backfill:
        stored = {k: v for k, v in by_id[item["id"]].items() if k not in ("stored", "authority", "version")}
        assert stored == item
        assert await in_thread(lrs.put, item) == 204
    assert len(await in_thread(lrs.statements)) == 3
    # A different statement under a session's id is a conflict (the spec's 409), never a second one.
    changed = {**backfill[0], "result": {"duration": "PT1S"}}
    assert await in_thread(lrs.put, changed) == 409


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--xapi-endpoint=http://127.0.0.1:9/xAPI/"], "--xapi-home-page"),
        ([f"--xapi-home-page={HOME}", "--xapi-verb=attended"], "--xapi-verb"),
        (["--xapi-endpoint=ftp://lrs/xAPI"], "--xapi-endpoint"),
        (
            [
                "--xapi-endpoint=http://127.0.0.1:9/xAPI/",
                f"--xapi-home-page={HOME}",
                "--xapi-auth-file=/nonexistent",
            ],
            "--xapi-auth-file",
        ),
    ],
)
def test_xapi_settings_are_checked_at_start(args, named):
    result = run_server("--port=0", "--store=sqlite:///:memory:", *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_an_auth_file_without_a_secret_is_refused_without_echoing_it(tmp_path):
    key = tmp_path / "lrs.key"
    key.write_text("only-a-secret-no-colon\n")
    result = run_server(
        "--port=0",
        "--store=sqlite:///:memory:",
        "--xapi-endpoint=http://127.0.0.1:9/xAPI/",
        f"--xapi-home-page={HOME}",
        f"--xapi-auth-file={key}",
    )
    assert result.returncode == 2
    assert "--xapi-auth-file" in result.stderr
    assert "only-a-secret" not in result.stderr + result.stdout


async def seed(store_url: str, records: list[SessionRecord]) -> None:
    from storage.backends import backend_for

    store = backend_for(store_url).store(server=False)
    await store.open()
    try:
        await store.save(records)
    finally:
        await store.close()


def ended(session_id: str, user: str, started_at: float, seconds: float = 600.0) -> SessionRecord:
    end = started_at + seconds
    return SessionRecord(session_id, user, "c1", started_at, end, seconds, 20, 21, end, "client_closed")


@pytest.mark.gen_test(timeout=120)
async def test_at_start_the_last_days_sessions_are_caught_up_and_a_conflict_is_refused_for_good(
    store_url, lrs
):
    """Sessions the outbox never got (a crash between the write and the enqueue) are sent at the next start;
    older ones are left to a backfill; a statement the LRS holds differently (409) is never retried."""
    now = time.time()
    fresh, conflicting, old = "a1" * 16, "b2" * 16, "c3" * 16
    await seed(
        store_url,
        [
            ended(fresh, "u1", now - 3600),
            ended(conflicting, "u2", now - 1800),
            ended(old, "u3", now - 3 * 86400),
        ],
    )
    theirs = {**statement(ended(conflicting, "u2", now - 1800), CONFIG), "result": {"duration": "PT1S"}}
    assert await in_thread(lrs.put, theirs) == 204
    with ServerProcess(
        f"--store={store_url}", *FAST_ARGS, *xapi_args(lrs, "/dev/null")[:2], "--xapi-timeout=1"
    ) as server:
        await wait_for(
            lambda: (
                metrics(server)["study_time_xapi_outbox_failed"] == 1
                and metrics(server)["study_time_xapi_outbox_waiting"] == 0
            ),
            timeout=30,
            interval=0.2,
            message="the catch-up delivered",
        )
        counts = metrics(server)
        assert counts['study_time_xapi_deliveries_total{outcome="stored"}'] == 1
        assert counts['study_time_xapi_deliveries_total{outcome="refused"}'] == 1
        assert counts['study_time_xapi_deliveries_total{outcome="retry"}'] == 0
        assert "refused statement" in server.log and "409" in server.log
    held = {s["id"]: s for s in await in_thread(lrs.statements)}
    assert set(held) == {statement_id(fresh), statement_id(conflicting)}
    assert held[statement_id(conflicting)]["result"]["duration"] == "PT1S", "the LRS's own statement stands"
    assert held[statement_id(fresh)]["result"]["duration"] == "PT10M"

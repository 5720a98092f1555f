"""The server as a real process: start-up errors, graceful shutdown, crash recovery."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from tests.support.helpers import Client, ServerProcess, run_server, wait_for
from tests.support.stored import study_records

FAST_ARGS = (
    "--heartbeat-interval=0.4",
    "--heartbeat-timeout=0.8",
    "--min-heartbeat-interval=0.05",
    "--sweep-interval=0.05",
    "--flush-interval=0.2",
    "--checkpoint-interval=0",
)


async def records(url: str, **filters):
    return await study_records(url, **filters)


async def _heartbeats_stored(url: str, at_least: int) -> bool:
    return any(r.heartbeats >= at_least for r in await records(url))


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/study_time.db"


@pytest.mark.gen_test(timeout=30)
async def test_sigterm_closes_every_session_with_1001_saves_it_and_exits_0(db_url):
    with ServerProcess(
        f"--store={db_url}", *FAST_ARGS, "--heartbeat-timeout=30", "--heartbeat-interval=10"
    ) as server:
        clients = []
        for course in ("c1", "c2", "c3"):
            client = await Client.connect(server.url, "u1", course)
            await client.connected()
            await client.heartbeat()
            clients.append(client)
        await asyncio.sleep(0.3)  # time that only the shutdown's tail credit can count
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        for client in clients:
            code, reason, messages = await client.closed(timeout=10)
            assert code == 1001
            assert reason
            assert messages[-1]["code"] == "server_shutdown"
        assert await asyncio.get_running_loop().run_in_executor(None, server.wait) == 0
        assert time.monotonic() - started < 5
    saved = await records(db_url, user_id="u1")
    assert len(saved) == 3
    for record in saved:
        assert record.end_reason == "server_shutdown"
        assert record.seconds >= 0.3  # the tail since the heartbeat was credited and saved


@pytest.mark.gen_test(timeout=30)
async def test_sigint_is_a_graceful_shutdown_too(db_url):
    with ServerProcess(f"--store={db_url}", *FAST_ARGS) as server:
        client = await Client.connect(server.url)
        await client.connected()
        server.signal(signal.SIGINT)
        code, _, _ = await client.closed(timeout=10)
        assert code == 1001
        assert await asyncio.get_running_loop().run_in_executor(None, server.wait) == 0
    (record,) = await records(db_url)
    assert record.end_reason == "server_shutdown"


@pytest.mark.gen_test(timeout=40)
async def test_a_crash_loses_at_most_one_checkpoint_and_restart_recovers_open_sessions(db_url):
    flush = 0.2
    args = (
        f"--store={db_url}",
        *FAST_ARGS,
        f"--flush-interval={flush}",
        "--heartbeat-timeout=30",
        "--heartbeat-interval=10",
    )
    with ServerProcess(*args) as server:
        client = await Client.connect(server.url)
        await client.connected()
        seen = 0
        for _ in range(6):
            await asyncio.sleep(0.15)
            seen = (await client.heartbeat())["studyTime"]
        # Credit the client was told about, to the microsecond, is what the
        # server held in memory at the kill; at most one flush interval of it
        # may be lost.
        # Wait for a checkpoint holding all six heartbeats to land, so the
        # kill comes between checkpoints rather than before the first.
        await wait_for(
            lambda: _heartbeats_stored(db_url, 6), timeout=10, message="a checkpoint with six heartbeats"
        )
        credited_at_kill = (await client.heartbeat())["studyTime"]
        server.kill()
    assert seen <= credited_at_kill
    with ServerProcess(*args) as restarted:
        assert "left open by a previous process" in restarted.log
        (record,) = await records(db_url)
        assert record.end_reason == "server_lost"
        assert record.ended_at == record.credited_until
        assert record.seconds >= credited_at_kill - flush - 1  # whole seconds shown vs. exact credit
        again = await Client.connect(restarted.url)
        assert (await again.connected())["studyTime"] == int(record.seconds)
        await again.close()


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--heartbeat-timeout=abc"], {}, "--heartbeat-timeout"),
        (["--port=70000"], {}, "--port"),
        (["--flush-interval=-1"], {}, "--flush-interval"),
        (["--heartbeat-interval=90"], {}, "--heartbeat-interval"),
        (["--log-level=LOUD"], {}, "--log-level"),
        (["--event-loop=libuv"], {}, "--event-loop"),
        ([], {"STUDY_TIME_SWEEP_INTERVAL": "never"}, "STUDY_TIME_SWEEP_INTERVAL"),
        (["--store=postgres://user:hunter2@db/x"], {}, "postgres"),
    ],
)
def test_invalid_settings_stop_the_server_with_a_message_naming_them(args, env, named, tmp_path):
    result = run_server("--port=0", *args, env=env)
    assert result.returncode != 0
    assert named in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_command_line_wins_over_the_environment(tmp_path):
    import settings

    loaded = settings.load(
        ["--heartbeat-interval=20"],
        {"STUDY_TIME_HEARTBEAT_INTERVAL": "25", "STUDY_TIME_FLUSH_INTERVAL": "2.5"},
    )
    assert loaded.heartbeat_interval == 20
    assert loaded.flush_interval == 2.5
    assert loaded.heartbeat_timeout == 60


def test_help_lists_every_setting():
    import dataclasses

    import settings

    result = run_server("--help")
    assert result.returncode == 0
    for field in dataclasses.fields(settings.Settings):
        assert settings.option_name(field.name) in result.stdout
        assert settings.env_name(field.name) in result.stdout


def test_a_second_server_on_the_same_sqlite_file_is_refused(db_url):
    with ServerProcess(f"--store={db_url}"):
        result = run_server(f"--store={db_url}", "--port=0")
        assert result.returncode == 1
        assert "in use by another server process" in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--auth=jwt"], "invalid --jwt-secret"),
        (["--store=mongodb://127.0.0.1:1"], "invalid --store: a mongodb:// URL must name the database"),
        (["--store=mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=soon"], "invalid --store:"),
        (["--store=foo://x"], "invalid --store: unsupported URL scheme 'foo'"),
        (["--flood-burst=0"], "invalid --flood-burst"),
        (["--flood-rate=2", "--flood-burst=0.5"], "invalid --flood-burst"),
    ],
)
def test_every_invalid_setting_is_reported_before_the_port_is_bound_with_exit_2(args, named):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_server(f"--port={busy.getsockname()[1]}", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"server.py: error: {named}" in result.stderr
    assert "Address already in use" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_flood_burst_of_0_is_accepted_only_with_the_limit_off():
    import settings

    loaded = settings.load(["--flood-rate=0", "--flood-burst=0"], {})
    assert (loaded.flood_rate, loaded.flood_burst) == (0, 0)
    with pytest.raises(settings.SettingsError, match="--flood-rate=0 disables the limit"):
        settings.load(["--flood-burst=0"], {})


def test_an_unreachable_mongodb_at_start_up_is_one_line_naming_the_address_and_the_wait():
    from tests.support.ferretdb import free_port

    port = free_port()
    url = f"mongodb://reader:hunter2@127.0.0.1:{port}/study?serverSelectionTimeoutMS=300"
    result = run_server("--port=0", f"--store={url}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    (line,) = errors
    assert f"no server answered at 127.0.0.1:{port} within 0." in line
    assert line.endswith("s (serverSelectionTimeoutMS)")
    assert "Topology" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "reader" not in result.stderr


def token_server(db_url: str, tokens_file) -> ServerProcess:
    """A server with ``--auth=token`` on ``tokens_file``; a session lives 30 s without heartbeats."""
    return ServerProcess(
        f"--store={db_url}",
        *FAST_ARGS,
        "--heartbeat-timeout=30",
        "--heartbeat-interval=10",
        "--auth=token",
        f"--tokens-file={tokens_file}",
    )


@pytest.mark.gen_test(timeout=40)
async def test_sighup_reloads_the_tokens_file_logs_it_and_keeps_every_session(db_url, tmp_path):
    from tests.support.auth_helpers import bearer, create

    tokens_file = tmp_path / "tokens.json"
    first = create(tokens_file, "--user", "u1")
    with token_server(db_url, tokens_file) as server:
        client = await Client.connect(server.url, "u1", "c1", headers=bearer(first))
        await client.connected()
        second = create(tokens_file, "--user", "u2")
        server.signal(signal.SIGHUP)
        await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the reload line")
        assert (
            f"reloaded on SIGHUP: --tokens-file {tokens_file} (2 tokens); 1 sessions kept open" in server.log
        )
        assert server.proc.poll() is None
        await client.heartbeat()  # the session is still open and credited
        other = await Client.connect(server.url, "u2", "c1", headers=bearer(second))
        await other.connected()
        server.signal(signal.SIGTERM)
        for each in (client, other):
            code, _, _ = await each.closed(timeout=10)
            assert code == 1001
        assert await asyncio.get_running_loop().run_in_executor(None, server.wait) == 0
    assert {r.end_reason for r in await records(db_url)} == {"server_shutdown"}


@pytest.mark.gen_test(timeout=60)
async def test_sighup_closes_the_sessions_of_a_revoked_token_with_4401_crediting_up_to_the_reload(
    db_url, tmp_path
):
    import json

    from tests.support.auth_helpers import bearer, create, tokens

    tokens_file = tmp_path / "tokens.json"
    revoked = create(tokens_file, "--user", "u1")
    kept = create(tokens_file, "--user", "u2")
    (revoked_id,) = [e["id"] for e in json.loads(tokens_file.read_text())["tokens"] if e["user"] == "u1"]
    with token_server(db_url, tokens_file) as server:
        learner = await Client.connect(server.url, "u1", "c1", headers=bearer(revoked))
        other = await Client.connect(server.url, "u2", "c1", headers=bearer(kept))
        await learner.connected()
        await other.connected()
        tokens("revoke", revoked_id, "--tokens-file", str(tokens_file))
        # Revoking refuses new connections at once; the open session goes on until the reload.
        await asyncio.sleep(0.1)
        assert (await learner.heartbeat())["status"] == "success"
        before = time.time()
        server.signal(signal.SIGHUP)
        code, reason, messages = await learner.closed(timeout=10)
        after = time.time()
        assert (code, reason) == (4401, "unauthorized")
        assert messages[-1]["type"] == "error" and messages[-1]["code"] == "unauthorized", messages
        assert "no longer stands" in messages[-1]["message"]
        await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the reload line")
        assert "(1 tokens); 1 sessions kept open, 1 closed (credential revoked)" in server.log
        await asyncio.sleep(0.1)
        assert (await other.heartbeat())["status"] == "success"  # its token still stands
        await other.close()
        assert await asyncio.get_running_loop().run_in_executor(None, server.terminate) == 0
    (record,) = await records(db_url, user_id="u1")
    assert record.end_reason == "revoked"
    # Credited exactly up to the reload: the time since its last heartbeat too, nothing after.
    assert before <= record.ended_at <= after
    assert record.credited_until == record.ended_at
    assert record.seconds == pytest.approx(record.ended_at - record.started_at, abs=1e-6)
    assert (
        "closing a session whose credential no longer stands user=u1 course=c1 session="
        f"{record.session_id}: the token was revoked"
    ) in server.log
    assert revoked not in server.log and kept not in server.log


@pytest.mark.gen_test(timeout=40)
async def test_every_sighup_is_a_reload_even_with_nothing_to_reload(db_url):
    server = ServerProcess(f"--store={db_url}", *FAST_ARGS)
    try:
        server.start()
        for n in range(1, 4):
            server.signal(signal.SIGHUP)
            await wait_for(
                lambda n=n: server.log.count("reloaded on SIGHUP") == n, timeout=10, message="reload"
            )
        assert "reloaded on SIGHUP: nothing to reload for --auth=none; 0 sessions kept open" in server.log
        assert server.terminate() == 0
    finally:
        server.__exit__()


def test_help_names_the_commands_and_a_misspelt_one_gets_one_line():
    result = run_server("--help")
    assert "server.py report --help" in result.stdout and "server.py tokens --help" in result.stdout
    assert "server.py migrate --help" in result.stdout
    result = run_server("reprot", "--user=u1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "server.py: error: unknown command 'reprot': the commands are 'report', 'tokens' and"
        " 'migrate'; settings start with -- (see python server.py --help)"
    ]


@pytest.mark.parametrize(
    ("choice", "runs"), [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")]
)
@pytest.mark.gen_test(timeout=30)
async def test_the_server_answers_heartbeats_on_either_event_loop(db_url, choice, runs):
    """uvloop is the default when installed (requirements.txt); asyncio's own loop stays tested."""
    with ServerProcess(f"--store={db_url}", *FAST_ARGS, f"--event-loop={choice}") as server:
        assert f"event loop {runs})" in server.log
        client = await Client.connect(server.url)
        await client.connected()
        await asyncio.sleep(0.1)
        reply = await client.heartbeat()
        assert reply["status"] == "success"
        await client.close()
        await wait_for(lambda: _ended_stored(db_url), message="the ended session stored")
    (record,) = await records(db_url)
    assert record.heartbeats == 1


async def _ended_stored(url: str) -> bool:
    return any(r.end_reason == "client_closed" for r in await records(url))

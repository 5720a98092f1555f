"""Several real server processes sharing one MongoDB database (FerretDB in the tests).

Each test starts ``python server.py`` processes (tests/support/helpers.py ServerProcess)
on the same database and checks the counting rules across them: one connection
per (user, course), no second earned twice, and recovery after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest

from storage.mongodb.schema import LEASES, PROCESSES, SESSIONS
from tests.support.helpers import FAST, Client, ServerProcess, run_server, wait_for

MS = 0.0011  # stored times are rounded to the millisecond


def server_args(url: str, **overrides) -> list[str]:
    settings = {**FAST, "heartbeat_interval": 2.0, "heartbeat_timeout": 4.0, **overrides}
    return [f"--store={url}", *(f"--{k.replace('_', '-')}={v}" for k, v in settings.items())]


def sessions(db, **query) -> list[dict]:
    return list(db[SESSIONS].find(query).sort("startedAt", 1))


@pytest.mark.gen_test(timeout=60)
async def test_a_connection_on_another_process_replaces_the_first_without_double_counting(
    mongo_url, mongo_db
):
    with ServerProcess(*server_args(mongo_url)) as a, ServerProcess(*server_args(mongo_url)) as b:
        first = await Client.connect(a.url, "u1", "c1")
        await first.connected()
        # The first client heartbeats as fast as allowed throughout, so the
        # takeover races its checkpoints.
        answers: list[int] = []

        async def study() -> None:
            while True:
                reply = await first.recv(timeout=10)
                if reply is None or reply["type"] != "heartbeat_response":
                    return
                answers.append(reply["studyTime"])
                await asyncio.sleep(0.06)
                if first.close_code is None:
                    try:
                        first.send({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"})
                    except Exception:
                        return

        first.send({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"})
        racing = asyncio.ensure_future(study())
        await wait_for(lambda: answers and answers[-1] >= 1, timeout=10, message="a second of credit")
        second = await Client.connect(b.url, "u1", "c1")
        taken_over = time.monotonic()
        hello = await second.connected()
        await asyncio.wait_for(racing, 10)
        code, reason, _ = await first.closed(timeout=5)
        elapsed = time.monotonic() - taken_over
        assert (code, reason) == (4409, "replaced by a new connection")
        assert elapsed < 2.0, f"4409 took {elapsed:.2f}s, more than one heartbeat interval"
        reply = await second.heartbeat()
        assert reply["studyTime"] >= hello["studyTime"]
        await second.close()

        def settled():
            docs = sessions(mongo_db, userId="u1", courseId="c1")
            return len(docs) == 2 and all(d["endedAt"] is not None for d in docs) and docs

        old, new = await wait_for(settled, timeout=10, message="both sessions saved")
        assert old["endReason"] == "replaced"
        assert new["endReason"] == "client_closed"
        # No wall-clock second counted twice: the first session's credit stops
        # at the takeover, however many heartbeats it accepted after it.
        assert old["creditedUntil"].timestamp() <= new["startedAt"].timestamp() + MS
        assert old["seconds"] == pytest.approx(
            old["creditedUntil"].timestamp() - old["startedAt"].timestamp(), abs=2 * MS
        )
        # The second client was told the first session's credit up to the takeover.
        assert hello["studyTime"] == int(old["seconds"])
        await wait_for(lambda: mongo_db[LEASES].count_documents({}) == 0, message="the lease released")


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_process_is_cleaned_up_by_another(mongo_url, mongo_db):
    args = server_args(mongo_url, process_timeout=1.5)
    with ServerProcess(*args) as a, ServerProcess(*args) as b:
        client = await Client.connect(a.url, "u1", "c1")
        await client.connected()
        for _ in range(3):
            await client.heartbeat()
            await asyncio.sleep(0.2)
        await wait_for(
            lambda: (docs := sessions(mongo_db, userId="u1")) and docs[0]["heartbeats"] == 3,
            message="the checkpoint",
        )
        a.kill()
        (doc,) = await wait_for(
            lambda: (docs := sessions(mongo_db, userId="u1")) and docs[0]["endReason"] and docs,
            timeout=15,
            message="process B to close A's session",
        )
        assert doc["endReason"] == "server_lost"
        assert doc["endedAt"] == doc["creditedUntil"]
        assert doc["seconds"] == pytest.approx(0.4, abs=0.2)  # three heartbeats 0.2 s apart
        await wait_for(lambda: mongo_db[LEASES].count_documents({}) == 0, message="A's lease freed")
        await wait_for(lambda: mongo_db[PROCESSES].count_documents({}) == 1, message="A's record removed")
        again = await Client.connect(b.url, "u1", "c1")
        assert (await again.connected())["studyTime"] == int(doc["seconds"])
        await again.close()
        assert b.terminate() == 0


@pytest.mark.gen_test(timeout=60)
async def test_processes_2_serves_on_one_port_and_stops_gracefully(mongo_url, mongo_db):
    server = ServerProcess("--processes=2", *server_args(mongo_url)).start()
    try:
        await wait_for(lambda: server.log.count("listening on") == 2, message="both processes")
        await wait_for(lambda: mongo_db[PROCESSES].count_documents({}) == 2, message="both registered")
        clients = []
        for i in range(6):
            client = await Client.connect(server.url, f"u{i}", "c1")
            await client.connected()
            clients.append(client)
        for client in clients:
            assert (await client.heartbeat())["status"] == "success"
        await stopped_gracefully(server, clients)
    finally:
        server.__exit__()
    docs = sessions(mongo_db)
    assert len(docs) == 6
    assert {d["endReason"] for d in docs} == {"server_shutdown"}
    assert mongo_db[PROCESSES].count_documents({}) == 0
    assert mongo_db[LEASES].count_documents({}) == 0


def test_the_sqlite_store_refuses_several_processes(tmp_path):
    result = run_server("--port=0", "--processes=2", f"--store=sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2  # a usage error, as every invalid setting (systemd does not restart it)
    assert "error: invalid --processes: 2 starts 2 processes" in result.stderr
    assert "SQLite store serves one process" in result.stderr
    assert "--processes=1 or a mongodb:// store" in result.stderr


def test_workers_that_cannot_start_stop_the_server_instead_of_restarting(tmp_path):
    from tests.support.ferretdb import free_port

    url = f"mongodb://127.0.0.1:{free_port()}/study?serverSelectionTimeoutMS=300"
    result = run_server("--port=0", "--processes=2", f"--store={url}")
    assert result.returncode == 1
    assert result.stderr.count("cannot start: cannot use the MongoDB store") == 2
    assert "restarting" not in result.stderr


@pytest.mark.gen_test(timeout=60)
async def test_sighup_to_the_supervisor_reloads_every_worker_and_keeps_their_sessions(mongo_url, mongo_db):
    server = ServerProcess("--processes=2", *server_args(mongo_url)).start()
    try:
        await wait_for(lambda: server.log.count("listening on") == 2, message="both processes")
        clients = []
        for i in range(4):
            client = await Client.connect(server.url, f"u{i}", "c1")
            await client.connected()
            clients.append(client)
        server.signal(signal.SIGHUP)
        await wait_for(
            lambda: server.log.count("reloaded on SIGHUP") == 2, timeout=10, message="both reloads"
        )
        assert "forwarding SIGHUP to 2 server processes" in server.log
        assert server.proc.poll() is None
        for client in clients:
            assert (await client.heartbeat())["status"] == "success"
        await stopped_gracefully(server, clients)
    finally:
        server.__exit__()
    assert {d["endReason"] for d in sessions(mongo_db)} == {"server_shutdown"}
    assert "restarting" not in server.log


@pytest.mark.gen_test(timeout=60)
async def test_each_process_is_scraped_on_its_own_metrics_port_and_says_which_it_is(mongo_url):
    from tornado.httpclient import AsyncHTTPClient

    from tests.support.helpers import parse_metrics

    server = ServerProcess("--processes=2", "--metrics-port=0", *server_args(mongo_url)).start()
    try:
        pattern = re.compile(r"metrics of server process (\d) on (http://\S+/metrics)")
        found = await wait_for(
            lambda: len(pattern.findall(server.log)) == 2 and pattern.findall(server.log), message="two ports"
        )
        seen = {}
        for worker, url in found:
            samples = parse_metrics((await AsyncHTTPClient().fetch(url)).body.decode())
            (info,) = [key for key in samples if key.startswith("study_time_process_info{")]
            assert f'worker="{worker}"' in info
            seen[worker] = info
            assert samples["process_open_fds"] > 0
            assert samples["process_resident_memory_bytes"] > 0
            assert "study_time_live_sessions" in samples
        assert set(seen) == {"0", "1"} and seen["0"] != seen["1"]  # two pids, told apart
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.__exit__()


async def stopped_gracefully(server, clients) -> None:
    """SIGTERM: every client is closed with 1001 and the supervisor exits 0."""
    server.signal(signal.SIGTERM)
    for client in clients:
        code, _, _ = await client.closed(timeout=10)
        assert code == 1001
    assert server.wait() == 0

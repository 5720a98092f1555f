"""DNS rebinding under --auth=none: a real server answers only loopback Hosts (or --allowed-hosts)."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.helpers import ServerProcess
from tests.support.rawws import RawSocket, query, upgrade_request

ATTACKER = "rebind.attacker.example"
#: Report requests that --auth=none answers (as admin) for a loopback Host.
REPORTS = ("/api/reports/sessions?userId=u1", "/api/reports/courses/c1/learners")


async def upgrade_status(port: int, host: str, origin: str | None = None) -> tuple[int, RawSocket]:
    """Send a WebSocket upgrade with this Host (and Origin) over a raw socket; return its status."""
    conn = await RawSocket.open(port)
    headers = {"Origin": origin} if origin else {}
    conn.send(upgrade_request(f"/api/study-time?{query()}", host=host, headers=headers))
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1]), conn


async def get(port: int, path: str, host: str):
    return await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", headers={"Host": host}, raise_error=False, request_timeout=10
    )


def server_args(tmp_path, *args: str) -> list[str]:
    return [f"--store=sqlite:///{tmp_path}/study_time.db", *args]


@pytest.mark.gen_test(timeout=60)
async def test_a_rebound_host_is_refused_for_the_socket_and_the_reports(tmp_path):
    with ServerProcess(*server_args(tmp_path)) as server:
        port = server.port
        rebound = f"{ATTACKER}:{port}"
        # The browser of a rebinding page sends its own Host and the matching Origin.
        status, conn = await upgrade_status(port, rebound, origin=f"http://{rebound}")
        assert status == 403
        conn.close()
        for path in (*REPORTS, "/", "/healthz"):
            response = await get(port, path, rebound)
            assert response.code == 403, (path, response.code)
            error = json.loads(response.body)["error"]
            assert error["code"] == "host_not_allowed" and "--allowed-hosts" in error["message"]
        # Loopback names and addresses, with any port, still work.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.2", f"[::1]:{port}", "app.localhost"):
            status, conn = await upgrade_status(port, host, origin=f"http://{host}")
            assert status == 101, host
            assert (await conn.message())["type"] == "connected"
            conn.close()
            for path in REPORTS:
                response = await get(port, path, host)
                assert response.code == 200, (host, path, response.body)
        assert server.terminate() == 0
    refusals = [line for line in server.log.splitlines() if "refused requests for Host" in line]
    assert len(refusals) == 1, refusals  # logged once, however many requests
    assert ATTACKER in refusals[0] and "WARNING" in refusals[0]


@pytest.mark.gen_test(timeout=60)
async def test_names_in_allowed_hosts_are_answered_under_none(tmp_path):
    with ServerProcess(*server_args(tmp_path, "--allowed-hosts=study.example.lan,192.168.7.7")) as server:
        port = server.port
        for host in (f"study.example.lan:{port}", "STUDY.example.lan", "192.168.7.7:80"):
            status, conn = await upgrade_status(port, host)
            assert status == 101, host
            conn.close()
        status, conn = await upgrade_status(port, f"{ATTACKER}:{port}")
        assert status == 403
        conn.close()
        assert server.terminate() == 0

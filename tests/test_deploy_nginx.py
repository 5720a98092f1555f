"""The shipped nginx site (deploy/nginx.conf) in front of real server processes.

Debian's nginx runs the shipped file (tests/support/nginx.py changes only the
listen address, the certificate, the access log path and the upstream line) with TLS on a loopback
port; the clients speak wss:// and https:// to it, as browsers would. The
learners connect from 127.0.0.2 so that the address nginx saw differs from the
proxy's own (127.0.0.1): the study record must hold the learner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import sqlite3
import time
from urllib.parse import quote

import pytest
from tornado.httpclient import AsyncHTTPClient

from settings import Settings
from storage.mongodb.schema import SESSIONS
from tests.support import nginx as nginx_support
from tests.support.helpers import FAST, Client, ServerProcess, wait_for

LEARNER_ADDRESS = "127.0.0.2"  # the learner's own address, as nginx sees it
#: Through nginx: its certificate is a throwaway one, and the learner connects from LEARNER_ADDRESS.
VIA_PROXY = {"validate_cert": False, "network_interface": LEARNER_ADDRESS}
MS = 0.0011  # MongoDB stores times rounded to the millisecond


#: Takeovers the two-process test makes at most while waiting for both processes to serve.
MAX_TAKEOVERS = 60


def server_args(store: str, **overrides) -> list[str]:
    settings = {**FAST, "trust_proxy_headers": "true", **overrides}
    return [f"--store={store}", *(f"--{k.replace('_', '-')}={v}" for k, v in settings.items())]


@contextlib.contextmanager
def behind_nginx(tmp_path, *args: str):
    """A server process started with ``args`` and nginx in front of it, both stopped afterwards."""
    binary = nginx_support.binary_or_skip()
    with ServerProcess(*args) as server:
        proxy = nginx_support.Nginx(binary, tmp_path, f"127.0.0.1:{server.port}").start()
        try:
            yield server, proxy
        finally:
            proxy.stop()


async def fetch(url: str, **options):
    return await AsyncHTTPClient().fetch(url, validate_cert=False, raise_error=False, **options)


def sqlite_records(db_path) -> list[dict]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM study_sessions ORDER BY started_at")]


def test_the_shipped_timeouts_outlast_the_default_heartbeat_timeout():
    # nginx cuts a proxied connection after proxy_read_timeout without a byte
    # from the server (proxy_send_timeout: from the client). Between
    # heartbeats both are quiet; nginx must wait longer than the server would,
    # so that a silent learner ends with the server's 4408 and a saved record.
    text = nginx_support.SITE.read_text()
    socket_location = re.search(r"location = /api/study-time \{(.*?)\n    \}", text, re.S)
    assert socket_location, "deploy/nginx.conf has no location for /api/study-time"
    block = socket_location.group(1)
    default = Settings()
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = nginx_support.directive_seconds(block, name)
        assert value >= default.heartbeat_timeout + default.heartbeat_interval, (name, value)
    # The socket's location sets the upgrade headers next to the forwarded ones
    # (proxy_set_header in a location replaces the server's list).
    for header in ("Upgrade", "Connection", "Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Proto"):
        assert re.search(rf"proxy_set_header {header} ", block), header


def test_the_docs_point_to_the_shipped_site_instead_of_a_copy():
    operations = (nginx_support.ROOT / "docs" / "operations.md").read_text()
    assert "deploy/nginx.conf" in operations
    # A copy in the docs would drift from the file the tests run.
    assert "```nginx" not in operations and "proxy_pass" not in operations


@pytest.mark.gen_test(timeout=60)
async def test_a_learner_studies_through_nginx_and_a_quiet_one_is_timed_out_by_the_server(tmp_path):
    db_path = tmp_path / "study_time.db"
    with behind_nginx(tmp_path, *server_args(f"sqlite:///{db_path}")) as (server, proxy):
        # A client-supplied X-Forwarded-For is not believed: nginx's X-Real-IP wins.
        forged = {"X-Forwarded-For": "203.0.113.9"}
        client = await Client.connect(proxy.wss_url, "u1", "c1", headers=forged, request_options=VIA_PROXY)
        assert (await client.connected())["studyTime"] == 0
        totals = []
        for _ in range(3):
            await asyncio.sleep(FAST["heartbeat_interval"])
            reply = await client.heartbeat()
            assert reply["status"] == "success", reply
            totals.append(reply["studyTime"])
        assert totals[-1] >= 1 and totals == sorted(totals)
        await client.close()

        # A learner who goes quiet: the server's own timeout (0.8 s here)
        # closes it with 4408 through nginx, long before nginx's 120 s.
        quiet = await Client.connect(proxy.wss_url, "u1", "c2", request_options=VIA_PROXY)
        await quiet.connected()
        started = time.monotonic()
        code, reason, _ = await quiet.closed(timeout=10)
        assert code == 4408, (code, reason, proxy.error_log)
        assert time.monotonic() - started < 5

        def saved():
            records = sqlite_records(db_path)
            return len(records) == 2 and all(r["end_reason"] for r in records) and records

        studied, timed_out = await wait_for(saved, message="both sessions saved")
    assert studied["end_reason"] == "client_closed"
    assert timed_out["end_reason"] == "timeout"
    # --trust-proxy-headers: the learner's address, not nginx's (127.0.0.1) nor the forged one.
    assert studied["remote_addr"] == LEARNER_ADDRESS
    assert timed_out["remote_addr"] == LEARNER_ADDRESS
    assert f"remote={LEARNER_ADDRESS}" in server.log


@pytest.mark.gen_test(timeout=60)
async def test_reports_and_the_demo_page_through_nginx(tmp_path):
    db_path = tmp_path / "study_time.db"
    with behind_nginx(tmp_path, *server_args(f"sqlite:///{db_path}")) as (server, proxy):
        client = await Client.connect(proxy.wss_url, "u1", "c1", request_options=VIA_PROXY)
        await client.connected()
        await asyncio.sleep(FAST["heartbeat_interval"])
        await client.heartbeat()
        await client.close()
        await wait_for(lambda: len(sqlite_records(db_path)) == 1, message="the session saved")

        # The demo page and the client script, with the server's security
        # headers; the policy names the public host and port nginx passed on.
        host = f"127.0.0.1:{proxy.port}"
        for path, kind in (("/", "text/html"), ("/study-time-client.js", "javascript")):
            response = await fetch(proxy.https_url + path)
            assert response.code == 200, path
            assert kind in response.headers["Content-Type"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert f"wss://{host}" in response.headers["Content-Security-Policy"]

        # Reports: JSON, and CSV streamed through unbuffered.
        response = await fetch(proxy.https_url + "/api/reports/sessions?userId=u1")
        assert response.code == 200, response.body
        (row,) = json.loads(response.body)["sessions"]
        assert (row["userId"], row["endReason"]) == ("u1", "client_closed")
        response = await fetch(proxy.https_url + "/api/reports/courses/c1/learners?format=csv")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        lines = response.body.decode().splitlines()
        assert len(lines) == 2 and lines[1].startswith("1,c1,u1,")

        # The operations endpoints are not public; the server itself still answers them.
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await fetch(proxy.https_url + path)).code == 404, path
            assert (await fetch(server.http_url + path)).code == 200, path
    assert "GET /api/reports/sessions" in proxy.access_log


@pytest.mark.gen_test(timeout=120)
async def test_two_processes_behind_nginx_take_over_exactly(tmp_path, mongo_url, mongo_db):
    # Two processes on one port behind one upstream: each new connection for
    # the same learner and course, whichever process takes it, replaces the
    # one before with 4409, and no second is credited to two sessions.
    args = server_args(mongo_url, heartbeat_interval=2.0, heartbeat_timeout=4.0)

    def stored():
        return list(mongo_db[SESSIONS].find({"userId": "u1", "courseId": "c1"}).sort("startedAt", 1))

    with behind_nginx(tmp_path, "--processes=2", *args) as (server, proxy):
        await wait_for(lambda: server.log.count("listening on") == 2, message="both processes")
        clients: list[Client] = []
        # The kernel gives each connection to whichever process accepts it
        # first, so keep taking over until both processes have served (at
        # least 8 sessions, at most MAX_TAKEOVERS): the takeovers then cross
        # processes, which is what this is about.
        served_by: set[str] = set()
        while len(clients) < 8 or len(served_by) < 2:
            assert len(clients) < MAX_TAKEOVERS, f"one process took all {len(clients)} connections"
            client = await Client.connect(proxy.wss_url, "u1", "c1", request_options=VIA_PROXY)
            hello = await client.connected()
            if clients:
                code, reason, _ = await clients[-1].closed(timeout=5)
                assert (code, reason) == (4409, "replaced by a new connection")
            for _ in range(2):
                await asyncio.sleep(0.1)
                assert (await client.heartbeat())["studyTime"] >= hello["studyTime"]
            clients.append(client)
            # The session is in the store from its first checkpoint, with the process that holds it.
            (doc,) = await wait_for(
                lambda session_id=hello["sessionId"]: [d for d in stored() if d["_id"] == session_id],
                timeout=10,
                message="the session's first checkpoint",
            )
            served_by.add(doc["processId"])
        await clients[-1].close()
        count = len(clients)

        def settled():
            docs = stored()
            return len(docs) == count and all(d["endedAt"] is not None for d in docs) and docs

        docs = await wait_for(settled, timeout=15, message="every session saved")
    # The takeovers crossed processes: both workers served sessions.
    assert len({d["processId"] for d in docs}) == 2
    assert [d["endReason"] for d in docs] == ["replaced"] * (count - 1) + ["client_closed"]
    for old, new in itertools.pairwise(docs):
        # Each session's credit stops at the takeover, and lies within its own span.
        assert old["creditedUntil"].timestamp() <= new["startedAt"].timestamp() + MS
        span = old["creditedUntil"].timestamp() - old["startedAt"].timestamp()
        assert old["seconds"] <= span + 2 * MS
    assert {d["remoteAddr"] for d in docs} == {LEARNER_ADDRESS}


def https_get(port: int, path: str) -> tuple[int, bytes]:
    """A GET to nginx over TLS (its certificate is a throwaway one), from a blocking test."""
    import http.client
    import ssl

    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=10, context=ssl._create_unverified_context()
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_browser_s_token_never_reaches_nginx_s_logs(tmp_path):
    # The demo page in Chromium through the shipped site, with a real token:
    # the client sends it as the bearer.<token> subprotocol, so neither the
    # access log (its format has no query string anyway) nor the error log
    # (which quotes request lines: here, while the upstream is down and the
    # client keeps reconnecting) ever holds it. ?token= is refused at nginx
    # before it can reach either log.
    from tests.support.browser import WAIT_MS, chromium

    binary = nginx_support.binary_or_skip()
    # Its own Chromium, stopped with the test: a module-wide one would keep
    # Playwright's event loop running under this module's asynchronous tests.
    with contextlib.contextmanager(chromium)() as browser:
        _token_through_nginx(browser, binary, tmp_path, WAIT_MS)


def _token_through_nginx(browser, binary: str, tmp_path, wait_ms: int) -> None:
    from tests.support.auth_helpers import create

    tokens_file = tmp_path / "tokens.json"
    token = create(tokens_file, "--user", "u1")
    args = server_args(f"sqlite:///{tmp_path}/study_time.db", auth="token", tokens_file=str(tokens_file))
    server = ServerProcess(*args).start()
    proxy = nginx_support.Nginx(binary, tmp_path, f"127.0.0.1:{server.port}").start()
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.set_default_timeout(wait_ms)
        page.goto(f"{proxy.https_url}/?userId=u1&courseId=c1&maxRetryDelay=300")
        page.fill("#token", token)
        page.click("#connect")
        page.wait_for_function("() => studyTimeClient.status === 'connected'")
        page.wait_for_function("() => studyTimeClient.studyTime >= 1", timeout=wait_ms)
        assert "session opened user=u1 course=c1" in server.log
        # A URL token, plain or with its name percent-encoded, gets 400 from nginx itself.
        for query in (f"token={token}", f"%74oken={token}", f"TOKEN={token}"):
            status, body = https_get(proxy.port, f"/api/study-time?userId=u1&courseId=c1&{query}")
            assert status == 400 and b"bearer.<credential>" in body, (query, status, body)
        # The upstream goes away: the client retries, and nginx logs each failed attempt.
        assert server.terminate() == 0
        wait_for_sync(lambda: "while connecting to upstream" in proxy.error_log, "nginx's error line")
        status, _ = https_get(proxy.port, f"/api/study-time?userId=u1&courseId=c1&token={token}")
        assert status == 400
    finally:
        context.close()
        proxy.stop()
        server.__exit__()
    logs = proxy.access_log + proxy.error_log
    assert "GET /api/study-time " in proxy.access_log  # the socket's requests are logged, path only
    assert 'request: "GET /api/study-time?userId=u1&courseId=c1 HTTP/1.1"' in proxy.error_log
    for form in (token, token[4:], quote(token, safe="")):
        assert form not in logs
    assert "?" not in proxy.access_log


def wait_for_sync(predicate, message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


@pytest.mark.gen_test(timeout=60)
async def test_behind_nginx_the_per_address_cap_counts_each_learner_only_with_trust_proxy_headers(tmp_path):
    # docs/operations.md, "Sizing the per-address cap": with --trust-proxy-headers
    # the cap counts the address nginx saw (one per learner, or per NAT);
    # without it every learner shares nginx's own address, and one cap.
    def via(address: str) -> dict:
        return {**VIA_PROXY, "network_interface": address}

    for trusted in (True, False):
        folder = tmp_path / f"trusted-{trusted}"
        folder.mkdir()
        args = server_args(
            f"sqlite:///{folder}/study_time.db",
            trust_proxy_headers=str(trusted).lower(),
            max_connections_per_address=1,
        )
        with behind_nginx(folder, *args) as (server, proxy):
            first = await Client.connect(proxy.wss_url, "u1", "c1", request_options=via("127.0.0.2"))
            await first.connected()
            # Another learner, from another address.
            second = await Client.connect(proxy.wss_url, "u2", "c1", request_options=via("127.0.0.3"))
            if trusted:
                await second.connected()
                # The first learner's address is at its cap.
                again = await Client.connect(proxy.wss_url, "u3", "c1", request_options=via("127.0.0.2"))
                code, _, messages = await again.closed(timeout=10)
                assert code == 4431 and messages[-1]["code"] == "too_many_connections", messages
                await second.close()
            else:
                code, _, messages = await second.closed(timeout=10)
                assert code == 4431, (code, messages)
            await first.close()
        assert "--max-connections-per-address" in server.log

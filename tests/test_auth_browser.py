"""Credentials and origins in a real browser: headless Chromium against real server processes.

A browser cannot set headers on a WebSocket, so it sends its credential as the
``bearer.<credential>`` subprotocol (next to ``study-time.v1``) or as
``?token=``; it always sends Origin. Chromium fails the connection if the
server answers no subprotocol or one it did not offer, so a connected socket
proves the selection works. Skips without Chromium, except under CI=true.
"""

from __future__ import annotations

from tests.support.auth_helpers import tokens
from tests.support.browser import HARNESS, WAIT_MS
from tests.support.helpers import ServerProcess

# Opens the socket and resolves with what the page saw: the selected
# subprotocol, the first message, and the close code (1006 when the upgrade
# was refused: pages are not told why).
OPEN_SOCKET = """
([url, protocols]) => new Promise((resolve) => {
  const ws = new WebSocket(url, protocols);
  const seen = {protocol: null, message: null, code: null};
  ws.onopen = () => { seen.protocol = ws.protocol; };
  ws.onmessage = (event) => { seen.message = JSON.parse(event.data); ws.close(1000); };
  ws.onclose = (event) => { seen.code = event.code; resolve(seen); };
})
"""


def test_a_browser_authenticates_by_subprotocol_and_query_and_origins_are_enforced(browser, tmp_path):
    tokens_file = tmp_path / "tokens.json"
    token = tokens("create", "--user", "u1", "--tokens-file", str(tokens_file)).stdout.strip()
    store = f"--store=sqlite:///{tmp_path}/db"
    with ServerProcess(store.replace("/db", "/other.db")) as lms:
        lms_origin = f"http://127.0.0.1:{lms.port}"
        with ServerProcess(
            store, "--auth=token", f"--tokens-file={tokens_file}", f"--allowed-origins={lms_origin}"
        ) as server:
            ws_url = f"{server.url}/api/study-time?userId=u1&courseId=c1"
            page = browser.new_page(**HARNESS)
            page.set_default_timeout(WAIT_MS)

            # Same origin, credential as a subprotocol: selected, connected.
            page.goto(server.http_url + "/")
            seen = page.evaluate(OPEN_SOCKET, [ws_url, ["study-time.v1", f"bearer.{token}"]])
            assert seen["protocol"] == "study-time.v1", seen
            assert seen["message"]["type"] == "connected", seen
            # Credential in the query.
            seen = page.evaluate(OPEN_SOCKET, [f"{ws_url}&token={token}", []])
            assert seen["message"]["type"] == "connected", seen
            # No credential: the page learns why from the error message and 4401.
            seen = page.evaluate(OPEN_SOCKET, [ws_url, ["study-time.v1"]])
            assert seen["message"]["code"] == "unauthorized" and seen["code"] == 4401, seen

            # A page from the allowed origin (another site: the LMS).
            page.goto(lms.http_url + "/")
            seen = page.evaluate(OPEN_SOCKET, [ws_url, ["study-time.v1", f"bearer.{token}"]])
            assert seen["message"]["type"] == "connected", seen

            # A page from any other origin, even holding a valid token, is refused before the upgrade.
            page.goto(f"http://localhost:{lms.port}/")
            seen = page.evaluate(OPEN_SOCKET, [ws_url, ["study-time.v1", f"bearer.{token}"]])
            assert seen == {"protocol": None, "message": None, "code": 1006}, seen
            page.close()
            assert server.terminate() == 0
    assert f"refused a socket from origin 'http://localhost:{lms.port}'" in server.log
    assert token not in server.log

"""The demo page and static/study-time-client.js in a real browser against a real server.

Headless Chromium from Debian's packages (scripts/ensure-chromium.sh installs
it) is driven by Playwright's sync API; the server runs as a separate process
(tests.support.helpers.ServerProcess), so the browser and the Tornado loop never share
a thread. Intervals are short (half a second) and every wait is for an event
in the page with a generous bound. Without Chromium these tests skip, except
under CI=true where that is a failure.

Screenshots land in test-output/ (desktop and phone width, English and Chinese).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.auth_helpers import SECRET, claims, hs256
from tests.support.browser import HARNESS, POLICY_ENFORCED, WAIT_MS, wait_attached
from tests.support.helpers import ROOT, ServerProcess

OUTPUT = os.path.join(ROOT, "test-output")
API_DOC = os.path.join(ROOT, "docs", "study-time-api.zh.md")

# Short intervals; the flood limit is off because two heartbeats a second
# would exceed the production default of one message a second.
FAST_ARGS = (
    "--heartbeat-interval=0.5",
    "--heartbeat-timeout=5",
    "--min-heartbeat-interval=0.25",
    "--sweep-interval=0.1",
    "--flush-interval=0.1",
    "--checkpoint-interval=0",
    "--flood-rate=0",
)
INTERVAL_MS = 500


@pytest.fixture
def context(browser):
    """A fresh browser profile; more can be made with ``browser.new_context``."""
    made = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860}, **HARNESS)
    yield made
    made.close()


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "study_time.db")


@pytest.fixture
def serve(db_path):
    """A factory: ``serve(*args, port=None)`` starts ``server.py`` with FAST_ARGS and the test's store."""
    with contextlib.ExitStack() as running:  # every server is killed after the test

        def start(*args: str, port: int | None = None) -> ServerProcess:
            extra = [f"--port={port}"] if port else []
            return running.enter_context(
                ServerProcess(*FAST_ARGS, f"--store=sqlite:///{db_path}", *extra, *args)
            )

        yield start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The page, seen as a user sees it.

WATCH_DISPLAY = """
document.addEventListener("DOMContentLoaded", () => {
  window.__shown = [];
  const time = document.getElementById("time");
  const seconds = (text) => text.split(":").reduce((total, part) => total * 60 + Number(part), 0);
  new MutationObserver(() => window.__shown.push(seconds(time.textContent)))
    .observe(time, {childList: true, characterData: true, subtree: true});
});
"""


def open_demo(
    context, server, user: str, course: str, *, query: str = "", token: str | None = None, fake_clock=False
):
    """The demo page for ``user`` and ``course`` (and ``token``), with Connect clicked.

    ``fake_clock``: Playwright's clock is installed first; it runs on as usual
    until a test moves it (``page.clock.fast_forward``).
    """
    page = context.new_page()
    if fake_clock:
        page.clock.install()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.add_init_script(WATCH_DISPLAY)
    page.goto(f"{server.http_url}/?userId={user}&courseId={course}{query}")
    if token is not None:
        page.fill("#token", token)
    page.click("#connect")
    return page


def wait_status(page, status: str, timeout: int = WAIT_MS) -> None:
    page.wait_for_function(
        "s => document.getElementById('status').dataset.status === s", arg=status, timeout=timeout
    )


def wait_display_at_least(page, seconds: int, timeout: int = WAIT_MS) -> None:
    page.wait_for_function(
        """n => document.getElementById('time').textContent
             .split(':').reduce((t, p) => t * 60 + Number(p), 0) >= n""",
        arg=seconds,
        timeout=timeout,
    )


def shown(page) -> int:
    h, m, s = (int(part) for part in page.text_content("#time").split(":"))
    return h * 3600 + m * 60 + s


def log_lines(page, pattern: str) -> list[str]:
    return [line for line in page.locator("#log .msg").all_text_contents() if re.search(pattern, line)]


def assert_never_backwards(page) -> None:
    values = page.evaluate("window.__shown")
    assert values, "the display never changed"
    assert values == sorted(values), f"the display ran backwards: {values}"


def assert_no_page_errors(page) -> None:
    assert page.errors == [], page.errors


def records(db_path: str, user: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT end_reason, seconds, heartbeats FROM study_sessions"
            " WHERE user_id = ? ORDER BY started_at",
            (user,),
        ).fetchall()


def wait_records(db_path: str, user: str, predicate, timeout: float = 15.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        rows = records(db_path, user)
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, f"timed out waiting for the study records of {user}: {rows}"
        time.sleep(0.05)


# The tests.


def test_connecting_shows_the_time_growing_from_heartbeats(context, serve, db_path):
    server = serve()
    page = open_demo(context, server, "grow", "c1")
    wait_status(page, "connected")
    assert page.text_content("#status") == "Connected, counting"
    page.evaluate(
        """() => {
          window.__sent = [];
          window.studyTimeClient.addEventListener("log", (e) => {
            if (e.detail.direction === "out" && e.detail.message) window.__sent.push(performance.now());
          });
        }"""
    )
    wait_display_at_least(page, 3)
    # The server's own total, not just the ticking display, has grown.
    page.wait_for_function("window.studyTimeClient.studyTime >= 2", timeout=WAIT_MS)
    replies = log_lines(page, r"^heartbeat ok, total \d+s$")
    assert len(replies) >= 3
    assert log_lines(page, "refused") == [], "the client sent heartbeats faster than the server allows"
    sent = page.evaluate("window.__sent")
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps and min(gaps) >= INTERVAL_MS - 5, f"heartbeats closer than the announced interval: {gaps}"
    # Every log line carries a time.
    assert all(
        re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", at) for at in page.locator("#log .at").all_text_contents()
    )
    assert_never_backwards(page)
    page.click("#disconnect")
    wait_status(page, "idle")
    assert page.get_attribute("#reason-text", "data-kind") == "stopped"
    rows = wait_records(db_path, "grow", lambda rows: rows and rows[-1][0] is not None)
    assert rows[-1][0] == "client_closed"
    assert_no_page_errors(page)


def test_a_second_page_replaces_the_first_which_stops(browser, serve):
    server = serve()
    first_ctx = browser.new_context(locale="en-US", **HARNESS)
    second_ctx = browser.new_context(locale="en-US", **HARNESS)
    try:
        first = open_demo(first_ctx, server, "twice", "c1", query="&maxRetryDelay=300")
        wait_status(first, "connected")
        wait_display_at_least(first, 1)
        second = open_demo(second_ctx, server, "twice", "c1")
        wait_status(second, "connected")
        wait_status(first, "stopped")
        assert first.text_content("#reason-text") == "replaced by another tab or device"
        assert first.text_content("#status") == "Stopped"
        # The takeover is final: the first page does not fight back. Give a
        # looping client time for several attempts at its short retry delay.
        frozen = shown(first)
        second.wait_for_timeout(1500)
        assert first.get_attribute("#status", "data-status") == "stopped"
        assert len(log_lines(first, r"^connecting to")) == 1
        assert shown(first) == frozen, "the replaced page kept counting"
        assert second.get_attribute("#status", "data-status") == "connected"
        # The second page continues the same total.
        assert second.evaluate("window.studyTimeClient.studyTime") >= frozen - 1
        assert_never_backwards(first)
        assert_no_page_errors(first)
        assert_no_page_errors(second)
    finally:
        first_ctx.close()
        second_ctx.close()


def test_a_bad_token_shows_not_authorised_and_does_not_retry(context, serve):
    server = serve("--auth=jwt", f"--jwt-secret={SECRET}")
    page = open_demo(
        context, server, "learner-1", "c1", query="&maxRetryDelay=300", token="not-a-valid-token"
    )
    wait_status(page, "stopped")
    assert page.get_attribute("#reason-text", "data-kind") == "unauthorized"
    assert page.text_content("#reason-text") == "not authorised: check the token"
    page.wait_for_timeout(1500)  # several retry delays: a looping client would reconnect by now
    assert page.get_attribute("#status", "data-status") == "stopped"
    assert len(log_lines(page, r"^connecting to")) == 1
    # The right credential for the same learner connects.
    page.fill("#token", hs256(claims(sub="learner-1")))
    page.click("#connect")
    wait_status(page, "connected")
    assert_no_page_errors(page)


def test_a_server_restart_shows_reconnecting_and_resumes_with_the_total_intact(context, serve, db_path):
    port = free_port()
    server = serve(port=port)
    page = open_demo(context, server, "restart", "c1", query="&maxRetryDelay=1000")
    wait_status(page, "connected")
    page.wait_for_function("window.studyTimeClient.studyTime >= 2", timeout=WAIT_MS)
    assert server.terminate() == 0  # graceful: every session closed with 1001 and saved
    wait_status(page, "reconnecting")
    assert page.get_attribute("#reason-text", "data-kind") == "server_restarting"
    assert page.text_content("#reason-text") == "server restarting"
    assert re.fullmatch(r"Reconnecting in \d+ s \(attempt \d+\)", page.text_content("#status"))
    (saved,) = wait_records(db_path, "restart", lambda rows: rows and rows[-1][0] is not None)
    assert saved[0] == "server_shutdown"
    serve(port=port)  # same SQLite file, same port
    wait_status(page, "connected")
    # The new server's first message carries the total saved before the restart.
    connected = page.locator("#log li[data-type=connected] .msg").first.text_content()
    total = int(re.search(r"total (\d+)s", connected).group(1))
    assert total == int(saved[1])
    wait_display_at_least(page, total + 1)
    assert len(log_lines(page, r"^connecting to")) >= 2
    # Failed attempts while the server was down did not hide why it went.
    assert page.get_attribute("#reason-text", "data-kind") == "server_restarting"
    assert_never_backwards(page)
    assert_no_page_errors(page)


# Hiding the page: headless Chromium keeps every page visible (switching tabs
# with bring_to_front does not hide the other one, and CDP's
# Page.setWebLifecycleState("frozen") freezes scripts without changing
# visibility), so the test does what the browser does when a tab goes to the
# background: document.visibilityState becomes "hidden" and visibilitychange
# fires. The client reads exactly those two, so this exercises its real path.
SET_VISIBILITY = """
state => {
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
  Object.defineProperty(document, "hidden", {configurable: true, get: () => state === "hidden"});
  document.dispatchEvent(new Event("visibilitychange"));
}
"""


def test_hiding_the_page_pauses_and_showing_it_resumes(context, serve, db_path):
    server = serve()
    page = open_demo(context, server, "hider", "c1")
    wait_status(page, "connected")
    page.wait_for_function("window.studyTimeClient.studyTime >= 1", timeout=WAIT_MS)
    page.evaluate(SET_VISIBILITY, "hidden")
    wait_status(page, "paused")
    assert page.get_attribute("#reason-text", "data-kind") == "page_hidden"
    # Closed cleanly, so the server credited the time up to the pause.
    (paused,) = wait_records(db_path, "hider", lambda rows: rows and rows[-1][0] is not None)
    assert paused[0] == "page_hidden"  # the record says why (docs/protocol.md, "Closing")
    frozen = shown(page)
    page.wait_for_timeout(2000)  # hidden for two seconds: none of them may count
    assert shown(page) == frozen
    page.evaluate(SET_VISIBILITY, "visible")
    wait_status(page, "connected")
    connected = page.locator("#log li[data-type=connected] .msg").first.text_content()
    total = int(re.search(r"total (\d+)s", connected).group(1))
    assert total == int(paused[1]), "the hidden time was counted"
    assert_never_backwards(page)
    assert_no_page_errors(page)


# Idle detection, with the page's clock faked. The server keeps the real clock
# and the production interval (30 s, timeout 60 s): each fake 30 s step sends
# one heartbeat, a few milliseconds of real time apart (hence no minimum).
IDLE_ARGS = ("--heartbeat-interval=30", "--heartbeat-timeout=60", "--min-heartbeat-interval=0")

COUNT_HEARTBEATS = """() => {
  window.__heartbeats = 0; window.__replies = 0;
  window.studyTimeClient.addEventListener("log", (e) => {
    const type = e.detail.message && e.detail.message.type;
    if (e.detail.direction === "out" && type === "heartbeat") window.__heartbeats += 1;
    if (e.detail.direction === "in" && type === "heartbeat_response") window.__replies += 1;
  });
}"""


def fake_minutes_pass(page, seconds: int) -> None:
    """Move the page's clock on in 30 s steps; while connected, wait for each heartbeat's reply.

    (One jump of minutes would look, to the client, like a server silent for
    minutes: it would give the connection up, as after a laptop's sleep.)
    """
    for _ in range(seconds // 30):
        before = page.evaluate("window.__replies")
        connected = page.evaluate("window.studyTimeClient.status") == "connected"
        page.clock.fast_forward(30_000)
        if connected and page.evaluate("window.studyTimeClient.status") == "connected":
            page.wait_for_function("n => window.__replies > n", arg=before, timeout=WAIT_MS)


def test_an_idle_learner_is_paused_after_five_minutes_and_resumes_on_input(context, serve, db_path):
    server = serve(*IDLE_ARGS)
    page = open_demo(context, server, "idler", "c1", fake_clock=True)
    wait_status(page, "connected")
    page.evaluate(COUNT_HEARTBEATS)
    # Input now and then keeps it counting: 4 min, a mouse move, 4.5 min more.
    fake_minutes_pass(page, 240)
    page.mouse.move(40, 40)
    page.mouse.move(60, 80)
    fake_minutes_pass(page, 270)
    assert page.get_attribute("#status", "data-status") == "connected"
    assert page.get_attribute("#paused", "data-reason") == ""
    assert page.text_content("#active-only") == (
        "Counts active time only: it pauses after 5 min without input (a playing video counts)"
        " and while this page is hidden."
    )
    # Five minutes after the last input: paused, and the page says why.
    fake_minutes_pass(page, 30)
    wait_status(page, "paused")
    assert page.get_attribute("#paused", "data-reason") == "idle"
    assert page.text_content("#paused").startswith("Paused: no activity for 5 min.")
    assert page.get_attribute("#reason-text", "data-kind") == "idle"
    # Closed cleanly: the server credited up to the pause and ended the session.
    (ended,) = wait_records(db_path, "idler", lambda rows: rows and rows[-1][0] is not None)
    assert ended[0] == "idle"  # the record says why: the dashboards word it "paused: no activity"
    # Half an hour idle: no heartbeat, no session, the display stands still.
    sent, frozen = page.evaluate("window.__heartbeats"), shown(page)
    fake_minutes_pass(page, 1800)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__heartbeats") == sent
    assert shown(page) == frozen
    assert len(records(db_path, "idler")) == 1
    # A key: a new connection (a new session), the total without the pause.
    page.keyboard.press("Shift")
    wait_status(page, "connected")
    assert page.get_attribute("#paused", "data-reason") == ""
    rows = wait_records(db_path, "idler", lambda rows: len(rows) == 2)
    assert rows[1][0] is None, "the new session is open"
    connected = page.locator("#log li[data-type=connected] .msg").first.text_content()
    assert int(re.search(r"total (\d+)s", connected).group(1)) == int(ended[1])
    assert log_lines(page, r"^no activity for 5 min: paused$")
    assert log_lines(page, r"^active again: resuming$")
    assert_no_page_errors(page)


# A second of silent 8 kHz PCM, looped: a medium that is playing.
PLAY_AUDIO = """async () => {
  const rate = 8000, data = rate * 2, buffer = new ArrayBuffer(44 + data), v = new DataView(buffer);
  const text = (at, s) => [...s].forEach((c, i) => v.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); v.setUint32(4, 36 + data, true); text(8, "WAVEfmt "); v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  text(36, "data"); v.setUint32(40, data, true);
  const audio = document.createElement("audio");
  audio.src = URL.createObjectURL(new Blob([buffer], { type: "audio/wav" }));
  audio.loop = true;
  audio.muted = true;
  document.body.append(audio);
  window.__audio = audio;
  await audio.play();
}"""


def test_a_playing_medium_counts_as_activity_and_a_hidden_page_pauses_by_default(context, serve, db_path):
    server = serve(*IDLE_ARGS)
    page = open_demo(context, server, "watcher", "c1", fake_clock=True)
    wait_status(page, "connected")
    page.evaluate(COUNT_HEARTBEATS)
    page.evaluate(PLAY_AUDIO)
    page.wait_for_function("window.__audio.readyState > 2 && !window.__audio.paused", timeout=WAIT_MS)
    # Ten minutes of a lecture without touching anything: still counting.
    fake_minutes_pass(page, 600)
    assert page.get_attribute("#status", "data-status") == "connected"
    # The lecture over, five more minutes: paused as idle.
    page.evaluate("window.__audio.pause()")
    fake_minutes_pass(page, 330)
    wait_status(page, "paused")
    assert page.get_attribute("#paused", "data-reason") == "idle"
    # Hidden while idle: the reason changes; shown again, it resumes (coming back is input).
    page.evaluate(SET_VISIBILITY, "hidden")
    page.wait_for_function("document.getElementById('paused').dataset.reason === 'hidden'", timeout=WAIT_MS)
    assert page.text_content("#paused").startswith("Paused while this page is hidden")
    page.evaluate(SET_VISIBILITY, "visible")
    wait_status(page, "connected")
    # The client's default, without the demo page's checkbox: a hidden page pauses.
    assert page.evaluate(
        """async () => {
          const { StudyTimeClient } = await import("/study-time-client.js");
          const client = new StudyTimeClient({ userId: "u", courseId: "c", WebSocket: class {} });
          return [client.options.pauseWhenHidden, client.options.idleTimeout];
        }"""
    ) == [True, 300000]
    assert_no_page_errors(page)


def test_the_pause_is_worded_in_chinese(context, serve):
    server = serve(*IDLE_ARGS)
    page = open_demo(context, server, "idler-zh", "c1", query="&lang=zh", fake_clock=True)
    wait_status(page, "connected")
    page.evaluate(COUNT_HEARTBEATS)
    fake_minutes_pass(page, 330)
    wait_status(page, "paused")
    assert page.text_content("#status") == "已暂停"
    assert page.text_content("#active-only").startswith("只计算活跃时间：5 分钟内没有操作会暂停")  # noqa: RUF001
    assert page.text_content("#paused").startswith("已暂停：5 分钟内没有操作。")  # noqa: RUF001 (Chinese punctuation)
    assert page.text_content("#reason-text") == "无操作，已暂停"  # noqa: RUF001 (Chinese punctuation)
    assert page.locator("#log .msg").filter(has_text="5 分钟无操作：已暂停").count() == 1  # noqa: RUF001 (Chinese punctuation)
    page.screenshot(path=os.path.join(OUTPUT, "demo-idle-zh.png"))


def test_leaving_the_page_closes_cleanly_so_the_tail_is_credited(context, serve, db_path):
    server = serve()
    page = open_demo(context, server, "leaver", "c1")
    wait_status(page, "connected")
    page.wait_for_function("window.studyTimeClient.studyTime >= 1", timeout=WAIT_MS)
    page.goto("about:blank")  # fires pagehide
    (record,) = wait_records(db_path, "leaver", lambda rows: rows and rows[-1][0] is not None)
    assert record[0] == "client_closed"  # not connection_lost, which forfeits the tail


def test_language_follows_the_browser_and_can_be_switched(browser, serve):
    server = serve()
    zh = browser.new_context(locale="zh-CN", **HARNESS)
    try:
        page = zh.new_page()
        page.goto(f"{server.http_url}/")
        assert page.text_content("h1") == "学习时长"
        assert page.text_content("#status") == "未连接"
        assert page.get_attribute("html", "lang") == "zh-CN"
        page.click("#lang")
        assert page.text_content("h1") == "Study time"
        assert page.text_content("#status") == "Not connected"
        page.reload()  # the choice is remembered
        assert page.text_content("h1") == "Study time"
    finally:
        zh.close()


def test_the_reports_view_says_when_reports_are_not_available(context, serve):
    # A copy of the page pointed at a server without the report endpoints (an
    # older release): every report request answers 404, as such a server would.
    server = serve()
    page = context.new_page()
    page.route("**/api/reports/**", lambda route: route.fulfill(status=404, body="Not Found"))
    page.goto(f"{server.http_url}/?userId=alice&courseId=c1")
    page.click("#tab-reports")
    page.wait_for_function("document.getElementById('reports-state').dataset.state === 'missing'")
    assert page.text_content("#reports-state") == "Reports are not available on this server yet."
    assert page.is_hidden("#reports-grid")


def server_supports_reports(server: ServerProcess) -> bool:
    from urllib.error import HTTPError
    from urllib.request import urlopen

    try:
        with urlopen(f"{server.http_url}/api/reports/learners/nobody/courses", timeout=10):
            return True
    except HTTPError as exc:
        return exc.code != 404


def test_the_reports_view_shows_my_courses_and_the_leaderboard(browser, serve):
    server = serve()
    if not server_supports_reports(server):
        pytest.skip("needs the report endpoints of issue 5")
    ctx = browser.new_context(locale="en-US", **HARNESS)
    try:
        pages = [open_demo(ctx, server, user, "algebra") for user in ("alice", "bob")]
        for page in pages:
            page.wait_for_function("window.studyTimeClient.studyTime >= 1", timeout=WAIT_MS)
        for page in pages:
            page.click("#disconnect")
        alice = pages[0]
        alice.click("#tab-reports")
        # No sign-in (--auth=none): the course of the Live tab with both learners first ...
        alice.wait_for_function("document.getElementById('view-reports').dataset.busy === '0'")
        assert alice.get_attribute("#reports-state", "data-state") == "ok"
        board = alice.locator("#course-learners tbody tr")
        assert board.count() == 2
        assert sorted(alice.locator("#course-learners tbody td:first-child").all_text_contents()) == [
            "alice",
            "bob",
        ]
        # ... and the Live tab's learner's own study.
        alice.click("#dash-view-learner")
        alice.wait_for_function("document.getElementById('view-reports').dataset.busy === '0'")
        courses = alice.locator("#learner-courses tbody tr").all_text_contents()
        assert any("algebra" in row for row in courses), courses
    finally:
        ctx.close()


def test_the_demo_page_works_under_its_own_policy_and_connects_to_no_other_server(browser, serve, tmp_path):
    server, other = serve(), serve(f"--store=sqlite:///{tmp_path}/other.db")
    ctx = browser.new_context(locale="en-US", **POLICY_ENFORCED)
    try:
        page = ctx.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{server.http_url}/?userId=alice&courseId=algebra")
        page.click("#connect")
        wait_attached(page, "#status[data-status='connected']")
        page.click("#tab-reports")
        wait_attached(page, "#reports-state[data-state='ok']")
        assert page.locator("#course-learners tbody tr").count() == 1
        assert not [line for line in console if "Content Security Policy" in line], console
        # Another server's address, typed in (or given as ?server=): the browser refuses the socket.
        page.click("#tab-live")
        page.click("#disconnect")
        page.fill("#server", f"127.0.0.1:{other.port}")
        page.click("#connect")
        deadline = time.monotonic() + WAIT_MS / 1000
        while not [line for line in console if "connect-src" in line]:
            assert time.monotonic() < deadline, console
            page.wait_for_timeout(50)
    finally:
        ctx.close()
    assert other.terminate() == 0
    assert "session opened" not in other.log


# The page's policy against a server address on another host: the browser
# blocks the socket and the report requests, and the page says so.

BLOCKED_EN = (
    "This page can only connect to the server it was loaded from ({own})."
    " To use {other}, open http://{other}/ instead."
)
BLOCKED_ZH = "本页面只能连接到加载它的服务器（{own}）。要使用 {other}，请改为打开 http://{other}/。"  # noqa: RUF001 (Chinese punctuation)


def open_blocked_demo(context, page_url: str, other_host: str, *, token: str | None = None):
    """The demo page at ``page_url`` aimed at ``other_host`` (``?server=``), connected; ticked if a token."""
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{page_url}/?server={other_host}&userId=u1&courseId=c1&maxRetryDelay=300")
    if token is not None:
        page.fill("#token", token)
        page.check("#cross-host-ok")
    page.click("#connect")
    wait_attached(page, "#status[data-status='stopped']")
    return page


def assert_blocked_and_stopped(page, own: str, other: str) -> None:
    """The page names both hosts in both languages, and neither the client nor the reports try again."""
    assert page.get_attribute("#reason-text", "data-kind") == "blocked"
    assert page.text_content("#reason-text") == "blocked by this page's security policy"
    assert page.text_content("#status") == "Stopped"
    assert page.get_attribute("#cross-host", "data-state") == "blocked"
    assert page.text_content("#cross-host-text") == BLOCKED_EN.format(own=own, other=other)
    assert page.get_attribute("#cross-host-text a", "href") == f"http://{other}/"
    assert not page.is_visible("#cross-host-ok"), "a tick that cannot help is still offered"
    # Several retry delays (at most 300 ms): a looping client would have tried again by now.
    page.wait_for_timeout(1500)
    assert page.get_attribute("#status", "data-status") == "stopped"
    assert len(log_lines(page, r"^connecting to")) == 1
    assert log_lines(page, r"^reconnecting") == []
    assert log_lines(page, r"^blocked by this page's Content-Security-Policy \(connect-src\)") == [
        f"blocked by this page's Content-Security-Policy (connect-src): {other}"
    ]
    assert page.evaluate("[studyTimeClient.status, studyTimeClient.retry]") == ["stopped", None]
    # The report requests are blocked too, and said to be.
    page.click("#tab-reports")
    wait_attached(page, "#reports-state[data-state='blocked']")
    assert page.text_content("#reports-state") == BLOCKED_EN.format(own=own, other=other)
    page.click("#tab-live")
    page.click("#lang")
    assert page.text_content("#reason-text") == "被本页面的安全策略阻止"
    assert page.text_content("#cross-host-text") == BLOCKED_ZH.format(own=own, other=other)
    # The log is in the page's language too (issue 13), the same single attempt.
    assert len(log_lines(page, r"^正在连接 ")) == 1
    assert log_lines(page, r"^connecting to|reconnecting") == []
    blocked_zh = f"被本页面的内容安全策略（connect-src）阻止：{other}"  # noqa: RUF001 (Chinese punctuation)
    assert log_lines(page, r"^被本页面的内容安全策略") == [blocked_zh]
    assert_no_page_errors(page)


def test_a_server_on_another_host_is_blocked_by_the_page_s_policy_and_the_page_says_so_and_stops(
    browser, serve, tmp_path
):
    page_server = serve()
    # The other server would accept the page (so it is the policy, not the server, that refuses).
    other = serve(f"--store=sqlite:///{tmp_path}/other.db", f"--allowed-origins={page_server.http_url}")
    own, other_host = f"127.0.0.1:{page_server.port}", f"127.0.0.1:{other.port}"
    ctx = browser.new_context(locale="en-US", **POLICY_ENFORCED)
    try:
        page = open_blocked_demo(ctx, page_server.http_url, other_host, token="the-learners-token")
        assert_blocked_and_stopped(page, own, other_host)
        assert not [
            line for line in page.locator("#log .msg").all_text_contents() if "learners-token" in line
        ]
    finally:
        ctx.close()
    assert other.terminate() == 0
    assert "/api/" not in other.log, "the other server was reached"
    assert "session opened" not in page_server.log


def test_a_page_on_localhost_is_blocked_from_127_0_0_1_and_says_so(browser, serve):
    # Two names for one server, but two origins for the browser: the policy
    # names the host the page was loaded from, so the other name is blocked.
    server = serve()
    own, other_host = f"localhost:{server.port}", f"127.0.0.1:{server.port}"
    ctx = browser.new_context(locale="en-US", **POLICY_ENFORCED)
    try:
        page = open_blocked_demo(ctx, f"http://{own}", other_host)  # no token: nothing to tick
        assert_blocked_and_stopped(page, own, other_host)
    finally:
        ctx.close()
    assert "session opened" not in server.log


# The original API document's JavaScript example, unmodified.

# The example connects to ws://localhost:8080, the document's address. This
# test's server listens on a free port instead (8080 may be taken on a shared
# machine, and parallel runs must not collide), so the page maps the
# documented address onto the real one before the example runs -- as a proxy
# or a hosts entry would -- without touching a character of the example.
MAP_DOCUMENTED_ADDRESS = """
(() => {
  const Real = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    return new Real(String(url).replace("ws://localhost:8080", %r), protocols);
  };
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket.prototype = Real.prototype;
})();
"""


def documented_example() -> str:
    with open(API_DOC, encoding="utf-8") as doc:
        text = doc.read()
    (code,) = re.findall(r"#### JavaScript 客户端示例\s+```javascript\n(.*?)```", text, re.S)
    return code


def test_the_api_documents_javascript_example_runs_unmodified(browser, serve):
    code = documented_example()
    assert "ws://localhost:8080/api/study-time?userId=123&courseId=456" in code
    # The document's own intervals: heartbeat every 30 s, timeout 60 s, none sooner than 10 s.
    server = serve("--heartbeat-interval=30", "--heartbeat-timeout=60", "--min-heartbeat-interval=10")
    ctx = browser.new_context(**HARNESS)
    try:
        page = ctx.new_page()
        logged: list[str] = []
        page.on("console", lambda message: logged.append(message.text))
        # A page of the server's own origin (the server accepts same-origin
        # sockets; Chromium's local network checks block sockets to loopback
        # from pages that did not come from it), then the example as written.
        url = f"{server.http_url}/healthz"
        # The example's setInterval(…, 30000) runs on a controllable clock, so
        # its first heartbeat goes out without waiting thirty real seconds.
        page.clock.install()
        page.add_init_script(MAP_DOCUMENTED_ADDRESS % server.url)
        page.goto(url)
        page.add_script_tag(content=code)
        deadline = time.monotonic() + WAIT_MS / 1000
        while "WebSocket连接已建立" not in logged or "当前学习时长: 0秒" not in logged:
            assert time.monotonic() < deadline, logged
            page.wait_for_timeout(50)
        time.sleep(1.5)  # real time for the server to credit
        page.clock.fast_forward(30_000)  # the example's heartbeat timer fires
        pattern = re.compile(r"^当前学习时长: (\d+)秒$")
        while not any(int(m.group(1)) >= 1 for m in map(pattern.match, logged) if m):
            assert time.monotonic() < deadline, logged
            page.wait_for_timeout(50)
        page.close()  # the example's onclose handler, and the server saves the session
    finally:
        ctx.close()


# Screenshots, looked at by a person (and the README's docs/demo.png).


@pytest.mark.parametrize("view", ["counting", "blocked"])
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
@pytest.mark.parametrize(
    "device", [("desktop", {"width": 1280, "height": 860}), ("phone", {"width": 390, "height": 844})]
)
def test_screenshots_of_the_demo_page(browser, serve, device, locale, view):
    """The page counting (test-output/demo-*.png), and blocked by its policy (demo-blocked-*.png)."""
    name, viewport = device
    server = serve()
    # The blocked view is the page under its own policy: page on localhost, server address 127.0.0.1.
    options = HARNESS if view == "counting" else POLICY_ENFORCED
    ctx = browser.new_context(locale=locale, viewport=viewport, is_mobile=name == "phone", **options)
    try:
        if view == "counting":
            page = open_demo(ctx, server, "alice", "math-101")
            wait_status(page, "connected")
            page.wait_for_function("window.studyTimeClient.studyTime >= 2", timeout=WAIT_MS)
            shot = f"demo-{name}-{locale[:2]}.png"
        else:
            page = open_blocked_demo(ctx, f"http://localhost:{server.port}", f"127.0.0.1:{server.port}")
            shot = f"demo-blocked-{name}-{locale[:2]}.png"
        # Nothing sticks out sideways, on a phone either.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        os.makedirs(OUTPUT, exist_ok=True)
        page.screenshot(path=os.path.join(OUTPUT, shot), full_page=True)
        assert_no_page_errors(page)
    finally:
        ctx.close()


def test_the_copy_paste_example_of_docs_client_md_works(context, serve):
    with open(os.path.join(ROOT, "docs", "client.md"), encoding="utf-8") as doc:
        (example,) = re.findall(
            r"## Copy-paste example for a course page\s+```html\n(.*?)```", doc.read(), re.S
        )
    markup, script = re.fullmatch(r"(.*?)<script type=\"module\">(.*)</script>\s*", example, re.S).groups()
    server = serve()
    # Only the documented host is replaced by the test server's.
    script = script.replace("https://study-time.example.edu", server.http_url)
    script = script.replace("wss://study-time.example.edu", server.url)
    page = context.new_page()
    page.goto(f"{server.http_url}/healthz")  # a page of the server's origin, like a course page
    page.evaluate("markup => { document.body.innerHTML = markup; }", markup)
    page.add_script_tag(content=script, type="module")
    page.wait_for_function("document.getElementById('study-status').textContent === 'connected'")
    page.wait_for_function("document.getElementById('study-time').textContent >= '00:00:02'", timeout=WAIT_MS)


# The client's rules on a controlled clock, with a stand-in socket: exact
# delays and values that a real server's timing cannot pin down.

FAKE_SOCKET = """
async () => {
  const { StudyTimeClient } = await import("/study-time-client.js");
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url; this.protocols = protocols ?? null; this.sent = []; this.readyState = 0;
      FakeSocket.made.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code, reason) { this.readyState = 3; this.closedWith = code; }
    // What the server does:
    say(message) { this.readyState = 1; this.onmessage({ data: JSON.stringify(message) }); }
    end(code, reason = "") { this.readyState = 3; this.onclose({ code, reason }); }
  }
  FakeSocket.made = [];
  window.FakeSocket = FakeSocket;
  window.client = new StudyTimeClient({
    url: "ws://study-time.invalid/api/study-time", userId: "u1", courseId: "c1", token: "t&k",
    WebSocket: FakeSocket, initialRetryDelay: 1000, maxRetryDelay: 8000,
  });
  window.client.start();
}
"""


def fake_socket_page(context, server):
    """A page of ``server`` with the client on a FakeSocket, its clock moving only when told."""
    page = context.new_page()
    page.clock.install()
    page.goto(f"{server.http_url}/healthz")
    page.clock.pause_at(datetime.now(UTC) + timedelta(minutes=1))
    page.evaluate(FAKE_SOCKET)
    return page


def test_the_client_backs_off_with_jitter_and_stops_for_good_on_final_closes(context, serve):
    page = fake_socket_page(context, serve())
    # The credential travels as a subprotocol next to study-time.v1, never in the URL (docs/auth.md).
    url, protocols = page.evaluate("[FakeSocket.made[0].url, FakeSocket.made[0].protocols]")
    assert url == "ws://study-time.invalid/api/study-time?userId=u1&courseId=c1"
    assert protocols == ["study-time.v1", "bearer.t&k"]
    delays = []
    for attempt in range(6):
        page.evaluate("FakeSocket.made.at(-1).end(1006)")
        assert page.evaluate("client.status") == "reconnecting"
        delay = page.evaluate("client.retry.delay")
        ceiling = min(8000, 1000 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
        delays.append(delay)
        page.clock.run_for(delay - 1)
        assert page.evaluate("FakeSocket.made.length") == attempt + 1, "reconnected before the delay"
        page.clock.run_for(1)
        assert page.evaluate("FakeSocket.made.length") == attempt + 2
    # An accepted heartbeat resets the backoff; 1001 and 1013 are retried.
    page.evaluate(
        """() => { const ws = FakeSocket.made.at(-1);
          ws.say({type: "connected", status: "success", sessionId: "s", studyTime: 0,
                  heartbeatInterval: 30, heartbeatTimeout: 60}); }"""
    )
    page.clock.run_for(30_000)
    page.evaluate(
        "FakeSocket.made.at(-1).say({type: 'heartbeat_response', status: 'success', studyTime: 30})"
    )
    for code in (1001, 1013):
        page.evaluate(f"FakeSocket.made.at(-1).end({code})")
        assert page.evaluate("client.status") == "reconnecting"
        assert page.evaluate("client.retry.delay") <= 2000
        page.clock.run_for(page.evaluate("client.retry.delay"))
    # 4401, 4403 and 4409 are final: the status says why and nothing reconnects.
    for code, kind in ((4401, "unauthorized"), (4403, "forbidden"), (4409, "replaced")):
        page.evaluate(f"FakeSocket.made.at(-1).say({{type: 'error', code: '{kind}', message: 'why'}})")
        page.evaluate(f"FakeSocket.made.at(-1).end({code})")
        assert page.evaluate("client.status") == "stopped"
        assert page.evaluate("[client.lastClose.kind, client.lastClose.error.code]") == [kind, kind]
        made = page.evaluate("FakeSocket.made.length")
        page.clock.run_for(60_000)
        assert page.evaluate("FakeSocket.made.length") == made
        page.evaluate("client.start()")


CREDENTIAL_TRANSPORT = """
async (token) => {
  const { StudyTimeClient } = await import("/study-time-client.js");
  const made = [];
  class Recorder { constructor(url, protocols) { made.push([url, protocols ?? null]); } close() {} }
  const client = new StudyTimeClient({
    url: "ws://study-time.invalid/api/study-time", userId: "u1", courseId: "c1", token, WebSocket: Recorder,
  });
  client.start();
  client.stop();
  return made[0];
}
"""


def test_the_client_sends_the_credential_as_a_subprotocol_and_only_if_it_cannot_in_the_query(context, serve):
    page = context.new_page()
    page.goto(f"{serve().http_url}/healthz")
    base = "ws://study-time.invalid/api/study-time?userId=u1&courseId=c1"
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl_-"
    assert page.evaluate(CREDENTIAL_TRANSPORT, jwt_like) == [base, ["study-time.v1", f"bearer.{jwt_like}"]]
    # Characters a subprotocol cannot hold (standard base64's / and =, a space): the query, the
    # server's fallback for clients that cannot use the subprotocol.
    assert page.evaluate(CREDENTIAL_TRANSPORT, "a/b=c d") == [f"{base}&token=a%2Fb%3Dc+d", None]
    assert page.evaluate(CREDENTIAL_TRANSPORT, None) == [base, None]


def test_the_display_ticks_between_replies_and_never_runs_backwards(context, serve):
    page = fake_socket_page(context, serve())
    page.evaluate(
        """() => FakeSocket.made[0].say({type: "connected", status: "success", sessionId: "s",
              studyTime: 100, heartbeatInterval: 30, heartbeatTimeout: 60})"""
    )
    assert page.evaluate("client.displayTime") == 100
    page.clock.run_for(5_000)
    assert page.evaluate("client.displayTime") == 105  # ticking between replies
    assert page.evaluate("FakeSocket.made[0].sent.length") == 0
    page.clock.run_for(25_000)
    sent = page.evaluate("FakeSocket.made[0].sent")
    assert len(sent) == 1, "one heartbeat per announced interval"
    assert sent[0]["type"] == "heartbeat"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", sent[0]["timestamp"])
    assert page.evaluate("client.displayTime") == 130
    # A reply below the display: the display holds, then moves on from the reply.
    page.evaluate("FakeSocket.made[0].say({type: 'heartbeat_response', status: 'success', studyTime: 127})")
    assert page.evaluate("client.displayTime") == 130
    page.clock.run_for(2_000)
    assert page.evaluate("client.displayTime") == 130
    page.clock.run_for(2_000)
    assert page.evaluate("client.displayTime") == 131
    # A reply above the display corrects it forward at once.
    page.evaluate("FakeSocket.made[0].say({type: 'heartbeat_response', status: 'success', studyTime: 200})")
    assert page.evaluate("client.displayTime") == 200
    # A refused heartbeat does not make the client send sooner.
    page.evaluate(
        """() => FakeSocket.made[0].say({type: "heartbeat_response", status: "error",
              code: "too_frequent", message: "slow down", studyTime: 200})"""
    )
    page.clock.run_for(25_999)
    assert len(page.evaluate("FakeSocket.made[0].sent")) == 1
    page.clock.run_for(1)
    assert len(page.evaluate("FakeSocket.made[0].sent")) == 2
    # While disconnected the display stops.
    page.evaluate("FakeSocket.made[0].end(1006)")
    stopped_at = page.evaluate("client.displayTime")
    page.clock.run_for(500)
    assert page.evaluate("client.displayTime") == stopped_at


def test_an_idle_client_stops_reconnecting_and_the_next_input_resumes_it(context, serve):
    page = fake_socket_page(context, serve())
    page.evaluate(
        """() => FakeSocket.made[0].say({type: "connected", status: "success", sessionId: "s",
              studyTime: 0, heartbeatInterval: 30, heartbeatTimeout: 60})"""
    )
    # The server goes away; nobody touches the page: the client keeps trying for five minutes...
    page.evaluate("FakeSocket.made[0].end(1006)")
    assert page.evaluate("client.status") == "reconnecting"
    page.clock.run_for(299_000)
    assert page.evaluate("client.status") in ("reconnecting", "connecting")
    assert page.evaluate("FakeSocket.made.length") > 3
    # ...then waits, paused as idle, and tries no more however long it waits
    # (counted once paused: a jittered retry may still fall in the last second).
    page.clock.run_for(1_000)
    assert page.evaluate("[client.status, client.pauseReason, client.retry]") == ["paused", "idle", None]
    tried = page.evaluate("FakeSocket.made.length")
    page.clock.run_for(3_600_000)
    assert page.evaluate("FakeSocket.made.length") == tried
    # A key: it connects at once.
    page.keyboard.press("Shift")
    assert page.evaluate("FakeSocket.made.length") == tried + 1
    assert page.evaluate("[client.status, client.pauseReason]") == ["connecting", None]
    page.evaluate(
        """() => FakeSocket.made.at(-1).say({type: "connected", status: "success", sessionId: "s2",
              studyTime: 0, heartbeatInterval: 30, heartbeatTimeout: 60})"""
    )
    assert page.evaluate("client.status") == "connected"
    # Connected and idle: it closes cleanly (1000, "idle"), so the server credits up to now.
    for _ in range(10):
        page.clock.run_for(30_000)
        page.evaluate(
            "FakeSocket.made.at(-1).say({type: 'heartbeat_response', status: 'success', studyTime: 1})"
        )
    assert len(page.evaluate("FakeSocket.made.at(-1).sent")) == 9, "heartbeats until the pause, none after"
    assert page.evaluate("[FakeSocket.made.at(-1).closedWith, client.lastClose.kind]") == [1000, "idle"]
    assert page.evaluate("client.status") == "paused"


VIOLATION = """([uri, directive]) => document.dispatchEvent(new SecurityPolicyViolationEvent(
  "securitypolicyviolation", {blockedURI: uri, violatedDirective: directive, effectiveDirective: directive,
  originalPolicy: "", disposition: "enforce", statusCode: 200}))"""


def test_a_connection_blocked_by_the_page_s_policy_stops_the_client_whichever_event_comes_first(
    context, serve
):
    page = fake_socket_page(context, serve())
    # Blocks of something else -- another host, or not a connection -- change nothing.
    page.evaluate(VIOLATION, ["ws://elsewhere.invalid/api/study-time", "connect-src"])
    page.evaluate(VIOLATION, ["ws://study-time.invalid/api/study-time", "img-src"])
    page.evaluate(VIOLATION, ["inline", "script-src-elem"])
    assert page.evaluate("client.status") == "connecting"
    # Chromium says "blocked" before the socket fails; here the socket fails first
    # (as a browser may do it), so the client is already waiting to reconnect.
    page.evaluate("FakeSocket.made[0].end(1006)")
    assert page.evaluate("client.status") == "reconnecting"
    page.evaluate(VIOLATION, ["ws://study-time.invalid/api/study-time?userId=u1&token=t", "connect-src"])
    assert page.evaluate("[client.status, client.retry, client.lastClose.kind]") == [
        "stopped",
        None,
        "blocked",
    ]
    page.clock.run_for(60_000)
    assert page.evaluate("FakeSocket.made.length") == 1
    # Started again, it tries once more; blocked with the socket still open, it drops that socket.
    page.evaluate("client.start()")
    page.evaluate(VIOLATION, ["ws://study-time.invalid/api/study-time", "connect-src"])
    assert page.evaluate("client.status") == "stopped"
    page.evaluate("FakeSocket.made[1].onclose?.({code: 1006, reason: ''})")  # a late close changes nothing
    page.clock.run_for(60_000)
    assert page.evaluate("[client.status, FakeSocket.made.length]") == ["stopped", 2]


def test_a_server_address_on_another_host_is_named_and_gets_the_token_only_once_ticked(
    context, serve, tmp_path
):
    # The context bypasses the page's policy (HARNESS): this is how a copy of the
    # page served without it (file://, another static host) behaves.
    page_server = serve()
    # The other host accepts pages of the first (a real cross-host deployment would list it too).
    other = serve(f"--store=sqlite:///{tmp_path}/other.db", f"--allowed-origins={page_server.http_url}")
    other_host = f"127.0.0.1:{other.port}"
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # A crafted link: the learner did not choose this address.
    page.goto(f"{page_server.http_url}/?server={other_host}&userId=u1&courseId=c1")
    warning = page.locator("#cross-host")
    assert warning.is_visible()
    assert other_host in warning.text_content()
    assert "another site" in warning.text_content()
    assert page.text_content("#cross-host-confirm") == f"Send my token to {other_host}"
    assert not page.is_checked("#cross-host-ok")

    page.fill("#token", "the-learners-token")
    page.click("#connect")
    assert page.evaluate("window.studyTimeClient") is None, "a socket was opened with the token"
    assert page.evaluate("document.getElementById('cross-host-ok').validationMessage") == (
        "Tick the box to send your token to the other site, or clear the token."
    )
    # The reports view does not send the token there either.
    page.click("#tab-reports")
    assert page.get_attribute("#reports-state", "data-state") == "confirm"
    page.click("#tab-live")
    # The warning speaks both languages.
    page.click("#lang")
    assert other_host in warning.text_content() and "令牌" in warning.text_content()
    page.click("#lang")

    # A tick trusts that host only: another address unticks it, this page's own hides the warning.
    page.check("#cross-host-ok")
    page.fill("#server", "127.0.0.1:1")
    assert warning.is_visible() and not page.is_checked("#cross-host-ok")
    page.fill("#server", "")
    assert not warning.is_visible()
    page.fill("#server", other_host)
    assert warning.is_visible() and not page.is_checked("#cross-host-ok")

    page.check("#cross-host-ok")
    page.click("#connect")
    wait_status(page, "connected")
    assert page.evaluate("studyTimeClient.url").startswith(f"ws://{other_host}/")
    assert "session opened user=u1 course=c1" in other.log
    assert "session opened" not in page_server.log
    assert_no_page_errors(page)


def test_a_learner_over_the_session_cap_is_told_why_and_gets_in_once_a_course_closes(context, serve):
    server = serve("--max-sessions-per-user=1")
    first = open_demo(context, server, "capped", "c1")
    wait_status(first, "connected")
    second = open_demo(context, server, "capped", "c2", query="&maxRetryDelay=500")
    second.wait_for_function(
        "document.getElementById('reason-text').dataset.kind === 'too_many_sessions'", timeout=WAIT_MS
    )
    assert (
        second.text_content("#reason-text") == "too many courses open at once: close one, trying again later"
    )
    assert second.text_content("#reason-detail").startswith("4430")
    assert second.evaluate("studyTimeClient.lastClose.willReconnect") is True
    first.click("#disconnect")
    wait_status(second, "connected")
    assert_no_page_errors(second)

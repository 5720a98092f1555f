"""The dashboards of the reports view in a real browser, against a real server on seeded records.

A SQLite store is seeded (tests/support/seed.py: a course of 30 learners over
60 days, sessions across midnight in Asia/Shanghai, two more courses), then
``server.py --auth=token`` is started on it. Each reader (a learner's, a
teacher's and an admin's token) opens the page in Chromium with the server's
Content-Security-Policy enforced; what the page shows is compared with the
JSON of the same report request, fetched directly. Needs the report
endpoints of docs/reports.md (whoami, courses, daily-learners, asOf).

Screenshots land in test-output/dashboard-*.png (docs/ has a chosen set).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from reports.cli import duration as human
from tests.support.auth_helpers import create
from tests.support.browser import wait_attached
from tests.support.dashboard_page import (
    DESKTOP,
    FAST_ARGS,
    OUTPUT,
    PHONE,
    ZONE,
    api,
    assert_chart_is_the_api,
    cell_values,
    for_endpoints,
    open_reports,
    series,
    settle,
)
from tests.support.helpers import ServerProcess
from tests.support.seed import COURSE, LEARNERS, OTHER, THIRD, one_course_since


def test_a_learner_sees_their_days_courses_and_sessions_and_nothing_of_the_course_view(browser, school):
    server, tokens = school
    token = tokens["learner"]
    page = open_reports(browser, server, token)
    try:
        settle(page)
        body = page.locator("body").inner_text()
        assert "not authorised" not in body.lower() and "check the token" not in body.lower()
        assert page.is_hidden("#dash-course") and page.is_hidden("#dash-views")
        assert page.text_content("#dash-who") == f"Signed in as {LEARNERS[0]}"
        # The zone is the browser's, and the range the last 7 days in it.
        assert page.input_value("#dash-tz") == ZONE
        url, shown = series(page, "learner-chart")
        assert f"tz={ZONE.replace('/', '%2F')}" in url and len(shown["dates"]) == 7
        assert_chart_is_the_api(page, server, token, "learner-chart")

        # Totals per course.
        courses = api(server, page.get_attribute("#learner-courses", "data-url"), token)["courses"]
        assert [c["courseId"] for c in courses] == page.locator(
            "#learner-courses tbody td:first-child"
        ).all_text_contents()
        assert cell_values(page, "#learner-courses", 1) == [str(c["seconds"]) for c in courses]
        assert page.locator("#learner-courses tbody td.num").first.text_content() == human(
            courses[0]["seconds"]
        )

        # The last 30 days, and one course only.
        page.select_option("#dash-range", "30")
        page.select_option("#learner-course", COURSE)
        settle(page)
        url, shown = series(page, "learner-chart")
        assert len(shown["dates"]) == 30 and f"courseId={COURSE}" in url
        assert_chart_is_the_api(page, server, token, "learner-chart")

        # Picking a day (by keyboard, in the numbers) lists its sessions, as the API does.
        page.click("#dash-learner summary")
        day = next(d for d, s in zip(shown["dates"], shown["seconds"], strict=True) if s > 0)
        button = page.locator(f'#learner-days button[data-focus="learner-day:{day}"]')
        button.focus()
        page.keyboard.press("Enter")
        wait_attached(page, "#learner-sessions:not([hidden]) tbody tr td[data-value]")
        settle(page)
        sessions = api(server, page.get_attribute("#learner-sessions", "data-url"), token)["sessions"]
        assert sessions
        assert cell_values(page, "#learner-sessions", 3) == [str(s["seconds"]) for s in sessions]
        assert cell_values(page, "#learner-sessions", 1) == [s["startedAt"] for s in sessions]

        # A learner's token may not list courses: the page never asked.
        with pytest.raises(urllib.error.HTTPError) as refused:
            api(server, "/api/reports/courses", token)
        assert refused.value.code == 403
        assert page.errors == []
    finally:
        page.context.close()


def test_a_teacher_sees_each_learner_sorts_by_keyboard_downloads_what_is_shown_and_drills_in(browser, school):
    server, tokens = school
    token = tokens["teacher"]
    page = open_reports(browser, server, token)
    try:
        settle(page)
        assert page.is_visible("#dash-course") and page.is_hidden("#dash-learner")
        # Only the course the credential covers.
        assert page.locator("#course-pick option").all_text_contents() == [COURSE]
        assert_chart_is_the_api(page, server, token, "course-chart")

        table = "#course-learners"
        daily = api(server, page.get_attribute(table, "data-url"), token)
        board = {
            row["userId"]: row
            for row in api(server, page.get_attribute(table, "data-board-url"), token)["learners"]
        }
        assert len(daily["learners"]) >= 20
        names = page.locator(f"{table} tbody td:first-child").all_text_contents()
        assert names == [row["userId"] for row in daily["learners"]]
        assert cell_values(page, table, 1) == [str(row["seconds"]) for row in daily["learners"]]
        assert cell_values(page, table, 2) == [
            str(board[row["userId"]]["sessions"]) for row in daily["learners"]
        ]
        assert cell_values(page, table, 4) == [" ".join(map(str, row["days"])) for row in daily["learners"]]

        # Sorting by the keyboard: Tab to the column header, Enter.
        page.locator(f'{table} th button[data-sort="userId"]').focus()
        page.keyboard.press("Enter")  # a first press sorts text A to Z
        assert page.get_attribute(f'{table} th[data-col="learner"]', "aria-sort") == "ascending"
        shown = page.locator(f"{table} tbody td:first-child").all_text_contents()
        assert shown == sorted(names)

        # The CSV is exactly the rows shown, in their order, neutralised like the server's.
        with page.expect_download() as download:
            page.click("#course-csv")
        with open(download.value.path(), encoding="utf-8-sig") as saved:
            rows = list(csv.reader(io.StringIO(saved.read())))
        assert rows[0][:5] == ["Learner", "Time (s)", "Sessions", "Last studied", "open"]
        assert rows[0][5:] == daily["dates"]
        by_user = {row["userId"]: row for row in daily["learners"]}
        assert [r[0] for r in rows[1:]] == shown
        for r in rows[1:]:
            assert int(r[1]) == by_user[r[0]]["seconds"] and [int(x) for x in r[5:]] == by_user[r[0]]["days"]
            assert r[3] == (board[r[0]]["lastStudiedAt"] or "")

        # Drilling into a learner: their days and sessions in the course.
        page.click(f'{table} button[data-focus="learner:{LEARNERS[1]}"]')
        wait_attached(page, "#course-drill:not([hidden]) #drill-chart[data-series]")
        settle(page)
        url, _ = series(page, "drill-chart")
        assert f"userId={LEARNERS[1]}" in url and f"courseId={COURSE}" in url
        assert_chart_is_the_api(page, server, token, "drill-chart")
        assert page.evaluate("document.activeElement.id") == "drill-title"
        assert page.errors == []
    finally:
        page.context.close()


def test_an_admin_picks_any_course_from_the_course_list(browser, school):
    server, tokens = school
    token = tokens["admin"]
    page = open_reports(browser, server, token)
    try:
        settle(page)
        listed = [
            c["courseId"]
            for c in api(server, page.get_attribute("#course-pick", "data-url"), token)["courses"]
        ]
        assert set(listed) == {COURSE, OTHER, THIRD}
        assert page.locator("#course-pick option").all_text_contents() == listed
        page.select_option("#course-pick", OTHER)
        settle(page)
        url, _ = series(page, "course-chart")
        assert f"courseId={OTHER}" in url
        assert_chart_is_the_api(page, server, token, "course-chart")
        assert page.text_content("#course-learners-title") == f"Learners of {OTHER}"
        # The time zone is switchable, and the request follows it.
        page.select_option("#dash-tz", "UTC")
        settle(page)
        url, _ = series(page, "course-chart")
        assert "tz=UTC" in url
        assert_chart_is_the_api(page, server, token, "course-chart")
        assert page.errors == []
    finally:
        page.context.close()


def pick_today(page) -> None:
    page.click("#dash-learner summary")
    today = page.evaluate("JSON.parse(document.getElementById('learner-chart').dataset.series).dates.at(-1)")
    page.click(f'#learner-days button[data-focus="learner-day:{today}"]')
    wait_attached(page, "#learner-sessions:not([hidden]) tbody td")
    settle(page)


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_a_session_that_ends_is_in_the_dashboard_within_two_seconds(browser, school, locale):
    """Issue 21, item 7: with checkpoints 30 s apart and nobody pressing Refresh, a session ended in
    one tab is in the dashboard open in another within 2 s of its socket closing (the long poll)."""
    server, tokens = school
    board = open_reports(browser, server, tokens["learner"], locale=locale)
    live = open_reports(browser, server, tokens["learner"], locale=locale, query=f"&userId={LEARNERS[0]}")
    try:
        pick_today(board)
        rows = board.locator("#learner-sessions tbody tr")
        before = rows.count()
        live.click("#tab-live")
        live.click("#connect")
        wait_attached(live, '#status[data-status="connected"]')
        ok = "heartbeat ok" if locale == "en-US" else "心跳成功"
        live.locator("#log .msg", has_text=ok).nth(1).wait_for()
        live.click("#disconnect")
        ended = time.monotonic()
        wait_attached(
            board, f"#learner-sessions tbody tr:nth-child({before + 1}) td[data-value]", timeout=2500
        )
        assert time.monotonic() - ended < 2.5
        settle(board)
        assert rows.count() == before + 1, "the ended session is not in the dashboard"
        words = "closed by the learner" if locale == "en-US" else "学员关闭"
        assert rows.last.locator("td").last.text_content() == words
        assert board.errors == [] and live.errors == []
    finally:
        board.context.close()
        live.context.close()


# A learner's pause, as the browser client makes it: idle after ?idle= seconds without input, or the
# page hidden (what the browser does when a tab goes to the background; see tests/test_browser.py).
PAUSES = {
    "idle": ("&idle=1", None),
    "page_hidden": (
        "",
        """() => {
          Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
    ),
}
PAUSE_WORDS = {
    ("idle", "en-US"): "paused: no activity",
    ("idle", "zh-CN"): "暂停：无操作",  # noqa: RUF001 (Chinese punctuation)
    ("page_hidden", "en-US"): "paused: page hidden",
    ("page_hidden", "zh-CN"): "暂停：页面隐藏",  # noqa: RUF001 (Chinese punctuation)
}


@pytest.mark.parametrize("pause", ["idle", "page_hidden"])
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_a_session_the_client_paused_says_why_in_the_sessions_of_the_day(browser, school, locale, pause):
    """Issue 23, item 3: the client's pause (idle, a hidden page) is the session's end reason, in words."""
    server, tokens = school
    query, hide = PAUSES[pause]
    board = open_reports(browser, server, tokens["learner"], locale=locale)
    live = open_reports(
        browser, server, tokens["learner"], locale=locale, query=f"&userId={LEARNERS[0]}{query}"
    )
    try:
        pick_today(board)
        rows = board.locator("#learner-sessions tbody tr")
        before = rows.count()
        live.click("#tab-live")
        live.click("#connect")
        wait_attached(live, '#status[data-status="connected"]')
        if hide:
            live.evaluate(hide)
        wait_attached(live, f'#paused[data-reason="{pause.removeprefix("page_")}"]')
        assert live.get_attribute("#reason-text", "data-kind") == pause
        wait_attached(board, f"#learner-sessions tbody tr:nth-child({before + 1}) td[data-value]")
        settle(board)
        ended = rows.last.locator("td").last
        assert (ended.get_attribute("data-value"), ended.text_content()) == (
            pause,
            PAUSE_WORDS[pause, locale],
        )
        sessions = api(server, board.get_attribute("#learner-sessions", "data-url"), tokens["learner"])
        assert sessions["sessions"][-1]["endReason"] == pause
        assert board.errors == [] and live.errors == []
    finally:
        board.context.close()
        live.context.close()


ONE_COURSE_ALL = {
    "en-US": "Time counted one course at a time: courses open together share the time.",
    "zh-CN": "每次只计一门课程：同时打开的课程分享时长。",  # noqa: RUF001 (Chinese punctuation)
}
ONE_COURSE_SINCE = {
    "en-US": re.compile(
        r"Time counted one course at a time from (.+, 09:30);"
        r" otherwise each open course counted its own time\."
    ),
    "zh-CN": re.compile(r"自 (.+ 09:30) 起每次只计一门课程，其余时间各门课程分别计时。"),  # noqa: RUF001
}


def assert_policy_line(page, server, token, chart: str, locale: str, *, whole: bool) -> str:
    """The line under ``chart`` says what the daily answer's overlapPolicy says; return its text."""
    prefix = chart.removesuffix("-chart")
    url, _ = series(page, chart)
    periods = api(server, url, token)["overlapPolicy"]
    note = page.locator(f"#{prefix}-policy")
    assert json.loads(note.get_attribute("data-policy")) == periods
    assert note.is_visible()
    text = note.text_content()
    if whole:
        assert [p["policy"] for p in periods] == ["one-course"]
        assert text == ONE_COURSE_ALL[locale]
    else:
        assert [p["policy"] for p in periods] == ["each-course", "one-course"]
        found = ONE_COURSE_SINCE[locale].fullmatch(text)
        assert found, text
        # The change's date, as the page words dates: the day one_course_since() names.
        day = page.evaluate(
            "([iso, lang]) => new Intl.DateTimeFormat(lang, {timeZone: 'Asia/Shanghai', month: 'short',"
            " day: 'numeric'}).format(new Date(iso))",
            [periods[1]["from"], locale],
        )
        assert day in found.group(1), (day, text)
        assert (
            periods[1]["from"]
            == datetime.fromtimestamp(one_course_since(time.time()), ZoneInfo(ZONE)).isoformat()
        )
    return text


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_the_dashboards_say_when_time_was_counted_one_course_at_a_time(browser, school, locale):
    """Issue 23, item 3: the daily answer's overlapPolicy under each chart of days, in the page's language."""
    server, tokens = school
    board = open_reports(browser, server, tokens["learner"], locale=locale)
    try:
        settle(board)
        # The last 7 days were all recorded under one-course; the last 30 began under each-course.
        assert_policy_line(board, server, tokens["learner"], "learner-chart", locale, whole=True)
        board.select_option("#dash-range", "30")
        settle(board)
        assert_policy_line(board, server, tokens["learner"], "learner-chart", locale, whole=False)
        # A range before the change: the default needs no line.
        board.select_option("#dash-range", "custom")
        board.fill("#dash-from", "2020-01-01")
        board.fill("#dash-to", "2020-01-31")
        board.dispatch_event("#dash-to", "change")
        settle(board)
        assert board.is_hidden("#learner-policy")
        assert json.loads(board.get_attribute("#learner-policy", "data-policy"))[0]["policy"] == "each-course"
        assert board.errors == []
    finally:
        board.context.close()
    teacher = open_reports(browser, server, tokens["teacher"], locale=locale)
    try:
        settle(teacher)
        assert_policy_line(teacher, server, tokens["teacher"], "course-chart", locale, whole=True)
        teacher.select_option("#dash-range", "30")
        settle(teacher)
        assert_policy_line(teacher, server, tokens["teacher"], "course-chart", locale, whole=False)
        teacher.click(f'#course-learners button[data-focus="learner:{LEARNERS[1]}"]')
        wait_attached(teacher, "#course-drill:not([hidden]) #drill-chart[data-series]")
        settle(teacher)
        assert_policy_line(teacher, server, tokens["teacher"], "drill-chart", locale, whole=False)
        assert teacher.errors == []
    finally:
        teacher.context.close()


def test_an_open_session_is_shown_open_with_the_time_of_the_figure(browser, tmp_path):
    path = tmp_path / "tokens.json"
    token = create(path, "--user", "amy")
    args = (*FAST_ARGS, "--flush-interval=0.2", f"--store=sqlite:///{tmp_path}/db", "--auth=token")
    with ServerProcess(*args, f"--tokens-file={path}") as server:
        for_endpoints(server, token)
        page = open_reports(browser, server, token, query="&userId=amy")
        try:
            page.click("#tab-live")
            page.click("#connect")
            page.locator("#log .msg", has_text="heartbeat ok").nth(2).wait_for()
            page.click("#tab-reports")
            settle(page)
            deadline = time.monotonic() + 10
            while "open" not in page.inner_text("#learner-courses") and time.monotonic() < deadline:
                page.click("#refresh")
                settle(page)
            pick_today(page)
            # Read at once: the view refreshes itself meanwhile.
            as_of, shown, courses, sessions = page.evaluate(
                """() => [document.getElementById("dash-asof").dataset.asof,
                          document.getElementById("dash-asof").textContent,
                          document.getElementById("learner-courses").innerText,
                          document.getElementById("learner-sessions").innerText]"""
            )
            clock = as_of[11:19]  # the server's instant in the browser's zone (both Asia/Shanghai)
            assert shown == f"as of {clock}"
            assert f"open, as of {clock}" in courses
            assert f"open, as of {clock}" in sessions
            assert page.locator("#learner-sessions tbody td").last.text_content() == "open"
            assert page.errors == []
        finally:
            page.context.close()


# English words of the page's UI: none may remain on the Chinese page.
ENGLISH = re.compile(
    r"\b(study|time|course|courses|learner|learners|sessions?|last|studied|refresh|range|days?|download|show|"
    r"numbers|pick|open|total|connect|connected|heartbeat|reconnecting|closed|sign|signed|min|from|to|zone|"
    r"updates|visible|per|log|clear|server|token|pause|cumulative|not|ok)\b",
    re.I,
)
VISIBLE_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    const text = node.textContent.trim();
    if (!el || !text || el.closest("[hidden], code, #lang, select#dash-tz, option")) continue;
    const details = el.closest("details");
    if (!details || details.open || el.tagName === "SUMMARY") out.push(text);
  }
  for (const el of document.querySelectorAll("[aria-label], [placeholder]")) {
    out.push(el.getAttribute("aria-label") || el.getAttribute("placeholder"));
  }
  for (const el of document.querySelectorAll("option")) if (!el.closest("#dash-tz")) out.push(el.textContent);
  out.push(document.title);
  return out;
}"""


def english_left(page) -> list[str]:
    ids = {COURSE, OTHER, THIRD, *LEARNERS, "teacher1", "head", "study-time", "CSV", "JSON"}
    found = []
    for text in page.evaluate(VISIBLE_TEXT):
        words = text
        for name in ids:
            words = words.replace(name, "")
        words = re.sub(r"(ws|http)s?://\S+", "", words)
        if ENGLISH.search(words):
            found.append(text)
    return found


@pytest.mark.parametrize("reader", ["learner", "teacher"])
def test_the_chinese_page_has_no_english_left_live_log_included(browser, school, reader):
    server, tokens = school
    page = open_reports(browser, server, tokens[reader], locale="zh-CN")
    try:
        settle(page)
        if reader == "teacher":
            page.click(f'#course-learners button[data-focus="learner:{LEARNERS[0]}"]')
            wait_attached(page, "#course-drill:not([hidden]) #drill-chart[data-series]")
        for summary in page.locator("#view-reports summary:visible").all():
            summary.click()
        settle(page)
        assert english_left(page) == []
        assert "截至" in page.text_content("#dash-asof")
        # The live view's log, and a refusal from the server, in Chinese too.
        page.click("#tab-live")
        page.fill("#userId", LEARNERS[0] if reader == "learner" else "someone-else")
        page.click("#connect")
        if reader == "learner":
            page.locator("#log .msg", has_text="心跳成功").first.wait_for()
            page.click("#disconnect")
            page.locator("#log .msg", has_text="连接关闭").first.wait_for()
        else:  # the teacher's token may not study as another user: 4403
            wait_attached(page, '#status[data-status="stopped"]')
            assert page.text_content("#reason-detail") == "4403 · 此凭据不包含该用户或课程"
        assert english_left(page) == []
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("reader", ["learner", "teacher"])
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_screenshots_of_the_dashboards(browser, school, reader, locale, device):
    """test-output/dashboard-READER-LANG-DEVICE.png; nothing sticks out sideways, no column is cut off."""
    server, tokens = school
    viewport = PHONE if device == "phone" else DESKTOP
    page = open_reports(browser, server, tokens[reader], locale=locale, viewport=viewport)
    try:
        if reader == "learner":
            page.select_option("#dash-range", "30")
            settle(page)
            _, shown = series(page, "learner-chart")
            day = [d for d, s in zip(shown["dates"], shown["seconds"], strict=True) if s > 0][-2]
            page.click("#dash-learner summary")
            page.click(f'#learner-days button[data-focus="learner-day:{day}"]')
            page.click("#dash-learner summary")
            wait_attached(page, "#learner-sessions:not([hidden]) tbody td[data-value]")
        settle(page)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # Every cell of every table is inside the card that holds it (no cut-off "Last studied").
        cut = page.evaluate("""() => [...document.querySelectorAll('#view-reports td')]
            .filter(td => td.offsetParent && td.getBoundingClientRect().right >
                          td.closest('.card').getBoundingClientRect().right + 1)
            .map(td => td.textContent)""")
        assert cut == []
        os.makedirs(OUTPUT, exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        # A phone's teacher view is the first screen (30 learners make a very long page).
        whole = not (device == "phone" and reader == "teacher")
        page.screenshot(
            path=os.path.join(OUTPUT, f"dashboard-{reader}-{locale[:2]}-{device}.png"), full_page=whole
        )
        assert page.errors == []
    finally:
        page.context.close()

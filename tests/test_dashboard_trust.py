"""Issue 21: the dashboards a teacher can trust at a glance, in Chromium, in English and Chinese.

Each test is one item of the issue: the first press of a column header,
one rounding (a day's seconds do not depend on the range, a day's learners
add up to the course's total), one duration format with exact seconds, one
sparkline scale, sessions counted until their credit stopped, dates in the
browser's locale with the zone named, an ended session shown within 2 s
without polling, every role on a page of its own data, the token remembered
per tab, nothing overflowing a phone, and titles that say what a page is.
The seeded server is tests/support/dashboard_page.py's ``school``.
"""

# ruff: noqa: RUF001, RUF003 (the Chinese page's words have full-width punctuation)
from __future__ import annotations

import math
import os
import re

import pytest

from reports.cli import duration
from tests.support.browser import wait_attached
from tests.support.dashboard_page import (
    OUTPUT,
    PHONE,
    ZONE,
    api,
    open_reports,
    series,
    settle,
)

LOCALES = ["en-US", "zh-CN"]


def pick_day(page, prefix: str, day: str) -> None:
    if not page.locator(f"#{prefix}-days").is_visible():
        page.click(
            f"#dash-{'learner' if prefix == 'learner' else 'course'} #{prefix}-chart ~ details summary"
        )
    page.click(f'#{prefix}-days button[data-focus="{prefix}-day:{day}"]')
    settle(page)


def studied_days(page, chart: str) -> list[str]:
    _, shown = series(page, chart)
    return [d for d, s in zip(shown["dates"], shown["seconds"], strict=True) if s > 0]


@pytest.mark.parametrize("locale", LOCALES)
def test_1_a_first_press_sorts_text_a_to_z_and_numbers_largest_first(browser, school, locale):
    server, tokens = school
    page = open_reports(browser, server, tokens["teacher"], locale=locale)
    try:
        settle(page)
        table = "#course-learners"

        def column(n: int) -> list[str]:
            return page.locator(f"{table} tbody tr").evaluate_all(
                f"rows => rows.map(r => r.cells[{n}].dataset.value)"
            )

        for key, col, n, first in [
            ("userId", "learner", 0, "ascending"),
            ("sessions", "sessions", 2, "descending"),
            ("lastStudiedAt", "last", 3, "descending"),
            ("seconds", "time", 1, "descending"),
        ]:
            page.click(f'{table} th button[data-sort="{key}"]')
            assert page.get_attribute(f'{table} th[data-col="{col}"]', "aria-sort") == first, key
            values = column(n) if n else page.locator(f"{table} tbody td:first-child").all_text_contents()
            typed = [int(v) for v in values] if key in ("sessions", "seconds") else values
            assert typed == sorted(typed, reverse=first == "descending"), key
        page.click(f'{table} th button[data-sort="seconds"]')  # the same column again: turned round
        assert page.get_attribute(f'{table} th[data-col="time"]', "aria-sort") == "ascending"
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_2_a_day_shows_the_same_seconds_in_any_range_and_its_learners_add_up_to_the_course(
    browser, school, locale
):
    server, tokens = school
    page = open_reports(browser, server, tokens["learner"], locale=locale)
    try:
        settle(page)
        _, week = series(page, "learner-chart")
        page.select_option("#dash-range", "30")
        settle(page)
        _, month = series(page, "learner-chart")
        by_day = dict(zip(month["dates"], month["seconds"], strict=True))
        assert {d: s for d, s in zip(week["dates"], week["seconds"], strict=True)} == {
            d: by_day[d] for d in week["dates"]
        }
        # A learner in several courses: the courses' Total is the all-courses total of the chart.
        total = page.locator("#learner-courses tfoot td.num").first
        assert float(total.get_attribute("data-exact")) == pytest.approx(month["totalExact"], abs=1e-5)
        # A session across midnight counts on each day for its part of it: the page says so.
        for day in reversed(studied_days(page, "learner-chart")):
            pick_day(page, "learner", day)
            url = page.get_attribute("#learner-sessions", "data-url")
            sessions = api(server, url, tokens["learner"])["sessions"]
            across = [s for s in sessions if s["startedAt"][:10] != day or s["creditedUntil"][:10] != day]
            assert page.locator("#learner-sessions-note").is_visible() == bool(across), day
            if across:
                exact = month["exact"][month["dates"].index(day)]
                assert sum(s["secondsExact"] for s in sessions) > exact + 1
                break
        else:
            pytest.fail("no session across midnight in the seed's last 30 days")
    finally:
        page.context.close()
    page = open_reports(browser, server, tokens["admin"], locale=locale)
    try:
        page.select_option("#dash-range", "30")
        settle(page)
        url, _ = series(page, "course-chart")
        daily = api(server, url, tokens["admin"])
        for day in studied_days(page, "course-chart")[-3:]:
            pick_day(page, "course", day)
            cells = page.locator("#course-day-learners tbody td.num").evaluate_all(
                "cells => cells.map(c => [Number(c.dataset.value), Number(c.dataset.exact)])"
            )
            total = page.locator("#course-day-learners tfoot td.num")
            exact = next(d["secondsExact"] for d in daily["days"] if d["date"] == day)
            # The learners' exact seconds add up to the course's day in the daily report...
            assert sum(e for _, e in cells) == pytest.approx(exact, abs=1e-5)
            assert float(total.get_attribute("data-exact")) == pytest.approx(exact, abs=1e-6)
            # ...each rounded once; and the page says so when the rounded rows fall short of the total.
            assert [v for v, e in cells] == [math.floor(e) for _, e in cells]
            assert int(total.get_attribute("data-value")) == math.floor(exact)
            note = page.locator("#course-day-rounding")
            assert note.is_visible() == (sum(v for v, _ in cells) != math.floor(exact)), day
        # The learners table: its Total row is the course's total, rounded once.
        foot = page.locator("#course-learners tfoot td.num").first
        assert float(foot.get_attribute("data-exact")) == pytest.approx(daily["secondsExact"], abs=1e-6)
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_3_every_duration_keeps_its_seconds_with_the_exact_value_in_its_tooltip(browser, school, locale):
    server, tokens = school
    page = open_reports(browser, server, tokens["teacher"], locale=locale)
    try:
        settle(page)
        cells = page.locator("#view-reports td.num[data-exact]").evaluate_all(
            "cells => cells.map(c => [c.textContent, Number(c.dataset.value), c.dataset.exact, c.title])"
        )
        assert any(value >= 3600 for _, value, _, _ in cells)
        for text, value, exact, title in cells:
            if locale == "en-US":
                assert text == duration(value)
            else:
                assert re.fullmatch(r"(\d+小时\d\d分\d\d秒|\d+分\d\d秒|\d+秒)", text), text
            assert math.floor(float(exact)) == value
            assert str(float(exact)).rstrip("0").rstrip(".") in title
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_4_sparklines_share_one_scale(browser, school, locale):
    server, tokens = school
    page = open_reports(browser, server, tokens["teacher"], locale=locale)
    try:
        settle(page)
        lines = page.locator("#course-learners .sparkline").evaluate_all(
            "boxes => boxes.map(b => [b.dataset.days.split(' ').map(Number), Number(b.dataset.max)])"
        )
        most = max(max(days) for days, _ in lines)
        assert len(lines) >= 20 and {scale for _, scale in lines} == {most}
        scale = page.text_content("#course-spark-scale")
        if locale == "en-US":
            assert duration(most) in scale
        else:
            h, m, s = most // 3600, most % 3600 // 60, most % 60
            assert (f"{h}小时{m:02d}分{s:02d}秒" if h else f"{m}分{s:02d}秒") in scale
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_5_a_timed_out_session_is_counted_until_its_credit_stopped(browser, school, locale):
    server, tokens = school
    token = tokens["learner"]
    page = open_reports(browser, server, token, locale=locale)
    try:
        page.select_option("#dash-range", "30")
        settle(page)
        for day in reversed(studied_days(page, "learner-chart")):
            pick_day(page, "learner", day)
            sessions = api(server, page.get_attribute("#learner-sessions", "data-url"), token)["sessions"]
            if any(s["endReason"] == "timeout" for s in sessions):
                break
        else:
            pytest.fail("no timed-out session in the seed's last 30 days")
        rows = page.locator("#learner-sessions tbody tr")
        for i, s in enumerate(sessions):
            end = rows.nth(i).locator("td").nth(2)
            assert end.get_attribute("data-value") == s["creditedUntil"]
            if s["endReason"] == "timeout":
                assert s["endedAt"] > s["creditedUntil"]
                words = rows.nth(i).locator("td").nth(4).text_content()
                assert words == (
                    "timed out (no heartbeat: counted until the last one)"
                    if locale == "en-US"
                    else "心跳超时（计时止于最后一次心跳）"
                )
                assert end.text_content() == s["creditedUntil"][11:16]
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", ["en-US", "en-GB", "zh-CN"])
def test_6_dates_follow_the_browsers_locale_with_the_zone_named(browser, school, locale):
    server, tokens = school
    page = open_reports(browser, server, tokens["learner"], locale=locale)
    try:
        settle(page)
        page.click("#dash-learner summary")
        label = page.locator("#learner-days tbody td").first.text_content()
        pattern = {
            "en-US": r"[A-Z][a-z]{2}, [A-Z][a-z]{2} \d{1,2}",  # Mon, Nov 30
            "en-GB": r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}",  # Mon 30 Nov
            "zh-CN": r"\d{1,2}月\d{1,2}日周.",
        }[locale]
        assert re.fullmatch(pattern, label), label
        zone = page.locator("#view-reports [data-zone]").first
        assert zone.get_attribute("data-zone") == ZONE and ZONE in zone.text_content()
        chosen = page.locator("#dash-tz option:checked").text_content()
        assert ZONE in chosen
        if locale == "zh-CN":
            assert re.search(r"[\u4e00-\u9fff]", chosen), chosen  # 中国标准时间（Asia/Shanghai）
            assert re.search(r"[\u4e00-\u9fff]", zone.text_content())
    finally:
        page.context.close()


ROLES = ["learner", "limited-learner", "teacher", "any-teacher", "admin", "limited-admin"]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("reader", ROLES)
def test_8_every_role_lands_on_its_own_data_on_every_page(browser, school, reader, locale):
    server, tokens = school
    token = tokens[reader]
    who = api(server, "/api/reports/whoami", token)
    page = open_reports(browser, server, token, locale=locale)
    try:
        settle(page)
        views = ["learner", "course"] if page.is_visible("#dash-views") else [None]
        if reader in ("teacher", "any-teacher", "admin", "limited-admin"):
            assert views == ["learner", "course"], reader
        for view in views:
            if view:
                page.click(f"#dash-view-{view}")
                settle(page)
            assert page.get_attribute("#view-reports", "data-state") == "ok", page.text_content(
                "#reports-state"
            )
            if view in ("learner", None):
                url, _ = series(page, "learner-chart")
                assert f"userId={who['userId']}" in url  # the reader's own study
                assert api(server, url, token)["userId"] == who["userId"]
                if who["courses"]:
                    options = page.locator("#learner-course option").evaluate_all("o => o.map(x => x.value)")
                    assert options == who["courses"]
            else:
                url, _ = series(page, "course-chart")
                assert api(server, url, token)["courseId"]
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_9_the_token_is_remembered_for_the_tab_until_forgotten_and_an_empty_one_is_named(
    browser, school, locale
):
    from tests.support.browser import POLICY_ENFORCED, WAIT_MS

    server, tokens = school
    context = browser.new_context(locale=locale, timezone_id=ZONE, **POLICY_ENFORCED)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{server.http_url}/")
        page.click("#tab-reports")
        wait_attached(page, '#view-reports[data-state="need_token"]')
        words = page.text_content("#reports-state")
        assert words == (
            "Enter your token on the Live tab to see the reports."
            if locale == "en-US"
            else "请先在“实时”页填写令牌，才能查看报表。"
        )
        page.click("#tab-live")
        assert page.is_hidden("#token-memory")
        page.fill("#token", tokens["learner"])
        assert page.is_visible("#forget-token")
        page.reload()
        assert page.input_value("#token") == tokens["learner"]
        page.click("#tab-reports")
        wait_attached(page, '#view-reports[data-state="ok"]')
        page.click("#tab-live")
        page.click("#forget-token")
        assert page.input_value("#token") == ""
        assert page.evaluate("sessionStorage.length") == 0
        page.reload()
        assert page.input_value("#token") == ""
    finally:
        context.close()


PAGES = ["live", "learner", "teacher"]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("which", PAGES)
def test_10_every_page_fits_a_phone(browser, school, which, locale):
    server, tokens = school
    page = open_reports(
        browser, server, tokens["teacher" if which == "teacher" else "learner"], locale=locale, viewport=PHONE
    )
    try:
        settle(page)
        if which == "live":
            page.click("#tab-live")
        else:
            if which == "learner":
                pick_day(page, "learner", studied_days(page, "learner-chart")[-1])
            else:
                pick_day(page, "course", studied_days(page, "course-chart")[-1])
            for summary in page.locator("#view-reports details:not([open]) summary:visible").all():
                summary.click()
            settle(page)
        assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
        outside = page.evaluate("""() => [...document.querySelectorAll('.card, details, .table-wrap, table')]
            .filter(el => el.offsetParent)
            .map(el => [el.id || el.className || el.tagName, el.getBoundingClientRect()])
            .filter(([, r]) => r.left < -0.5 || r.right > innerWidth + 0.5)
            .map(([name, r]) => `${name}: ${r.left}..${r.right}`)""")
        assert outside == []
        # Nor is anything cut off inside a panel: no panel hides part of its content in a scroll box.
        clipped = page.evaluate("""() => [...document.querySelectorAll('.card, details, .table-wrap')]
            .filter(el => el.offsetParent)
            .filter(el => el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)
            .map(el => [el.id || el.className, el.scrollHeight, el.clientHeight])""")
        assert clipped == []
        os.makedirs(OUTPUT, exist_ok=True)
        page.screenshot(path=os.path.join(OUTPUT, f"phone-{which}-{locale[:2]}.png"), full_page=True)
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
def test_11_each_page_has_a_title_that_says_what_it_is(browser, school, locale):
    server, tokens = school
    page = open_reports(browser, server, tokens["learner"], locale=locale)
    try:
        reports = {"en-US": "Study time reports", "zh-CN": "学习时长报表"}[locale]
        live = {"en-US": "Study time: live demo", "zh-CN": "学习时长：实时演示"}[locale]
        assert page.title() == reports and page.text_content("#page-title") == reports
        assert "demo" not in page.text_content("#page-subtitle").lower()
        page.click("#tab-live")
        assert page.title() == live
    finally:
        page.context.close()

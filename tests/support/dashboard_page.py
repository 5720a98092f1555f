"""The dashboards' browser tests share these: a seeded server with a token per reader, and the page.

``school`` (a module-scoped fixture: import it into the test module) seeds a
SQLite store (tests/support/seed.py) and starts ``server.py --auth=token`` on
it with a token per reader. ``open_reports`` opens the demo page's Reports tab
in Chromium with the server's Content-Security-Policy enforced.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request

import pytest

from tests.support.auth_helpers import create
from tests.support.browser import POLICY_ENFORCED, WAIT_MS, wait_attached
from tests.support.helpers import ROOT, ServerProcess
from tests.support.seed import COURSE, LEARNERS, seed

OUTPUT = os.path.join(ROOT, "test-output")
FAST_ARGS = (
    "--heartbeat-interval=0.5",
    "--heartbeat-timeout=5",
    "--min-heartbeat-interval=0.25",
    "--sweep-interval=0.1",
    "--flush-interval=30",  # long: an ended session must reach the reports without waiting for it
    "--checkpoint-interval=0",
    "--flood-rate=0",
    "--report-timezone=Asia/Shanghai",
)
ZONE = "Asia/Shanghai"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def school(tmp_path_factory):
    """The seeded server and a token per reader: ``(server, tokens)``."""
    folder = tmp_path_factory.mktemp("school")
    db = str(folder / "study_time.db")
    seed(db)
    path = folder / "tokens.json"
    tokens = readers(path)
    # The policy the seeded store logged last, so that the server logs no change of its own.
    with ServerProcess(
        *FAST_ARGS,
        f"--store=sqlite:///{db}",
        "--auth=token",
        f"--tokens-file={path}",
        "--overlap-policy=one-course",
    ) as server:
        for_endpoints(server, tokens["admin"])
        yield server, tokens


def readers(path) -> dict[str, str]:
    """A token per reader: a learner, the documented teacher (limited to a course), an admin, and the
    other roles with and without a course limitation."""
    return {
        "learner": create(path, "--user", LEARNERS[0]),
        "teacher": create(path, "--user", "teacher1", "--roles", "teacher", "--courses", COURSE),
        "admin": create(path, "--user", "head", "--roles", "admin"),
        "limited-learner": create(path, "--user", LEARNERS[2], "--courses", COURSE),
        "any-teacher": create(path, "--user", "teacher2", "--roles", "teacher"),
        "limited-admin": create(path, "--user", "head2", "--roles", "admin", "--courses", COURSE),
    }


def for_endpoints(server, token) -> None:
    try:
        api(server, "/api/reports/whoami", token)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            pytest.skip("needs the report endpoints of issue 13 (/api/reports/whoami ...)")
        raise


def api(server, path: str, token: str) -> dict:
    request = urllib.request.Request(
        server.http_url + path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)


def open_reports(browser, server, token: str, *, locale="en-US", viewport=DESKTOP, query=""):
    """The demo page with ``token`` typed in, on the Reports tab, under the server's policy."""
    context = browser.new_context(
        locale=locale,
        viewport=viewport,
        is_mobile=viewport is PHONE,
        timezone_id=ZONE,
        accept_downloads=True,
        **POLICY_ENFORCED,
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda m: page.errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{server.http_url}/?courseId={COURSE}{query}")
    page.fill("#token", token)
    page.click("#tab-reports")
    wait_ok(page)
    return page


def wait_ok(page) -> None:
    wait_attached(page, '#view-reports[data-state="ok"]')


def settle(page) -> None:
    """Wait until the newest refresh of the view has drawn what it loaded."""
    wait_attached(page, '#view-reports[data-busy="0"]')


def series(page, chart: str) -> tuple[str, dict]:
    box = page.locator(f"#{chart}")
    return box.get_attribute("data-url"), json.loads(box.get_attribute("data-series"))


def assert_chart_is_the_api(page, server, token, chart: str) -> dict:
    url, shown = series(page, chart)
    answer = api(server, url, token)
    by_day = {d["date"]: d["secondsExact"] for d in answer["days"]}
    assert set(by_day) <= set(shown["dates"]), (by_day, shown["dates"])
    # Each day is its exact seconds rounded down once, where it is shown; the total likewise.
    assert shown["exact"] == [by_day.get(d, 0) for d in shown["dates"]]
    assert shown["seconds"] == [math.floor(by_day.get(d, 0)) for d in shown["dates"]]
    assert shown["total"] == math.floor(answer["secondsExact"])
    assert sum(shown["exact"]) == pytest.approx(answer["secondsExact"], abs=1e-5)
    # The text alternative: the same numbers in the table of the chart.
    table = chart.replace("-chart", "-days")
    values = page.locator(f"#{table} tbody td.num").evaluate_all(
        "cells => cells.map(c => Number(c.dataset.value))"
    )
    assert values == shown["seconds"]
    assert page.locator(f"#{chart}").get_attribute("aria-describedby")
    return answer


def cell_values(page, selector: str, column: int) -> list[str]:
    return page.locator(f"{selector} tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{column}] && r.cells[{column}].dataset.value)"
    )

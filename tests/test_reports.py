"""Reports through a real server and a real store: totals agree, CSV, errors, the query plans, the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest

from reports.params import Window
from reports.source import Scope
from reports.split import in_window
from storage.backends import backend_for
from tests.support.helpers import Client, run_server, wait_for
from tests.support.records import MIDNIGHT, rec
from tests.support.reports import body, get

# Sessions of u1 in c1 around midnight in Shanghai (UTC+8), with fractions.
HISTORY = [
    rec(start=MIDNIGHT - 3600, seconds=9000.5),  # 23:00 -> 01:30:00.5, across midnight
    rec(start=MIDNIGHT - 7200, seconds=1800.25),  # 22:00 -> 22:30 on Jan 31
    rec(start=MIDNIGHT + 86400 - 600, seconds=1800.125, ended=False),  # open, across the next midnight
    rec(start=MIDNIGHT + 5 * 3600, seconds=0.75),
    rec("u2", "c1", start=MIDNIGHT - 60, seconds=120.0),
    rec("u1", "c2", start=MIDNIGHT - 60, seconds=30.0),
]


@pytest.mark.gen_test(timeout=30)
async def test_daily_rows_learner_totals_and_the_socket_agree(start_service):
    service = await start_service(report_timezone="Asia/Shanghai")
    await service.store.save(HISTORY)  # after start-up, so the open session stays open
    first = await Client.connect(service.url, "u1", "c1")
    await first.connected()
    await first.heartbeat()
    await first.close()
    await wait_for(lambda: service.writer.unsaved == 0, timeout=10, message="flush")
    again = await Client.connect(service.url, "u1", "c1")
    study_time = (await again.connected())["studyTime"]
    await again.close()
    await wait_for(lambda: service.writer.unsaved == 0, timeout=10, message="flush")

    learner = body(await get(service, "/api/reports/learners/u1/courses"))
    (c1,) = [c for c in learner["courses"] if c["courseId"] == "c1"]
    daily = body(await get(service, "/api/reports/daily", userId="u1", courseId="c1"))
    assert daily["tz"] == "Asia/Shanghai"
    assert sum(d["seconds"] for d in daily["days"]) == daily["seconds"] == c1["seconds"] == study_time
    assert sum(d["secondsExact"] for d in daily["days"]) == pytest.approx(c1["secondsExact"], abs=1e-6)
    assert c1["open"] is True and c1["sessions"] == 6  # 4 crafted + 2 over the socket
    days = {d["date"]: d["secondsExact"] for d in daily["days"]}
    assert days["2024-01-31"] == 3600 + 1800.25
    assert days["2024-02-01"] == pytest.approx(5400.5 + 0.75 + 600, abs=1e-6)
    assert days["2024-02-02"] == pytest.approx(1200.125, abs=1e-6)

    # A range boundary cuts the sessions exactly, the same in every report.
    one_day = {"from": "2024-02-01", "to": "2024-02-01"}
    learner = body(await get(service, "/api/reports/learners/u1/courses", **one_day))
    (c1,) = [c for c in learner["courses"] if c["courseId"] == "c1"]
    daily = body(await get(service, "/api/reports/daily", userId="u1", courseId="c1", **one_day))
    assert [d["date"] for d in daily["days"]] == ["2024-02-01"]
    assert daily["days"][0]["seconds"] == c1["seconds"] == 6001
    assert c1["secondsExact"] == pytest.approx(6001.25, abs=1e-6)
    assert c1["firstStudiedAt"] == "2024-02-01T00:00:00+08:00"
    assert c1["sessions"] == 3
    board = body(await get(service, "/api/reports/courses/c1/learners", **one_day))
    assert [(r["rank"], r["userId"], r["seconds"]) for r in board["learners"]] == [
        (1, "u1", 6001),
        (2, "u2", 60),
    ]
    assert learner["from"] == "2024-02-01T00:00:00+08:00" and learner["to"] == "2024-02-02T00:00:00+08:00"


@pytest.mark.gen_test(timeout=30)
async def test_the_leaderboard_pages_in_a_stable_order_and_csv_streams_every_row(start_service):
    service = await start_service()
    # Ties on time are ordered by user id.
    await service.store.save(
        [rec(f"u{i:03d}", "c1", start=MIDNIGHT + i, seconds=float(100 - i // 2)) for i in range(25)]
    )
    first = body(await get(service, "/api/reports/courses/c1/learners", limit="10"))
    assert first["total"] == 25 and first["next"] == 10 and len(first["learners"]) == 10
    assert [r["userId"] for r in first["learners"][:3]] == ["u000", "u001", "u002"]
    rest = body(await get(service, "/api/reports/courses/c1/learners", limit="10", offset="20"))
    assert rest["next"] is None and [r["rank"] for r in rest["learners"]] == [21, 22, 23, 24, 25]
    response = await get(service, "/api/reports/courses/c1/learners", format="csv")
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert len(table) == 25 and table[0]["userId"] == "u000" and table[0]["seconds"] == "100"
    assert list(table[0]) == [
        "rank",
        "courseId",
        "userId",
        "seconds",
        "secondsExact",
        "sessions",
        "lastStudiedAt",
        "open",
    ]
    response = await get(service, "/api/reports/sessions", headers={"Accept": "text/csv"}, courseId="c1")
    table = list(csv.DictReader(io.StringIO(response.body.decode())))
    assert [r["userId"] for r in table] == [f"u{i:03d}" for i in range(25)]
    page = body(await get(service, "/api/reports/sessions", courseId="c1", limit="20", offset="20"))
    assert [s["userId"] for s in page["sessions"]] == ["u020", "u021", "u022", "u023", "u024"]
    assert page["next"] is None
    daily = await get(service, "/api/reports/daily", courseId="c1", format="csv", tz="Asia/Shanghai")
    assert daily.body.decode().splitlines()[0] == "date,seconds,secondsExact"


BAD = [
    ("/api/reports/daily", {"userId": "u1", "tz": "Mars/Olympus"}, "tz"),
    ("/api/reports/daily", {"userId": "u1", "tz": "../../../etc/passwd"}, "tz"),
    ("/api/reports/daily", {}, "userId"),
    ("/api/reports/daily", {"courseId": "c 1"}, "courseId"),
    ("/api/reports/daily", {"userId": "u1", "from": "2024-02-02", "to": "2024-02-01"}, "from"),
    ("/api/reports/daily", {"userId": "u1", "from": "last tuesday"}, "from"),
    ("/api/reports/daily", {"userId": "u1", "to": "2024-02-30"}, "to"),
    ("/api/reports/sessions", {"userId": "u1", "limit": "1001"}, "limit"),
    ("/api/reports/sessions", {"userId": "u1", "offset": "-3"}, "offset"),
    ("/api/reports/courses/c1/learners", {"limit": "100000"}, "limit"),
    ("/api/reports/courses/c1/learners", {"format": "xlsx"}, "format"),
    ("/api/reports/learners/" + "x" * 129 + "/courses", {}, "userId"),
    ("/api/reports/learners/a%20b/courses", {}, "userId"),
    ("/api/reports/courses/%F0%9F%98%80/learners", {}, "courseId"),
]


@pytest.mark.gen_test(timeout=30)
async def test_bad_parameters_get_a_400_naming_the_parameter(start_service):
    service = await start_service()
    for path, query, parameter in BAD:
        response = await get(service, path, **query)
        assert response.code == 400, (path, query, response.body)
        error = body(response)["error"]
        assert error["parameter"] == parameter, (path, query, error)
        assert error["code"] == "invalid_parameter" and error["message"]


@pytest.mark.gen_test(timeout=60)
async def test_no_query_string_makes_a_report_fail_with_a_500(start_service):
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    service = await start_service()
    await service.store.save(HISTORY)
    names = st.sampled_from(["userId", "courseId", "tz", "from", "to", "limit", "offset", "format"])
    # Any instant, including those at the edges of what a datetime holds,
    # written in any offset: with any zone they get 200 or 400, never 500.
    # Any instant, including those at the edges of what a datetime holds,
    # written in any offset: with any zone they get 200 or 400, never 500.
    moments = st.one_of(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2)),
        st.datetimes(min_value=datetime(9999, 12, 30), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    )
    zones = st.sampled_from(
        ["UTC", "Asia/Shanghai", "Pacific/Kiritimati", "Etc/GMT+12", "Etc/GMT-14", "Asia/Tokyo"]
    )
    instants = st.one_of(
        moments.map(lambda moment: moment.date().isoformat()),
        st.tuples(moments, st.sampled_from(["", "Z", "+14:00", "-14:00", "+05:45"])).map(
            lambda pair: pair[0].isoformat() + pair[1]
        ),
    )
    values = st.one_of(
        st.text(max_size=40),
        instants,
        st.sampled_from(
            [
                *("u1", "c1", "2024-02-01", "2024-02-01T00:00:00+08:00", "UTC", "Asia/Shanghai", "0", "10"),
                *("0001-01-01", "9999-12-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"),
                *("Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns", "csv"),
            ]
        ),
    )
    paths = st.sampled_from(
        [
            "/api/reports/daily",
            "/api/reports/sessions",
            "/api/reports/courses/c1/learners",
            "/api/reports/learners/u1/courses",
        ]
    )
    cases = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        paths,
        st.one_of(
            st.dictionaries(names, values, max_size=6),
            # Range bounds alone: any from/to/tz, near the ends of the calendar too.
            st.fixed_dictionaries(
                {"userId": st.just("u1"), "courseId": st.just("c1")},
                optional={"from": instants, "to": instants, "tz": zones, "format": st.just("csv")},
            ),
        ),
    )
    @example("/api/reports/daily", {"userId": "u1", "from": "0001-01-01", "tz": "Asia/Shanghai"})
    @example("/api/reports/sessions", {"userId": "u1", "from": "0001-01-01T00:00:00+14:00"})
    @example("/api/reports/courses/c1/learners", {"to": "9999-12-31T23:59:59-14:00", "format": "csv"})
    def collect(path, query):
        cases.append((path, query))

    collect()
    for path, query in cases:
        response = await get(service, path, **query)
        assert response.code in (200, 400), (path, query, response.code, response.body)
        if response.code == 400:
            assert "parameter" in body(response)["error"]


# Bounds a datetime cannot show in the report's zone (or in UTC): year 0 or 10000 once converted.
OUT_OF_RANGE = [
    ({"from": "0001-01-01", "tz": "Asia/Shanghai"}, "from"),
    ({"from": "0001-01-01T00:00:00+14:00"}, "from"),
    ({"from": "0001-01-01T00:00:00", "tz": "Asia/Tokyo"}, "from"),
    ({"to": "9999-12-31T23:59:59-14:00"}, "to"),
    ({"to": "9999-12-31"}, "to"),  # a whole day: up to 10000-01-01
    ({"to": "9999-12-31T20:00:00", "tz": "America/New_York"}, "to"),
]
ENDPOINTS = [
    ("/api/reports/daily", {"userId": "u1"}),
    ("/api/reports/sessions", {"userId": "u1"}),
    ("/api/reports/courses/c1/learners", {}),
    ("/api/reports/learners/u1/courses", {}),
]


@pytest.mark.gen_test(timeout=60)
async def test_bounds_outside_the_years_1_to_9999_get_a_400_on_every_report(start_service):
    service = await start_service()
    await service.store.save(HISTORY)
    for path, base in ENDPOINTS:
        for query, parameter in OUT_OF_RANGE:
            for fmt in ("json", "csv"):
                response = await get(service, path, **base, **query, format=fmt)
                assert response.code == 400, (path, query, fmt, response.code, response.body)
                error = body(response)["error"]
                assert error["parameter"] == parameter and "years 1 to 9999" in error["message"], error
        # The widest bounds that can be shown still work.
        response = await get(service, path, **base, **{"from": "0001-01-02", "to": "9999-12-30"})
        assert response.code == 200, (path, response.body)


# Formula injection: ids are text a spreadsheet would evaluate.
FORMULAS = ["-2-3", "@A1", "=1+1", "+x", "\tx", "\rx", "-A1:B2"]


@pytest.mark.gen_test(timeout=60)
async def test_csv_cells_a_spreadsheet_would_evaluate_are_neutralised_and_json_is_untouched(start_service):
    service = await start_service()
    # Ids the socket accepts (- @) and ones only another writer of the store could leave.
    await service.store.save(
        [rec(user, "c1", start=MIDNIGHT + i, seconds=60.0 + i) for i, user in enumerate(FORMULAS)]
        + [
            rec("-2-3", "@A1", start=MIDNIGHT, seconds=10.0),
            rec("-2-3", "-A1:B2", start=MIDNIGHT, seconds=5.0),
        ]
    )

    async def csv_rows(path: str, **query) -> list[dict]:
        response = await get(service, path, **query, format="csv")
        assert response.code == 200, response.body
        return list(csv.DictReader(io.StringIO(response.body.decode(), newline="")))

    board = await csv_rows("/api/reports/courses/c1/learners")
    assert sorted(r["userId"] for r in board) == sorted("'" + user for user in FORMULAS)
    assert all(r["seconds"].isdigit() and r["rank"].isdigit() for r in board)  # numbers stay numbers
    sessions = await csv_rows("/api/reports/sessions", courseId="c1")
    assert sorted(r["userId"] for r in sessions) == sorted("'" + user for user in FORMULAS)
    assert all(r["courseId"] == "c1" and r["startedAt"][0].isdigit() for r in sessions)
    courses = await csv_rows("/api/reports/learners/-2-3/courses")
    assert sorted(r["courseId"] for r in courses) == ["'-A1:B2", "'@A1", "c1"]
    assert {r["userId"] for r in courses} == {"'-2-3"}
    mine = await csv_rows("/api/reports/sessions", userId="-2-3", courseId="@A1")
    assert [(r["userId"], r["courseId"]) for r in mine] == [("'-2-3", "'@A1")]
    # JSON carries the ids as they are.
    learners = body(await get(service, "/api/reports/courses/c1/learners"))["learners"]
    assert sorted(r["userId"] for r in learners) == sorted(FORMULAS)


@pytest.mark.gen_test(timeout=30)
async def test_sessions_are_listed_as_records_with_iso_times_and_open_marked(start_service):
    service = await start_service()
    await service.store.save(HISTORY)
    page = body(await get(service, "/api/reports/sessions", userId="u1", courseId="c1", tz="Asia/Shanghai"))
    assert [s["startedAt"] for s in page["sessions"]] == [
        "2024-01-31T22:00:00+08:00",
        "2024-01-31T23:00:00+08:00",
        "2024-02-01T05:00:00+08:00",
        "2024-02-01T23:50:00+08:00",
    ]
    last = page["sessions"][-1]
    assert last["open"] is True and last["endedAt"] is None and last["secondsExact"] == 1800.125
    assert last["seconds"] == 1800


# The report source itself: membership and the query plans.


WINDOWS = [
    Window(),
    Window(MIDNIGHT, MIDNIGHT + 86400),
    Window(MIDNIGHT - 3600, MIDNIGHT + 5 * 3600),
    Window(MIDNIGHT + 5 * 3600, MIDNIGHT + 5 * 3600 + 0.75),
    Window(end=MIDNIGHT),
    Window(start=MIDNIGHT + 86400),
]


@pytest.mark.gen_test(timeout=30)
async def test_contained_and_crossing_sessions_are_exactly_the_sessions_in_range(store, store_url):
    zero = rec(start=MIDNIGHT + 86400, seconds=0.0)  # a session that earned nothing
    await store.save([*HISTORY, zero])
    source = backend_for(store_url).report_source()
    try:
        for window in WINDOWS:
            for scope in (Scope("u1", "c1"), Scope(course_id="c1"), Scope(user_id="u1")):
                expected = sorted(
                    r.started_at
                    for r in [*HISTORY, zero]
                    if (scope.user_id in (None, r.user_id) and scope.course_id in (None, r.course_id))
                    and in_window(r.started_at, r.credited_until, window.start, window.end)
                )
                contained = await source.contained(scope, window, "user_id")
                crossing = await source.crossing(scope, window)
                assert sum(g.sessions for g in contained) + len(crossing) == len(expected), (window, scope)
                spans = [s for batch in [b async for b in source.spans(scope, window)] for s in batch]
                assert sorted(s.started_at for s in spans) == expected, (window, scope)
                records = await source.records(scope, window, 100, 0)
                assert [r.started_at for r in records] == expected
    finally:
        await source.close()


@pytest.mark.gen_test
async def test_sqlite_report_queries_search_the_indexes(store, store_url, store_kind):
    if store_kind != "sqlite":
        pytest.skip("the SQLite plan")
    await store.save(HISTORY)
    source = backend_for(store_url).report_source()
    try:
        window = Window(MIDNIGHT, MIDNIGHT + 86400)
        course = " ".join(await source.explain("contained", Scope(course_id="c1"), window))
        assert "USING INDEX study_sessions_course_started" in course, course
        learner = " ".join(await source.explain("spans", Scope(user_id="u1"), window))
        assert "USING INDEX study_sessions_user_course" in learner, learner
    finally:
        await source.close()


# The command line.


def test_the_cli_prints_tables_and_csv_from_the_store(store, store_url, io_loop):
    io_loop.run_sync(lambda: store.save(HISTORY))

    def run(*args: str):
        return run_server("report", *args, f"--store={store_url}")

    # The server's store is open (and locked) here: the CLI still reads it.
    table = run("learner", "u1", "--tz=Asia/Shanghai")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    # The table is for people: a duration for the whole seconds, times to the second.
    assert [re.split(r"\s{2,}", line.strip()) for line in lines] == [
        ["userId", "courseId", "time", "sessions", "firstStudiedAt", "lastStudiedAt", "open"],
        ["u1", "c1", "3h 30m 01s", "4", "2024-01-31 22:00:00+08:00", "2024-02-02 00:20:00+08:00", "yes"],
        ["u1", "c2", "30s", "1", "2024-01-31 23:59:00+08:00", "2024-01-31 23:59:30+08:00", "no"],
    ]
    # The figures are the rows': CSV (and JSON) carry them raw.
    learner = run("learner", "u1", "--format=csv")
    assert learner.stdout.splitlines()[1].split(",")[:5] == ["u1", "c1", "12601", "12601.625", "4"]
    daily = run("daily", "--user=u1", "--course=c1", "--tz=Asia/Shanghai", "--format=csv")
    assert daily.returncode == 0, daily.stderr
    assert daily.stdout.splitlines() == [
        "date,seconds,secondsExact",
        "2024-01-31,5400,5400.25",
        "2024-02-01,6001,6001.25",
        "2024-02-02,1200,1200.125",
    ]
    board = run("course", "c1", "--format=csv", "--limit=1")
    assert board.stdout.splitlines()[1].startswith("1,c1,u1,12601,")
    sessions = run("sessions", "--course=c1", "--from=2024-02-01T05:00:00+08:00", "--format=csv")
    assert len(sessions.stdout.splitlines()) == 3  # header, 05:00 and the open one
    bad = run("daily", "--user=u1", "--tz=Nowhere/Special")
    assert bad.returncode == 2 and "--tz" in bad.stderr
    for kind in ("learner", "course", "daily", "sessions"):
        target = {"learner": ["u1"], "course": ["c1"]}.get(kind, ["--user=u1"])
        early = run(kind, *target, "--from=0001-01-01", "--tz=Asia/Shanghai", "--format=csv")
        assert early.returncode == 2 and "--from" in early.stderr and "Traceback" not in early.stderr, early
    io_loop.run_sync(lambda: store.save([rec("@A1", "c1", start=MIDNIGHT, seconds=1.0)]))
    board = run("course", "c1", "--format=csv")
    assert "'@A1" in [row["userId"] for row in csv.DictReader(io.StringIO(board.stdout))]


def test_the_cli_table_aligns_durations_and_times_for_people(store, store_url, io_loop):
    io_loop.run_sync(lambda: store.save(HISTORY))
    board = run_server("report", "course", "c1", "--tz=Asia/Shanghai", f"--store={store_url}")
    assert board.returncode == 0, board.stderr
    # Numbers (rank, time, sessions) right-aligned, text left-aligned; no microseconds.
    assert board.stdout.splitlines() == [
        "rank  courseId  userId        time  sessions  lastStudiedAt              open",
        "   1  c1        u1      3h 30m 01s         4  2024-02-02 00:20:00+08:00  yes",
        "   2  c1        u2          2m 00s         1  2024-02-01 00:01:00+08:00  no",
    ]


def test_durations_read_as_hours_minutes_and_seconds():
    from reports.cli import duration

    assert [duration(s) for s in (0, 45, 60, 65, 3600, 7390, 12601, 360000)] == [
        "0s",
        "45s",
        "1m 00s",
        "1m 05s",
        "1h 00m 00s",
        "2h 03m 10s",
        "3h 30m 01s",
        "100h 00m 00s",
    ]


# What the CLI prints for --format=json|csv is what the endpoint answers for the same request.
SAME_REQUESTS = [
    (["learner", "u1"], "/api/reports/learners/u1/courses", {}),
    (
        ["learner", "@A1", "--from=2024-01-31", "--to=2024-02-01"],
        "/api/reports/learners/@A1/courses",
        {"from": "2024-01-31", "to": "2024-02-01"},
    ),
    (["course", "c1"], "/api/reports/courses/c1/learners", {}),
    (
        ["course", "c1", "--limit=1", "--offset=1"],
        "/api/reports/courses/c1/learners",
        {"limit": 1, "offset": 1},
    ),
    (["daily", "--user=u1", "--course=c1"], "/api/reports/daily", {"userId": "u1", "courseId": "c1"}),
    (
        ["daily", "--course=c1", "--from=2024-02-01"],
        "/api/reports/daily",
        {"courseId": "c1", "from": "2024-02-01"},
    ),
    (["sessions", "--course=c1"], "/api/reports/sessions", {"courseId": "c1"}),
    (
        ["sessions", "--user=u1", "--limit=2", "--offset=1"],
        "/api/reports/sessions",
        {"userId": "u1", "limit": 2, "offset": 1},
    ),
]


@pytest.mark.gen_test(timeout=120)
async def test_cli_json_and_csv_are_what_the_endpoint_answers(start_service, store_url):
    service = await start_service()
    await service.store.save(
        [
            *HISTORY,
            rec("@A1", "c1", start=MIDNIGHT, seconds=1.0),
            rec("-2-3", "=1+1", start=MIDNIGHT, seconds=2.0),
        ]
    )
    for cli_args, path, query in SAME_REQUESTS:
        for tz in ("UTC", "Asia/Shanghai"):
            before = time.time()
            printed = await asyncio.to_thread(
                run_server, "report", *cli_args, f"--tz={tz}", "--format=json", f"--store={store_url}"
            )
            assert printed.returncode == 0 and printed.stderr == "", printed
            answer = body(await get(service, path, **query, tz=tz))
            mine = json.loads(printed.stdout)
            assert printed.stdout == json.dumps(mine, separators=(",", ":")) + "\n"  # one compact line
            as_of = datetime.fromisoformat(mine.pop("asOf"))
            assert (
                before <= as_of.timestamp() <= time.time()
                and as_of.utcoffset() == datetime.fromisoformat(answer.pop("asOf")).utcoffset()
            )
            assert mine == answer, (cli_args, tz)
            # CSV byte for byte (CRLF line ends, formula cells neutralised).
            exported = await asyncio.to_thread(
                run_server,
                "report",
                *cli_args,
                f"--tz={tz}",
                "--format=csv",
                f"--store={store_url}",
                text=False,
            )
            assert exported.returncode == 0 and exported.stderr == b"", exported
            response = await get(service, path, **query, tz=tz, format="csv")
            assert response.code == 200 and exported.stdout == response.body, (cli_args, tz)
    neutral = await asyncio.to_thread(
        run_server, "report", "sessions", "--user=-2-3", "--format=csv", f"--store={store_url}"
    )
    assert ",'-2-3,'=1+1," in neutral.stdout


def test_cli_progress_goes_to_stderr_when_asked_and_leaves_stdout_alone(store, store_url, io_loop):
    from tests.support.records import record

    many = [record(f"u{i % 7}", "big", started=MIDNIGHT + i * 60, seconds=30.0 + i) for i in range(5000)]
    io_loop.run_sync(lambda: store.save(many))

    def run(*args: str):
        return run_server("report", *args, f"--store={store_url}")

    line = re.compile(r"server\.py report: ([\d,]+) sessions read, ([\d,]+) rows so far")
    for report in (
        ["sessions", "--course=big", "--format=csv"],
        ["sessions", "--course=big"],
        ["daily", "--course=big"],
    ):
        quiet = run(*report)  # stderr is a pipe here: no progress unless asked
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        shown = run(*report, "--progress")
        assert shown.returncode == 0
        assert shown.stdout == quiet.stdout, report
        lines = shown.stderr.splitlines()
        assert len(lines) >= 2 and all(line.fullmatch(text) for text in lines), shown.stderr
        counts = [tuple(int(n.replace(",", "")) for n in line.fullmatch(text).groups()) for text in lines]
        assert counts == sorted(counts) and counts[-1][0] == 5000, counts  # it only goes forward, to the end
        rows = 5000 if report[0] == "sessions" else len(quiet.stdout.splitlines()) - 1
        assert counts[-1][1] == rows, (report, counts)
    assert run("sessions", "--course=big", "--no-progress", "--format=csv").stderr == ""
    # Stopping at --limit mid-stream closes the store's cursor before the store: nothing on stderr.
    cut = run("sessions", "--course=big", "--limit=1", "--format=csv")
    assert cut.returncode == 0 and len(cut.stdout.splitlines()) == 2 and cut.stderr == "", cut.stderr


def test_cli_progress_is_shown_by_default_on_a_terminal(store, store_url, io_loop):
    from tests.support.records import record

    io_loop.run_sync(
        lambda: store.save([record("u1", "big", started=MIDNIGHT + i, seconds=1.0) for i in range(1500)])
    )
    main, child = os.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "server.py",
                "report",
                "sessions",
                "--course=big",
                "--format=csv",
                f"--store={store_url}",
            ],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            stdout=subprocess.PIPE,
            stderr=child,
            timeout=60,
        )
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
        if child != -1:
            os.close(child)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1501
    # Rewritten in place on the terminal, then a final line end.
    assert shown.startswith(b"\rserver.py report: ") and shown.endswith(
        b"1,500 sessions read, 1,500 rows so far\x1b[K\r\n"
    ), shown


# Authorization, through the socket's auth backend (JWT here).


@pytest.mark.gen_test(timeout=30)
async def test_learners_read_their_own_reports_teachers_a_course_admins_everything(start_service):
    from tests.support.auth_helpers import SECRET, bearer, claims, hs256

    service = await start_service(auth="jwt", jwt_secret=SECRET)
    await service.store.save(HISTORY)
    learner = bearer(hs256(claims("u1")))
    teacher = bearer(hs256(claims("t1", roles=["teacher"])))
    admin = bearer(hs256(claims("a1", roles=["admin"])))
    limited = bearer(hs256(claims("a2", roles=["admin"], courses=["c2"])))
    cases = [
        (None, "/api/reports/learners/u1/courses", {}, 401),
        ({"Authorization": "Bearer not-a-token"}, "/api/reports/daily", {"userId": "u1"}, 401),
        (learner, "/api/reports/learners/u1/courses", {}, 200),
        (learner, "/api/reports/daily", {"userId": "u1", "courseId": "c1"}, 200),
        (learner, "/api/reports/learners/u2/courses", {}, 403),
        (learner, "/api/reports/courses/c1/learners", {}, 403),
        (learner, "/api/reports/sessions", {"courseId": "c1"}, 403),
        (teacher, "/api/reports/courses/c1/learners", {}, 200),
        (teacher, "/api/reports/sessions", {"userId": "u1", "courseId": "c1"}, 200),
        (teacher, "/api/reports/learners/u1/courses", {}, 403),
        (teacher, "/api/reports/daily", {"userId": "u1"}, 403),
        (admin, "/api/reports/learners/u2/courses", {}, 200),
        (admin, "/api/reports/daily", {"userId": "u2"}, 200),
        (limited, "/api/reports/courses/c1/learners", {}, 403),
        (limited, "/api/reports/daily", {"userId": "u1"}, 403),
        (limited, "/api/reports/courses/c2/learners", {}, 200),
    ]
    for headers, path, query, status in cases:
        response = await get(service, path, headers=headers, **query)
        assert response.code == status, (headers, path, query, response.body)
        if status != 200:
            error = body(response)["error"]
            assert error["code"] == ("unauthorized" if status == 401 else "forbidden") and error["message"]
    # A credential limited to some courses sees only those in a learner's list.
    only_c2 = body(await get(service, "/api/reports/learners/u1/courses", headers=limited))
    assert [c["courseId"] for c in only_c2["courses"]] == ["c2"]
    # A bad credential in the query string (the browser transport) is refused too.
    response = await get(service, "/api/reports/daily", userId="u1", token="secret-token-value")
    assert response.code == 401


@pytest.mark.gen_test(timeout=30)
async def test_a_teacher_credential_without_a_course_list_reads_every_course_and_a_listed_one_only_its_own(
    start_service,
):
    # The documented policy (docs/auth.md, Authorization): no course list means every course,
    # whatever the roles; a course list limits a teacher to those courses.
    from tests.support.auth_helpers import SECRET, bearer, claims, hs256

    service = await start_service(auth="jwt", jwt_secret=SECRET)
    await service.store.save(HISTORY)
    everywhere = bearer(hs256(claims("t1", roles=["teacher"])))
    own_course = bearer(hs256(claims("t2", roles=["teacher"], courses=["c1"])))
    for course in ("c1", "c2"):
        response = await get(service, f"/api/reports/courses/{course}/learners", headers=everywhere)
        assert response.code == 200, (course, response.body)
    listed = body(await get(service, "/api/reports/courses", headers=everywhere))
    assert {c["courseId"] for c in listed["courses"]} == {"c1", "c2"}
    assert (await get(service, "/api/reports/courses/c1/learners", headers=own_course)).code == 200
    assert (await get(service, "/api/reports/courses/c2/learners", headers=own_course)).code == 403
    listed = body(await get(service, "/api/reports/courses", headers=own_course))
    assert [c["courseId"] for c in listed["courses"]] == ["c1"]

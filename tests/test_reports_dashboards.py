"""The report endpoints the dashboards read (whoami, courses, daily-learners), through a real server
on both stores: agreement with the other reports, CSV, validation, who may read them, ``asOf``,
gzip, CORS, and ended sessions in the reports within a second."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from tests.support.clock import FakeClock
from tests.support.helpers import Client
from tests.support.records import MIDNIGHT, at, rec
from tests.support.reports import body, get

SHANGHAI = {"tz": "Asia/Shanghai"}
WINDOW = {"from": "2024-01-30", "to": "2024-02-03", **SHANGHAI}  # five days in Shanghai

# Course c1: three learners, sessions across midnight (Shanghai), one open, one outside the window;
# course c2: one learner; course c3: a session with no credit.
RECORDS = [
    rec("u1", "c1", start=MIDNIGHT - 3600, seconds=9000.5),  # Jan 31 23:00 -> Feb 1 01:30
    rec("u1", "c1", start=MIDNIGHT + 86400 - 600, seconds=1800.125, ended=False),  # open, across Feb 2
    rec("u2", "c1", start=MIDNIGHT - 2 * 86400 - 1800, seconds=3600.25),  # Jan 29 23:30: half in range
    rec("u2", "c1", start=MIDNIGHT + 3600, seconds=0.75),
    rec("u3", "c1", start=MIDNIGHT + 2 * 86400 + 7200, seconds=600.0),
    rec("u3", "c1", start=MIDNIGHT + 9 * 86400, seconds=600.0),  # after the window
    rec("u1", "c2", start=MIDNIGHT - 60, seconds=30.0),
    rec("u4", "c3", start=MIDNIGHT, seconds=0.0),
]


def rows_of(response: HTTPResponse) -> list[dict]:
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/csv"), response.body
    return list(csv.DictReader(io.StringIO(response.body.decode())))


@pytest.mark.gen_test(timeout=30)
async def test_daily_learners_and_courses_agree_with_the_leaderboard_and_daily(start_service):
    service = await start_service(report_timezone="Asia/Shanghai")
    await service.store.save(RECORDS)
    grid = body(await get(service, "/api/reports/courses/c1/daily-learners", **WINDOW))
    assert grid["dates"] == ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-03"]
    assert grid["courseId"] == "c1" and grid["tz"] == "Asia/Shanghai"
    assert grid["from"] == "2024-01-30T00:00:00+08:00" and grid["to"] == "2024-02-04T00:00:00+08:00"
    board = body(await get(service, "/api/reports/courses/c1/learners", **WINDOW))
    # The same learners in the same order, with the same whole seconds.
    assert [(r["userId"], r["seconds"]) for r in grid["learners"]] == [
        (r["userId"], r["seconds"]) for r in board["learners"]
    ]
    assert grid["total"] == board["total"] == 3
    for learner in grid["learners"]:
        assert len(learner["days"]) == len(grid["dates"])
        assert sum(learner["days"]) == learner["seconds"]
        daily = body(
            await get(service, "/api/reports/daily", userId=learner["userId"], courseId="c1", **WINDOW)
        )
        by_date = {d["date"]: d["seconds"] for d in daily["days"]}
        assert {d: s for d, s in zip(grid["dates"], learner["days"], strict=True) if s} == {
            d: s for d, s in by_date.items() if s
        }
        assert daily["seconds"] == learner["seconds"]
    u1 = grid["learners"][0]
    # Jan 31 3600; Feb 1 5400.5 + 600; Feb 2 1200.125 (open): each day gets the whole
    # seconds its running total crosses.
    assert u1["userId"] == "u1" and u1["days"] == [0, 3600, 6000, 1200, 0] and u1["seconds"] == 10800
    assert [r["userId"] for r in grid["learners"]] == ["u1", "u2", "u3"]
    assert grid["learners"][1]["days"] == [1800, 0, 1, 0, 0]  # u2: 1800.25 on Jan 30, 0.75 on Feb 1
    assert grid["learners"][1]["seconds"] == 1801

    # CSV: the long form of the same numbers, a row per learner and day with study.
    long = rows_of(await get(service, "/api/reports/courses/c1/daily-learners", format="csv", **WINDOW))
    assert list(long[0]) == ["userId", "date", "seconds"]
    assert [(r["userId"], r["date"], int(r["seconds"])) for r in long] == [
        (learner["userId"], date, seconds)
        for learner in grid["learners"]
        for date, seconds in zip(grid["dates"], learner["days"], strict=True)
        if seconds
    ]
    # Pages in the leaderboard's order.
    page = body(await get(service, "/api/reports/courses/c1/daily-learners", limit="2", offset="1", **WINDOW))
    assert [r["userId"] for r in page["learners"]] == ["u2", "u3"] and page["next"] is None
    first = body(await get(service, "/api/reports/courses/c1/daily-learners", limit="1", **WINDOW))
    assert [r["userId"] for r in first["learners"]] == ["u1"] and first["next"] == 1

    courses = body(await get(service, "/api/reports/courses", **WINDOW))
    assert [c["courseId"] for c in courses["courses"]] == ["c1", "c2", "c3"]
    assert (courses["total"], courses["limit"], courses["offset"], courses["next"]) == (3, 100, 0, None)
    c1 = courses["courses"][0]
    assert c1["seconds"] == 13201  # 10800.625 + 1801 + 600: whole seconds of the exact sum
    assert c1["secondsExact"] == pytest.approx(sum(r["secondsExact"] for r in board["learners"]), abs=1e-6)
    assert (c1["learners"], c1["sessions"], c1["open"]) == (3, 5, True)
    assert c1["firstStudiedAt"] == "2024-01-30T00:00:00+08:00"
    assert c1["lastStudiedAt"] == "2024-02-03T02:10:00+08:00"  # u3's session on Feb 3
    c3 = courses["courses"][2]
    assert (c3["seconds"], c3["learners"], c3["sessions"], c3["open"]) == (0, 1, 1, False)
    table = rows_of(await get(service, "/api/reports/courses", format="csv", **WINDOW))
    assert list(table[0]) == [
        "courseId",
        "seconds",
        "secondsExact",
        "learners",
        "sessions",
        "firstStudiedAt",
        "lastStudiedAt",
        "open",
    ]
    assert [(r["courseId"], int(r["seconds"]), int(r["learners"])) for r in table] == [
        (c["courseId"], c["seconds"], c["learners"]) for c in courses["courses"]
    ]
    page = body(await get(service, "/api/reports/courses", limit="1", offset="1", **WINDOW))
    assert [c["courseId"] for c in page["courses"]] == ["c2"] and page["next"] == 2


@pytest.mark.gen_test(timeout=30)
async def test_every_json_report_says_as_of_when_its_figures_were_read(start_service):
    clock = FakeClock(at("2024-02-01T12:01:05+08:00"))
    service = await start_service(clock=clock, report_timezone="Asia/Shanghai")
    await service.store.save(RECORDS)
    for path, query in [
        ("/api/reports/whoami", {}),
        ("/api/reports/courses", {}),
        ("/api/reports/courses/c1/daily-learners", WINDOW),
        ("/api/reports/courses/c1/learners", {}),
        ("/api/reports/learners/u1/courses", {"tz": "UTC"}),
        ("/api/reports/daily", {"userId": "u1"}),
        ("/api/reports/sessions", {"courseId": "c1"}),
    ]:
        found = body(await get(service, path, **query))
        expected = "2024-02-01T04:01:05+00:00" if query.get("tz") == "UTC" else "2024-02-01T12:01:05+08:00"
        assert found["asOf"] == expected, path


@pytest.mark.gen_test(timeout=30)
async def test_daily_learners_needs_a_bounded_window_of_at_most_366_days(start_service):
    service = await start_service()
    path = "/api/reports/courses/c1/daily-learners"
    for query, parameter in [
        ({"to": "2024-01-31"}, "from"),
        ({"from": "2024-01-01"}, "to"),
        ({}, "from"),
        ({"from": "2024-01-01", "to": "2025-01-01"}, "to"),  # 367 days
        ({"from": "2024-01-01", "to": "2024-01-31", "limit": "0"}, "limit"),
        ({"from": "2024-01-01", "to": "2024-01-31", "tz": "Mars/Olympus"}, "tz"),
    ]:
        response = await get(service, path, **query)
        assert response.code == 400, (query, response.body)
        error = body(response)["error"]
        assert (error["code"], error["parameter"]) == ("invalid_parameter", parameter), (query, error)
    bad = await get(
        service, "/api/reports/courses/=x/daily-learners", **{"from": "2024-01-01", "to": "2024-01-02"}
    )
    assert bad.code == 400 and body(bad)["error"]["parameter"] == "courseId"
    year = body(await get(service, path, **{"from": "2024-01-01", "to": "2024-12-31", "tz": "UTC"}))
    assert len(year["dates"]) == 366 and year["learners"] == [] and year["total"] == 0
    # An instant range: every local day it touches, ``to`` exclusive.
    part = body(
        await get(service, path, **{"from": "2024-01-01T12:00", "to": "2024-01-03T00:00", "tz": "UTC"})
    )
    assert part["dates"] == ["2024-01-01", "2024-01-02"]
    bad = await get(service, "/api/reports/courses", limit="1001")
    assert bad.code == 400 and body(bad)["error"]["parameter"] == "limit"


@pytest.mark.gen_test(timeout=30)
async def test_who_may_read_whoami_the_course_list_and_daily_learners(start_service):
    from tests.support.auth_helpers import SECRET, bearer, claims, hs256

    service = await start_service(auth="jwt", jwt_secret=SECRET, report_timezone="Asia/Shanghai")
    await service.store.save(RECORDS)
    learner = bearer(hs256(claims("u1")))
    teacher = bearer(hs256(claims("t1", roles=["teacher"])))
    limited_teacher = bearer(hs256(claims("t2", roles=["teacher"], courses=["c2", "c9"])))
    admin = bearer(hs256(claims("a1", roles=["admin"])))
    limited_admin = bearer(hs256(claims("a2", roles=["admin"], courses=["c3"])))

    who = body(await get(service, "/api/reports/whoami", headers=learner))
    assert {k: v for k, v in who.items() if k != "asOf"} == {
        "userId": "u1",
        "roles": [],
        "courses": None,
        "admin": False,
        "teacher": False,
        "timezone": "Asia/Shanghai",
        "dashboards": ["learner"],
    }
    who = body(await get(service, "/api/reports/whoami", headers=limited_teacher))
    assert (who["userId"], who["roles"], who["courses"], who["teacher"], who["dashboards"]) == (
        "t2",
        ["teacher"],
        ["c2", "c9"],
        True,
        ["learner", "course"],  # a teacher's own study too (issue 21)
    )
    assert body(await get(service, "/api/reports/whoami", headers=admin))["admin"] is True

    def listed(response: HTTPResponse) -> list[str]:
        assert response.code == 200, response.body
        return [c["courseId"] for c in body(response)["courses"]]

    daily = "/api/reports/courses/c1/daily-learners"
    cases = [
        (None, "/api/reports/whoami", 401),
        ({"Authorization": "Bearer not-a-token"}, "/api/reports/whoami", 401),
        (None, "/api/reports/courses", 401),
        (learner, "/api/reports/courses", 403),
        (None, daily, 401),
        (learner, daily, 403),
        (limited_teacher, daily, 403),
        (limited_admin, daily, 403),
        (teacher, daily, 200),
        (admin, daily, 200),
    ]
    for headers, path, status in cases:
        query = WINDOW if path == daily else {}
        response = await get(service, path, headers=headers, **query)
        assert response.code == status, (headers, path, response.body)
        if status != 200:
            error = body(response)["error"]
            assert error["code"] == ("unauthorized" if status == 401 else "forbidden") and error["message"]
    refused = body(await get(service, "/api/reports/courses", headers=learner))["error"]
    assert refused["message"] == "listing courses needs the teacher or admin role"
    assert listed(await get(service, "/api/reports/courses", headers=teacher)) == ["c1", "c2", "c3"]
    assert listed(await get(service, "/api/reports/courses", headers=admin)) == ["c1", "c2", "c3"]
    assert listed(await get(service, "/api/reports/courses", headers=limited_teacher)) == ["c2"]
    assert listed(await get(service, "/api/reports/courses", headers=limited_admin)) == ["c3"]
    assert body(await get(service, "/api/reports/courses", headers=limited_teacher))["total"] == 1


@pytest.mark.gen_test(timeout=30)
async def test_whoami_under_auth_none_is_an_anonymous_admin_whatever_user_id_says(start_service):
    service = await start_service(report_timezone="Europe/Paris")
    who = body(await get(service, "/api/reports/whoami", userId="u1"))
    assert {k: v for k, v in who.items() if k != "asOf"} == {
        "userId": None,
        "roles": ["admin"],
        "courses": None,
        "admin": True,
        "teacher": False,
        "timezone": "Europe/Paris",
        "dashboards": ["learner", "course"],
    }


async def raw_get(service, path: str, headers: dict, method: str = "GET", **query) -> HTTPResponse:
    """A request whose body is handed over as sent (no decompression)."""
    url = f"{service.http_url}{path}" + (f"?{urlencode(query)}" if query else "")
    request = HTTPRequest(
        url,
        method=method,
        headers=headers,
        decompress_response=False,
        request_timeout=20,
        allow_nonstandard_methods=True,
    )
    return await AsyncHTTPClient().fetch(request, raise_error=False)


@pytest.mark.gen_test(timeout=30)
async def test_reports_and_static_files_are_gzipped_for_clients_that_accept_it_and_the_socket_still_works(
    start_service,
):
    service = await start_service()
    await service.store.save([rec(f"u{i:03d}", "c1", start=MIDNIGHT + i, seconds=100.0) for i in range(300)])
    gzipped = {"Accept-Encoding": "gzip"}
    for path, query in [
        ("/api/reports/courses/c1/learners", {}),
        ("/api/reports/courses/c1/learners", {"format": "csv"}),  # streamed, flushed in batches
        ("/api/reports/sessions", {"courseId": "c1", "format": "csv"}),
        ("/api/reports/courses/c1/daily-learners", {"from": "2024-01-01", "to": "2024-03-31"}),
        ("/", {}),
        ("/study-time-client.js", {}),
    ]:
        plain = await raw_get(service, path, {}, **query)
        packed = await raw_get(service, path, gzipped, **query)
        assert plain.code == packed.code == 200, (path, packed.code)
        assert "Content-Encoding" not in plain.headers
        assert packed.headers.get("Content-Encoding") == "gzip", (path, dict(packed.headers))
        assert "Accept-Encoding" in packed.headers.get("Vary", "")
        assert len(packed.body) < len(plain.body), path
        unpacked = gzip.decompress(packed.body)
        if packed.headers["Content-Type"].startswith("application/json"):  # asOf moves on
            unpacked, plain_body = json.loads(unpacked), json.loads(plain.body)
            assert unpacked.pop("asOf") and plain_body.pop("asOf")
            assert unpacked == plain_body, path
        else:
            assert unpacked == plain.body, path
    # A browser offers gzip on the upgrade request too: the socket is unaffected.
    client = await Client.connect(service.url, "u1", "c1", headers=gzipped)
    assert (await client.connected())["type"] == "connected"
    assert (await client.heartbeat())["type"] == "heartbeat_response"
    await client.close()


PORTAL = "https://portal.example.edu"


@pytest.mark.gen_test(timeout=30)
async def test_cross_origin_reads_only_for_allowed_origins_with_a_correct_preflight(start_service):
    from tests.support.auth_helpers import SECRET, bearer, claims, hs256

    service = await start_service(auth="jwt", jwt_secret=SECRET, allowed_origins=(PORTAL,))
    admin = bearer(hs256(claims("a1", roles=["admin"])))
    path = "/api/reports/courses"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}

    response = await raw_get(service, path, {"Origin": PORTAL, **preflight}, method="OPTIONS")
    assert response.code == 204, response.body
    assert response.headers["Access-Control-Allow-Origin"] == PORTAL
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    response = await raw_get(service, path, {"Origin": PORTAL, **admin})
    assert response.code == 200 and response.headers["Access-Control-Allow-Origin"] == PORTAL
    assert "Origin" in response.headers["Vary"]
    # An error from an allowed origin is readable too.
    response = await raw_get(service, path, {"Origin": PORTAL})
    assert response.code == 401 and response.headers["Access-Control-Allow-Origin"] == PORTAL

    for origin in ("https://evil.example", "https://portal.example.edu.evil.example", "null"):
        response = await raw_get(service, path, {"Origin": origin, **preflight}, method="OPTIONS")
        assert response.code == 403, origin
        assert body(response)["error"]["code"] == "forbidden"
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], origin
        response = await raw_get(service, path, {"Origin": origin, **admin})
        assert response.code == 200 and "Access-Control-Allow-Origin" not in response.headers
        assert "Origin" in response.headers["Vary"]
    # Same-origin and non-browser requests are unchanged.
    response = await raw_get(service, path, admin)
    assert response.code == 200 and "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.gen_test(timeout=30)
async def test_without_allowed_origins_no_cross_origin_read_is_allowed(start_service):
    service = await start_service()
    origin = "http://localhost:3000"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
    response = await raw_get(service, "/api/reports/whoami", preflight, method="OPTIONS")
    assert response.code == 403 and "Access-Control-Allow-Origin" not in response.headers
    response = await raw_get(service, "/api/reports/whoami", {"Origin": origin})
    assert response.code == 200 and "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.gen_test(timeout=30)
async def test_a_session_that_ends_is_in_the_reports_within_a_second_not_at_the_next_checkpoint(
    start_service,
):
    clock = FakeClock()
    service = await start_service(
        clock=clock, flush_interval=30, heartbeat_interval=30, heartbeat_timeout=60, min_heartbeat_interval=1
    )
    client = await Client.connect(service.url, "u1", "c1")
    await client.connected()
    clock.advance(20)
    assert (await client.heartbeat())["studyTime"] == 20
    clock.advance(5)
    await client.close()

    async def closed() -> bool:
        found = body(await get(service, "/api/reports/sessions", userId="u1"))["sessions"]
        return len(found) == 1 and not found[0]["open"]

    started = asyncio.get_running_loop().time()
    await wait_for_async(closed, timeout=1.5, message="the ended session in the report")
    assert asyncio.get_running_loop().time() - started < 1.5
    (session,) = body(await get(service, "/api/reports/sessions", userId="u1"))["sessions"]
    assert (session["seconds"], session["endReason"]) == (25, "client_closed")
    (course,) = body(await get(service, "/api/reports/learners/u1/courses"))["courses"]
    assert (course["seconds"], course["open"]) == (25, False)


async def wait_for_async(predicate, timeout: float, message: str) -> None:
    """Poll an async ``predicate`` until it holds, at most ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.02)

"""The report command as a real process: what it prints for ids a terminal would act on, its usage errors,
ids that start with "-", and that it changes nothing in a MongoDB database it reads."""

from __future__ import annotations

import csv
import io
import json

import pytest

from reports.params import Window
from reports.source import Scope
from storage.mongodb.reports import MongoReports
from tests.conftest import mongodb_url
from tests.support.helpers import run_server
from tests.support.records import MIDNIGHT, rec

#: A stored id with an ANSI colour sequence, a carriage return and a newline in it.
HOSTILE = "u\x1b[31mred\x1b[0m\rover\nline"


def test_the_table_shows_control_characters_escaped_and_csv_and_json_keep_them(store, store_url, io_loop):
    io_loop.run_sync(lambda: store.save([rec(HOSTILE, "c1", start=MIDNIGHT, seconds=30.0)]))

    def run(*args: str) -> str:
        result = run_server("report", *args, f"--store={store_url}", text=False)  # line ends as written
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    table = run("course", "c1")
    assert "\x1b" not in table and "\r" not in table
    assert len(table.splitlines()) == 2  # the header and one row: the newline did not break it
    assert "u\\x1b[31mred\\x1b[0m\\rover\\nline" in table
    sessions = run("sessions", "--course=c1")
    assert "\x1b" not in sessions and "\\x1b[31m" in sessions
    # For scripts, the id is exact.
    rows = list(csv.DictReader(io.StringIO(run("course", "c1", "--format=csv"), newline="")))
    assert [row["userId"] for row in rows] == [HOSTILE]
    body = json.loads(run("course", "c1", "--format=json"))
    assert [learner["userId"] for learner in body["learners"]] == [HOSTILE]


def test_a_bad_store_is_a_usage_error(tmp_path):
    for store in ("nosuch://x", "mongodb://127.0.0.1:1", "sqlite://"):
        result = run_server("report", "course", "c1", f"--store={store}")
        assert result.returncode == 2, (store, result.stdout, result.stderr)
        assert "store" in result.stderr and "Traceback" not in result.stderr


def test_ids_that_start_with_a_dash_go_after_a_double_dash(store, store_url, io_loop):
    io_loop.run_sync(lambda: store.save([rec("-u1", "-c1", start=MIDNIGHT, seconds=30.0)]))
    learner = run_server("report", "learner", f"--store={store_url}", "--format=csv", "--", "-u1")
    assert learner.returncode == 0, learner.stderr
    assert learner.stdout.splitlines()[1].startswith("'-u1,'-c1,30,")  # CSV guards a leading "-"
    course = run_server("report", "course", "--format=csv", f"--store={store_url}", "--", "-c1")
    assert course.returncode == 0, course.stderr
    assert course.stdout.splitlines()[1].startswith("1,'-c1,'-u1,30,")
    usage = run_server("report", "learner", "--help")
    assert "after '--'" in usage.stdout and "-u1" in usage.stdout


def test_reports_on_mongodb_create_no_collection_or_index(mongodb_server, mongodb_database, mongo_db):
    url = mongodb_url(mongodb_server, mongodb_database)
    for args in (("course", "c1"), ("daily", "--user=u1"), ("sessions", "--user=u1", "--format=csv")):
        result = run_server("report", *args, f"--store={url}")
        assert result.returncode == 0, result.stderr
    assert mongo_db.list_collection_names() == []


@pytest.mark.gen_test(timeout=60)
async def test_reports_on_mongodb_leave_the_indexes_as_they_are(mongodb_server, mongodb_database, mongo_db):
    mongo_db["study_sessions"].insert_one({"_id": "s0", "userId": "u1", "courseId": "c1"})
    before = sorted(index["name"] for index in mongo_db["study_sessions"].list_indexes())
    source = MongoReports(mongodb_url(mongodb_server, mongodb_database))
    try:
        assert [r async for r in source.record_batches(Scope(course_id="c9"), Window())] == []
    finally:
        await source.close()
    assert sorted(index["name"] for index in mongo_db["study_sessions"].list_indexes()) == before

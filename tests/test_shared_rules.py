"""Rules both sides implement, kept in step: the page's JavaScript run in Node against the Python.

- CSV cell neutralisation: static/dash-format.js ``csvText`` (the dashboard's CSV download) and
  reports/rows.py ``csv_text`` (the server's CSV) write the same lines for the same cells.
- Close codes and their reasons: static/study-time-client.js ``CloseCode`` has every code of
  tracking/protocol.py ``CloseCode`` under the same name; static/i18n.js words every error code a
  close carries and every end reason of a session, in both languages.
- Duration formatting: static/i18n.js ``humanDuration`` in English is reports/cli.py ``duration``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from reports.cli import duration
from reports.rows import csv_text
from tests.support.helpers import ROOT
from tracking.protocol import _CLOSE_FOR_ERROR, CloseCode
from tracking.session import EndReason

CELLS = [
    ["=1+1", "+49 30", "-A1:B2", "@SUM(1)", "\tx", "\rx"],
    ["a,b", 'say "hi"', "line\nbreak", "'quoted", "plain", ""],
    [None, 0, 12, True, False, "x=1"],
    ["learner-01", "2024-02-01T08:00:00+08:00", 3600, "=cmd|' /C calc'!A0", "-", "@"],
]
SECONDS = [0, 1, 45, 59, 60, 61, 275, 599, 3599, 3600, 3601, 3905, 7390, 86399, 86400, 90061, 360000]

SCRIPT = """
const [format, i18n, client] = await Promise.all([
  import(%(format)s), import(%(i18n)s), import(%(client)s),
]);
const input = JSON.parse(process.argv[1]);
console.log(JSON.stringify({
  csv: input.cells.map((row) => format.csvText([row])),
  durations: input.seconds.map((s) => i18n.humanDuration("en", s)),
  closeCodes: client.CloseCode,
  serverError: { en: i18n.TEXT.en.serverError, zh: i18n.TEXT.zh.serverError },
  endReason: { en: i18n.TEXT.en.endReason, zh: i18n.TEXT.zh.endReason },
}));
"""


@pytest.fixture(scope="module")
def js() -> dict:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is needed to run the page's modules")
        pytest.skip("node is not installed")
    static = os.path.join(ROOT, "static")
    paths = {
        name: json.dumps(f"file://{static}/{file}")
        for name, file in [
            ("format", "dash-format.js"),
            ("i18n", "i18n.js"),
            ("client", "study-time-client.js"),
        ]
    }
    script = SCRIPT % paths
    vectors = json.dumps({"cells": CELLS, "seconds": SECONDS})
    done = subprocess.run(
        [node, "--input-type=module", "--eval", script, vectors],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_dashboards_csv_neutralises_cells_as_the_servers_csv(js):
    for row, line in zip(CELLS, js["csv"], strict=True):
        columns = [str(i) for i in range(len(row))]
        assert line == csv_text(columns, [dict(zip(columns, row, strict=True))], header=False), row


def test_every_close_code_has_the_same_name_and_value_on_both_sides(js):
    # 1006 is the browser's own (no close frame arrived): the server never sends it.
    assert js["closeCodes"].pop("ABNORMAL") == 1006
    assert js["closeCodes"] == {code.name: code.value for code in CloseCode}


def test_every_close_reason_and_end_reason_is_worded_in_both_languages(js):
    for lang in ("en", "zh"):
        assert set(_CLOSE_FOR_ERROR) <= set(js["serverError"][lang]), lang
        assert {r.value for r in EndReason} == set(js["endReason"][lang]), lang


def test_durations_read_the_same_on_the_page_and_in_the_command_line_reports(js):
    assert js["durations"] == [duration(s) for s in SECONDS]

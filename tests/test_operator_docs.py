"""What an operator reads must match what runs: logger names, settings and endpoints in the docs.

These tests derive the lists from the code (``getLogger`` calls, the fields
of ``settings.Settings``, the routes of ``handlers/app.py``), so a logger,
setting or endpoint added without its line in the docs fails here.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.helpers import ROOT, Client, ServerProcess


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as file:
        return file.read()


def source_files() -> list[str]:
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [
            d for d in subdirectories if not d.startswith(".") and d not in ("tests", "bench")
        ]
        found += [os.path.join(directory, f) for f in files if f.endswith(".py")]
    return found


def loggers_in_code() -> set[str]:
    names = set()
    for path in source_files():
        with open(path, encoding="utf-8") as file:
            names |= set(re.findall(r'getLogger\("(study_time[\w.]*)"\)', file.read()))
    return names


def test_every_logger_of_the_code_is_listed_in_docs_operations():
    documented = set(re.findall(r"^\| `(study_time(?:\.\w+)?)` \|", read("docs/operations.md"), re.M))
    names = loggers_in_code()
    assert "study_time.service" in names
    assert names - documented == set(), "loggers missing from docs/operations.md (Logs)"
    assert documented - names == set(), "docs/operations.md lists loggers the code no longer has"


@pytest.mark.gen_test(timeout=30)
async def test_a_sessions_lines_all_come_from_the_service_logger(tmp_path):
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--log-format=json",
        "--max-sessions-per-user=1",
        "--flood-rate=0",
    ) as server:
        client = await Client.connect(server.url, "u1", "c1")
        await client.connected()
        await client.heartbeat()
        over = await Client.connect(server.url, "u1", "c2")  # over --max-sessions-per-user: refused
        await over.closed()
        await client.close()
        assert server.terminate() == 0
    lines = [json.loads(line) for line in server.output if line.startswith("{")]
    events = {line["event"]: line["logger"] for line in lines if "event" in line}
    assert {"session_opened", "session_closed", "over_cap"} <= set(events), server.log
    assert set(events.values()) == {"study_time.service"}, events
    assert {line["logger"] for line in lines if "listening on" in line["message"]} == {"study_time.server"}


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown text."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def test_every_setting_is_in_the_settings_table_of_docs_protocol():
    import dataclasses

    import settings

    table = section(read("docs/protocol.md"), "Settings")
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    listed = {name for row in rows for name in re.findall(r"`(--[a-z0-9-]+)`", row.split(" | ")[0])}
    declared = {settings.option_name(f.name) for f in dataclasses.fields(settings.Settings)}
    assert declared - listed == set(), "settings missing from the table in docs/protocol.md"
    assert listed - declared == set(), "docs/protocol.md lists settings that do not exist"


def routes() -> list[str]:
    """The path pattern of every route of the application, as handlers/app.py builds it."""
    from handlers.app import make_app
    from service import Service
    from tests.support.helpers import fast_settings

    def walk(router) -> list[str]:
        found = []
        for rule in router.rules:
            if hasattr(rule.target, "rules"):  # a nested router (the Host check wraps every route)
                found += walk(rule.target)
            elif hasattr(rule.matcher, "regex"):
                found.append(rule.matcher.regex.pattern.removesuffix("$"))
        return found

    settings = fast_settings(store="sqlite:///:memory:")
    return [pattern for pattern in walk(make_app(Service(settings)).wildcard_router) if pattern != ".*"]


def test_every_endpoint_is_listed_in_docs_protocol():
    listed = section(read("docs/protocol.md"), "Endpoints")
    patterns = routes()
    assert "/readyz" in patterns and "/metrics" in patterns
    for pattern in patterns:
        # A path parameter ([^/]+) is written {name} in the docs; the catch-all /(.*) as /.
        documented = re.escape(pattern.replace("(.*)", "")).replace(re.escape("([^/]+)"), r"\{\w+\}")
        assert re.search(rf"^- `GET {documented}[`?]", listed, re.M), f"{pattern} is not in docs/protocol.md"

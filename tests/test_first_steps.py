"""The first steps of docs/operations.md, as a new operator takes them, through real processes.

The server starts before any token exists (the tokens file is made later,
by the command its log names); every message names the command that was run
(``python server.py`` here, ``study-time`` installed: tests/test_install.py);
the state directory of the documented ``sudo`` step is made by systemd.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.auth_helpers import bearer, create, refused
from tests.support.helpers import FAST, Client, ServerProcess, run_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]


@pytest.mark.gen_test(timeout=60)
async def test_the_first_start_needs_no_tokens_file_and_says_how_to_make_one(tmp_path):
    path = tmp_path / "data" / "tokens.json"  # neither the file nor its folder exist yet
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db", *ARGS, "--auth=token", f"--tokens-file={path}"
    ) as server:
        assert "authentication: token (0 tokens" in server.log
        assert (
            f"--tokens-file {path} does not exist yet: every token is refused until it does (create"
            f" tokens with: python server.py tokens create --user ID --tokens-file {path}; no restart needed)"
        ) in server.log
        await refused(
            await Client.connect(server.url, "u1", "c1", headers=bearer("stt_x")), 4401, "unauthorized"
        )
        # Made with the command the log names: taken on the next connection, no restart.
        token = create(path, "--user", "u1")
        client = await Client.connect(server.url, "u1", "c1", headers=bearer(token))
        await client.connected()
        await client.close()
        await wait_for(lambda: "loaded 1 tokens" in server.log, message="the file loaded")
        assert server.terminate() == 0


def test_a_tokens_file_that_is_not_a_file_still_stops_start_up(tmp_path):
    result = run_server(
        "--port=0", f"--store=sqlite:///{tmp_path}/db", "--auth=token", f"--tokens-file={tmp_path}"
    )
    assert result.returncode == 2
    assert f"server.py: error: invalid --tokens-file: cannot read {tmp_path}" in result.stderr
    assert "python server.py tokens create --user ID" in result.stderr


def test_usage_and_errors_name_the_command_run_from_a_checkout(tmp_path):
    help_text = run_server("--help").stdout
    assert help_text.startswith("usage: server.py ")
    assert "'server.py report --help'" in help_text and "'server.py tokens --help'" in help_text
    tokens_help = run_server("tokens", "--help").stdout
    assert tokens_help.startswith("usage: server.py tokens ")
    unknown = run_server("reprot")
    assert unknown.stderr.strip() == (
        "server.py: error: unknown command 'reprot': the commands are 'report', 'tokens' and"
        " 'migrate'; settings start with -- (see python server.py --help)"
    )


def documented_steps() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    return text[text.index("## Deploying") : text.index("## Health endpoints")]


def test_the_state_directory_of_the_sudo_step_is_made_by_the_unit_before_the_step():
    unit = (ROOT / "deploy" / "study-time.service").read_text()
    (state,) = re.findall(r"^StateDirectory=(\S+)$", unit, re.M)
    (working,) = re.findall(r"^WorkingDirectory=(\S+)$", unit, re.M)
    assert working == f"/var/lib/{state}"  # systemd makes it, owned by User=, before ExecStart
    steps = documented_steps()
    first_start = steps.index("systemctl enable --now study-time")
    tokens_step = steps.index(f"cd {working} &&")
    assert first_start < tokens_step, "the sudo step uses the directory before the first start makes it"
    assert "StateDirectory=" in steps[first_start : tokens_step + 400]

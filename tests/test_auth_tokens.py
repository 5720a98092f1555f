"""--auth=token: the `server.py tokens` command, lookup through a real server, reload without restart."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from auth.tokens import TokenEntry, hash_token, new_token, read_entries, write_entries
from tests.support.auth_helpers import bearer, create, refused, tokens
from tests.support.helpers import ROOT, Client, ServerProcess, run_server, wait_for


def token_id(path, user: str) -> str:
    entries = json.loads(path.read_text())["tokens"]
    return next(entry["id"] for entry in entries if entry["user"] == user)


def test_create_prints_the_token_once_and_stores_only_its_hash(tmp_path):
    path = tmp_path / "secrets" / "tokens.json"
    token = create(path, "--user", "123", "--roles", "teacher", "--courses", "math-101,art")
    text = path.read_text()
    assert token not in text
    assert token[4:] not in text
    (entry,) = json.loads(text)["tokens"]
    assert entry["user"] == "123"
    assert entry["roles"] == ["teacher"]
    assert entry["courses"] == ["art", "math-101"]
    assert len(entry["sha256"]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    listed = tokens("list", "--tokens-file", str(path)).stdout
    assert entry["id"] in listed and "user=123" in listed and token not in listed
    # A second token is different and both are kept.
    second = create(path, "--user", "456")
    assert second != token
    assert len(json.loads(path.read_text())["tokens"]) == 2


def test_the_command_refuses_bad_input(tmp_path):
    path = str(tmp_path / "tokens.json")
    bad_user = tokens("create", "--user", "not valid!", "--tokens-file", path, check=False)
    assert bad_user.returncode == 2 and "--user" in bad_user.stderr
    missing = tokens("revoke", "nope", "--tokens-file", path, check=False)
    assert missing.returncode == 1 and "no token with id 'nope'" in missing.stderr
    (tmp_path / "broken.json").write_text("{not json")
    broken = tokens("create", "--user", "1", "--tokens-file", str(tmp_path / "broken.json"), check=False)
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr
    assert (tmp_path / "broken.json").read_text() == "{not json"  # nothing lost


@pytest.mark.gen_test(timeout=60)
async def test_tokens_are_looked_up_and_limited(start_service, tmp_path):
    path = tmp_path / "tokens.json"
    kiosk = create(path, "--user", "u1", "--courses", "c1")
    admin = create(path, "--user", "ops", "--roles", "admin")
    service = await start_service(auth="token", tokens_file=str(path))

    client = await Client.connect(service.url, "u1", "c1", headers=bearer(kiosk))
    await client.connected()
    await client.close()
    browser = await Client.connect(service.url, "u1", "c1", subprotocols=["study-time.v1", f"bearer.{kiosk}"])
    await browser.connected()
    assert browser.conn.selected_subprotocol == "study-time.v1"
    await browser.close()

    await refused(await Client.connect(service.url, "u1", "c2", headers=bearer(kiosk)), 4403, "forbidden")
    await refused(await Client.connect(service.url, "u2", "c1", headers=bearer(kiosk)), 4403, "forbidden")
    await refused(
        await Client.connect(service.url, "u1", "c1", headers=bearer(kiosk + "x")), 4401, "unauthorized"
    )
    await refused(await Client.connect(service.url, "u1", "c1"), 4401, "unauthorized")
    anyone = await Client.connect(service.url, "u9", "c7", headers=bearer(admin))
    await anyone.connected()
    await anyone.close()


@pytest.mark.gen_test(timeout=60)
async def test_created_and_revoked_tokens_take_effect_without_a_restart(start_service, tmp_path):
    path = tmp_path / "tokens.json"
    first = create(path, "--user", "u1")
    service = await start_service(auth="token", tokens_file=str(path))
    client = await Client.connect(service.url, "u2", "c1", headers=bearer(first))
    await refused(client, 4403, "forbidden")

    second = create(path, "--user", "u2")
    client = await Client.connect(service.url, "u2", "c1", headers=bearer(second))
    await client.connected()
    await client.close()

    tokens("revoke", token_id(path, "u1"), "--tokens-file", str(path))
    client = await Client.connect(service.url, "u1", "c1", headers=bearer(first))
    message = await refused(client, 4401, "unauthorized")
    assert "revoked" in message["message"]

    # A broken hand edit keeps the tokens loaded before; fixing it takes effect.
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    client = await Client.connect(service.url, "u2", "c1", headers=bearer(second))
    await client.connected()
    await client.close()
    path.write_text(good)

    # Deleting the file revokes every token.
    path.unlink()
    client = await Client.connect(service.url, "u2", "c1", headers=bearer(second))
    await refused(client, 4401, "unauthorized")


def test_concurrent_creates_and_revokes_lose_nothing_and_resurrect_nothing(tmp_path):
    """Many ``tokens create`` and ``tokens revoke`` processes at once, on one file.

    Without a lock, each reads the file, changes its copy and writes it back:
    a create that read before a revoke wrote puts the revoked token back, and
    two creates lose one of the tokens.
    """
    path = tmp_path / "tokens.json"
    existing = [new_token() for _ in range(12)]
    write_entries(
        str(path),
        [
            TokenEntry(id=f"old{n}", sha256=hash_token(token), user=f"u{n}", roles=frozenset(), courses=None)
            for n, token in enumerate(existing)
        ],
    )
    command = [sys.executable, "server.py", "tokens"]
    args = [["revoke", f"old{n}"] for n in range(12)] + [["create", "--user", f"new{n}"] for n in range(12)]
    processes = [
        subprocess.Popen(
            [*command, *arg, "--tokens-file", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arg in args
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), results
    created = [out.strip() for out, _err in results if out.strip()]
    assert len(created) == 12
    hashes = {entry.sha256 for entry in read_entries(str(path))}
    assert {hash_token(token) for token in created} <= hashes, "a created token was lost"
    assert not {hash_token(token) for token in existing} & hashes, "a revoked token came back"
    assert len(hashes) == 12
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{path}.lock").st_mode) == 0o600


def test_a_token_for_no_course_is_refused(tmp_path):
    from tests.support.auth_helpers import tokens

    result = tokens(
        "create", "--user", "u", "--courses", "", "--tokens-file", str(tmp_path / "t.json"), check=False
    )
    assert result.returncode == 2
    assert "must list at least one course id" in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_listing_a_missing_tokens_file_says_so(tmp_path):
    from tests.support.auth_helpers import tokens

    result = tokens("list", "--tokens-file", str(tmp_path / "nonexistent.json"), check=False)
    assert result.returncode == 1
    assert "nonexistent.json does not exist" in result.stderr or "cannot read" in result.stderr


# The tokens file's own safety: whoever can write it can add a token for anyone.


@pytest.mark.parametrize(("mode", "who"), [(0o666, "everyone"), (0o620, "its group")])
def test_a_tokens_file_others_may_write_stops_start_up(tmp_path, mode, who):
    path = tmp_path / "tokens.json"
    create(path, "--user", "u1")
    path.chmod(mode)
    result = run_server(
        "--port=0", "--auth=token", f"--tokens-file={path}", f"--store=sqlite:///{tmp_path}/db"
    )
    assert result.returncode == 2, result.stderr
    assert f"invalid --tokens-file: {path} is writable by {who} (mode {mode:04o})" in result.stderr
    assert f"chmod 600 {path}" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stderr


@pytest.mark.gen_test(timeout=60)
async def test_a_tokens_file_made_writable_by_others_is_not_reloaded(tmp_path):
    path = tmp_path / "tokens.json"
    kept = create(path, "--user", "u1")
    with ServerProcess("--auth=token", f"--tokens-file={path}", f"--store=sqlite:///{tmp_path}/db") as server:
        # Someone makes the file writable by everyone and anyone adds an admin token.
        path.chmod(0o666)
        planted = new_token()
        entries = read_entries_unchecked(path)
        entries.append(TokenEntry("planted", hash_token(planted), "intruder", frozenset({"admin"}), None))
        data = {"version": 1, "tokens": [entry.to_json() for entry in entries]}
        path.write_text(json.dumps(data))
        # Noticed on the next request (the mode is part of what the server watches) and on SIGHUP.
        for reload in (False, True):
            if reload:
                server.signal(signal.SIGHUP)
                await wait_for(lambda: "reloaded on SIGHUP" in server.log, timeout=10, message="the reload")
            intruder = await Client.connect(server.url, "u2", "c1", headers=bearer(planted))
            await refused(intruder, 4401, "unauthorized")
            learner = await Client.connect(server.url, "u1", "c1", headers=bearer(kept))
            await learner.connected()
            await learner.close()
        assert server.terminate() == 0
    errors = [line for line in server.output if " ERROR " in line]
    assert errors and all(f"{path} is writable by everyone (mode 0666)" in line for line in errors), errors
    assert "keeping the 1 tokens loaded before" in errors[0]


def read_entries_unchecked(path) -> list[TokenEntry]:
    from auth.tokens import parse_entries

    return parse_entries(json.loads(path.read_text()))


def test_create_under_umask_000_makes_a_private_folder_and_file(tmp_path):
    path = tmp_path / "state" / "study-time" / "tokens.json"
    result = subprocess.run(
        [sys.executable, "server.py", "tokens", "create", "--user", "u1", "--tokens-file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,
    )
    assert result.returncode == 0, result.stderr
    for folder in (path.parent.parent, path.parent):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{path}.lock").st_mode) == 0o600

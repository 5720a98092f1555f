"""The SQLite store's files hold learners' addresses and user agents: owner-only whatever the umask."""

from __future__ import annotations

import os
import stat

import pytest

from tests.support.helpers import ServerProcess

SUFFIXES = ("", "-wal", "-shm", ".lock")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_database_and_its_wal_shm_and_lock_files_are_created_owner_only(tmp_path, umask):
    db = tmp_path / "data" / "study_time.db"  # the directory does not exist yet either
    with ServerProcess(f"--store=sqlite:///{db}", umask=umask) as server:
        # While it runs, SQLite keeps its -wal and -shm next to the database.
        modes = {suffix: mode(f"{db}{suffix}") for suffix in SUFFIXES}
        assert modes == dict.fromkeys(SUFFIXES, 0o600), {k: oct(v) for k, v in modes.items()}
        assert mode(db.parent) == 0o700
        assert server.terminate() == 0


def test_existing_files_open_to_others_are_made_owner_only_and_it_is_logged(tmp_path):
    db = tmp_path / "study_time.db"
    with ServerProcess(f"--store=sqlite:///{db}") as server:
        assert server.terminate() == 0
    for suffix in ("", ".lock"):
        os.chmod(f"{db}{suffix}", 0o644)
    with ServerProcess(f"--store=sqlite:///{db}", umask=0) as server:
        assert {mode(f"{db}{suffix}") for suffix in SUFFIXES} == {0o600}
        assert server.terminate() == 0
    assert f"{db} was open to others (644): made it owner-only (600)" in server.log
    assert f"{db}.lock was open to others (644): made it owner-only (600)" in server.log

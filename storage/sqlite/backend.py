"""The SQLite backend: one database file, one server process."""

from __future__ import annotations

from ..backends import Backend
from ..base import Store
from . import policylog
from .outbox import SQLiteOutbox
from .reports import SQLiteReports
from .store import SQLiteStore, path_from_url


class SQLiteBackend(Backend):
    supports_many_processes = False

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)

    def store(self, *, server: bool = True) -> SQLiteStore:
        # Only the server holds the file lock and closes what a crash left open.
        return SQLiteStore(self.path, exclusive=server)

    def report_source(self) -> SQLiteReports:
        return SQLiteReports(self.path)

    async def record_policy(self, store: Store, policy: str, now: float) -> None:
        await policylog.record(self.path, policy, now)

    def outbox(self) -> SQLiteOutbox:
        return SQLiteOutbox(self.path)

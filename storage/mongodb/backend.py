"""The MongoDB backend: one database shared by any number of server processes."""

from __future__ import annotations

from ..backends import Backend
from ..base import Store
from ..writer import SessionWriter
from . import policylog
from .coordination import MongoCoordinator
from .outbox import MongoOutbox
from .reports import MongoReports
from .store import MongoStore, validate_url


class MongoBackend(Backend):
    supports_many_processes = True

    def __init__(self, url: str) -> None:
        validate_url(url)  # a URL the store could never use is an invalid setting, found before binding
        self._url = url

    def store(self, *, server: bool = True) -> MongoStore:
        # ``server`` makes no difference: opening a MongoDB store claims nothing
        # (processes are told apart by their liveness records: coordination.py).
        return MongoStore(self._url)

    def report_source(self) -> MongoReports:
        return MongoReports(self._url)

    def coordinator(
        self,
        store: Store,
        writer: SessionWriter,
        *,
        heartbeat_interval: float,
        process_timeout: float,
        one_course: bool = False,
    ) -> MongoCoordinator:
        if not isinstance(store, MongoStore):
            raise TypeError(f"a MongoDB coordinator needs a MongoStore, not {type(store).__name__}")
        return MongoCoordinator(
            store,
            writer,
            heartbeat_interval=heartbeat_interval,
            process_timeout=process_timeout,
            one_course=one_course,
        )

    async def record_policy(self, store: Store, policy: str, now: float) -> None:
        if not isinstance(store, MongoStore):
            raise TypeError(f"a MongoDB policy log needs a MongoStore, not {type(store).__name__}")
        await policylog.record(store.db, policy, now)

    def outbox(self) -> MongoOutbox:
        return MongoOutbox(self._url)

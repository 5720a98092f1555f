"""Which backend serves a ``--store`` URL: one registry, chosen by the URL's scheme.

A :class:`Backend` is the one object the service asks for what a kind of
store provides: the store itself, a read-only report source on the same
database, and the coordinator of the server processes sharing it. Each
kind lives in its own package (``storage/sqlite/``, ``storage/mongodb/``)
with its store, report queries and coordination, and is imported only when
a URL names it: a server on SQLite never loads PyMongo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from importer import import_from_string

from .base import Store, StoreError
from .coordination import Coordinator
from .outbox import Outbox

if TYPE_CHECKING:
    from reports.source import ReportSource

    from .writer import SessionWriter

#: URL scheme -> ``module:attribute`` of its :class:`Backend` class, imported on first use.
BACKENDS: dict[str, str] = {
    "sqlite": "storage.sqlite.backend:SQLiteBackend",
    "mongodb": "storage.mongodb.backend:MongoBackend",
    "mongodb+srv": "storage.mongodb.backend:MongoBackend",
}


class Backend(ABC):
    """One kind of store, for one ``--store`` URL.

    Building it validates the URL (a :class:`StoreError`, which never echoes
    a MongoDB URL: it may carry a password); nothing connects until a store
    or report source it returns is opened.
    """

    #: Whether several server processes may share this store.
    supports_many_processes = False

    @abstractmethod
    def __init__(self, url: str) -> None: ...

    @abstractmethod
    def store(self, *, server: bool = True) -> Store:
        """The store (not yet opened).

        ``server=False`` is for tools that only read or add records (reports,
        tests) next to a running server: they do not claim the store's open
        sessions as their own.
        """

    @abstractmethod
    def report_source(self) -> ReportSource:
        """Read-only report queries on the same database, over a connection of their own."""

    def coordinator(
        self,
        store: Store,
        writer: SessionWriter,
        *,
        heartbeat_interval: float,
        process_timeout: float,
        one_course: bool = False,
    ) -> Coordinator:
        """What coordinates this process with the others on ``store``: nothing, for a single process.

        ``one_course`` (``--overlap-policy=one-course``): share each learner's clock between processes.
        """
        return Coordinator(writer)

    async def record_policy(self, store: Store, policy: str, now: float) -> None:
        """Note in the opened ``store`` that ``--overlap-policy`` is ``policy`` from ``now`` on, for
        reports (``ReportSource.policies``); a store that keeps no log notes nothing."""
        return None

    @abstractmethod
    def outbox(self) -> Outbox:
        """The xAPI outbox in the same database (not yet opened): ``--xapi-endpoint``, docs/xapi.md."""


def backend_for(url: str) -> Backend:
    """The backend for a ``--store`` URL; :class:`StoreError` if the URL cannot be used.

    Nothing connects here, so every error it raises is about the URL itself
    (its message starts with ``invalid --store:``): ``server.py`` checks it
    before binding the port and exits 2, like any other invalid setting.
    """
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    target = BACKENDS.get(scheme)
    if target is None:
        # Only the scheme is echoed: a database URL may carry a password.
        raise StoreError(
            f"invalid --store: unsupported URL scheme {scheme!r}:"
            " expected sqlite:///PATH or mongodb://HOST:PORT/DBNAME"
        )
    return load(target)(url)


def load(target: str) -> type[Backend]:
    """The backend class ``target`` (``module:Class``) names, imported on first use."""
    return import_from_string(target)

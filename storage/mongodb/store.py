"""The shared store: study records in MongoDB (or FerretDB), for any number of server processes.

Uses PyMongo's native asyncio client (:class:`pymongo.AsyncMongoClient`),
which runs on the IOLoop Tornado uses; Motor, its predecessor, is deprecated
and ran every call through a thread pool. Only what both MongoDB 6.0+ and
FerretDB 1.24 support is used: single-document atomic updates, unordered
bulk writes, ``find_one_and_update``, and ``$match``/``$group``/``$sort``
aggregations. No transactions; change streams (coordination.py) and the TTL
index that expires old sessions (:meth:`MongoStore.retain`) only where the
server has them, with a fallback that FerretDB runs. The tests
run on FerretDB; ``docs/storage.md`` says what that does and does not cover,
and how the running totals (``study_leases``) stay exact.

``docs/storage.md`` documents every collection, field and index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC

from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo import AsyncMongoClient, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.uri_parser import parse_uri

from tracking.session import EndReason, SessionRecord

from ..base import Store, StoreError, StoreUnavailable
from .schema import (
    INDEXES,
    LEASE_FIELDS,
    LEASES,
    META,
    PROCESSES,
    SCHEMA_VERSION,
    SESSIONS,
    TAKEOVERS,
    TTL_INDEX,
    TTL_KEY,
    checkpoint_update,
    document_from_record,
    fold,
    from_date,
    lease_key,
    record_from_document,
    retention_step,
    session_filter,
    to_date,
)

log = logging.getLogger("study_time.store")

DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
INDEX_ATTEMPTS = 5
#: Seconds a survivor holds its claim on a dead process while it closes the
#: process's sessions; if it dies meanwhile, another claims it after this.
REAP_SECONDS = 60.0

# Short defaults so that an outage is noticed in seconds, not after PyMongo's
# 30 s server selection, and a hung connection cannot stall the flushes; a
# connection string option of the same name wins. (Not timeoutMS: when set,
# it replaces serverSelectionTimeoutMS as the bound on server selection.)
DEFAULT_OPTIONS = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000, "socketTimeoutMS": 10000}


def new_process_id() -> str:
    """Unique per server process, readable in the database: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_name(url: str) -> str:
    """The database named in a ``mongodb://`` URL's path; the URL itself is never echoed."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    # Credentials cannot contain a raw "/" (they must be percent-encoded), so
    # the first "/" after the scheme starts the path.
    _, slash, path = rest.partition("/")
    name = path.split("?", 1)[0]
    if not slash or not name:
        raise StoreError(
            "invalid --store: a mongodb:// URL must name the database, as in mongodb://HOST:PORT/DBNAME"
        )
    if len(name) > 63 or any(c in name for c in '/\\. "$'):
        raise StoreError("invalid --store: the database name in the mongodb:// URL is not valid")
    return name


def validate_url(url: str) -> None:
    """Check a ``mongodb://`` URL without connecting; :class:`StoreError` says what is wrong.

    ``mongodb+srv://`` URLs are checked for their database name only: the
    rest needs a DNS lookup, which is the store's opening, not the setting's.
    """
    database_name(url)
    if not url.startswith("mongodb://"):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown options: PyMongo warns and ignores them
            parse_uri(url)
    except (ConfigurationError, ValueError, TypeError) as exc:
        # PyMongo's messages name the offending option, never the password.
        raise StoreError(f"invalid --store: {exc}") from None


def hosts(url: str) -> str:
    """The ``host:port`` list of a MongoDB URL, for messages: never the user or password."""
    rest = url.split("://", 1)[1] if "://" in url else url
    return rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]


class MongoStore(Store):
    """Study records in a MongoDB database shared by every server process."""

    def __init__(
        self, url: str, *, socket_timeout_ms: int | None = None, event_listeners: Sequence[object] = ()
    ) -> None:
        """``socket_timeout_ms`` replaces the default ``socketTimeoutMS`` (unless the URL sets it);
        ``event_listeners`` are PyMongo monitoring listeners (tests count commands with them)."""
        self._url = url
        self._listeners = list(event_listeners)
        #: Running totals built by the upgrade at the last :meth:`open` (docs/storage.md, "Upgrades").
        self.upgraded = 0
        self.database_name = database_name(url)
        present = {key.lower() for key in _query_options(url)}
        defaults = dict(DEFAULT_OPTIONS)
        if socket_timeout_ms is not None:
            defaults["socketTimeoutMS"] = socket_timeout_ms
        self._options = {k: v for k, v in defaults.items() if k.lower() not in present}
        self.process_id = new_process_id()
        self._client: AsyncMongoClient | None = None
        self._db: AsyncDatabase | None = None
        # Sessions this store has inserted and not yet written final: their
        # next snapshots are updates (see save).
        self._inserted: set[str] = set()

    @property
    def db(self) -> AsyncDatabase:
        if self._db is None:
            raise StoreUnavailable("the MongoDB store is not open")
        return self._db

    async def open(self) -> None:
        try:
            self._client = AsyncMongoClient(
                self._url,
                tz_aware=True,
                appname="study-time",
                event_listeners=self._listeners,
                **self._options,
            )
        except (ConfigurationError, ValueError, TypeError) as exc:
            # PyMongo's messages name the offending option, never the password.
            raise StoreError(f"invalid --store: {exc}") from None
        codecs = CodecOptions(tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_MS)
        self._db = self._client.get_database(self.database_name, codec_options=codecs)
        started = time.monotonic()
        try:
            await self._db.command("ping")
            await self._create_indexes()
            self.upgraded = await self.upgrade()
        except ServerSelectionTimeoutError:
            # PyMongo's message is a topology dump hundreds of characters
            # long; what an operator needs is where and how long.
            await self.close()
            raise StoreError(
                f"cannot use the MongoDB store: no server answered at {hosts(self._url)}"
                f" within {time.monotonic() - started:.1f}s (serverSelectionTimeoutMS)"
            ) from None
        except PyMongoError as exc:
            await self.close()
            raise StoreError(f"cannot use the MongoDB store: {_describe(exc)}") from None

    async def _create_indexes(self) -> None:
        """Create the indexes that are missing, by name.

        Asking FerretDB 1.24 to create a compound index that already exists
        makes it drop the connection, so existing ones are skipped here
        rather than relying on the server treating a repeat as a no-op.
        """
        for collection, indexes in INDEXES.items():
            for attempt in range(INDEX_ATTEMPTS):
                existing = {index["name"] async for index in await self.db[collection].list_indexes()}
                missing = [index for index in indexes if index.document["name"] not in existing]
                if not missing:
                    break
                try:
                    await self.db[collection].create_indexes(missing)
                    break
                except AutoReconnect:
                    # Processes starting together race to create them; the
                    # loser's connection is dropped (FerretDB) and it looks again.
                    if attempt == INDEX_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None
        self._db = None

    async def ping(self) -> None:
        async with errors():
            await self.db.command("ping")

    async def save(self, records: Sequence[SessionRecord]) -> None:
        """Insert the sessions new to the store, whole; send only what changed of the others.

        A session's first snapshot is one insert (its document, whole); every
        later one is an update of the fields that change (``checkpoint_update``),
        filtered on the shard key, the id and an older ``rev``. An insert that
        finds the document there (its earlier reply was lost) becomes an
        update, so nothing is read first.
        """
        if not records:
            return
        latest: dict[str, SessionRecord] = {}
        for record in records:  # a batch may repeat a session: its highest rev wins
            if record.session_id not in latest or record.rev > latest[record.session_id].rev:
                latest[record.session_id] = record
        new = [r for r in latest.values() if r.session_id not in self._inserted]
        known = [r for r in latest.values() if r.session_id in self._inserted]
        sessions = self.db[SESSIONS]
        async with errors():
            if new:
                try:
                    await sessions.insert_many(
                        [document_from_record(r, self.process_id) for r in new], ordered=False
                    )
                except BulkWriteError as exc:
                    write_errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != DUPLICATE_KEY for e in write_errors):
                        raise StoreUnavailable(
                            f"MongoDB refused a write: {write_errors[0].get('errmsg')}"
                        ) from None
                    # There already: written before (a lost reply) or by a recovery.
                    known.extend(new[e["index"]] for e in write_errors)
                self._inserted.update(r.session_id for r in new)
            if known:
                # A session someone else closed as server_lost is final.
                await sessions.bulk_write(
                    [
                        UpdateOne(
                            {
                                **session_filter(r),
                                "rev": {"$lt": r.rev},
                                "endReason": {"$ne": EndReason.SERVER_LOST},
                            },
                            checkpoint_update(r),
                        )
                        for r in known
                    ],
                    ordered=False,
                )
        # A final snapshot is never followed by another insert: forget it.
        for r in latest.values():
            if not r.is_open:
                self._inserted.discard(r.session_id)

    async def total_seconds(self, user_id: str, course_id: str) -> float:
        """The sum of the stored sessions (not the running total: see ``session_credit``)."""
        return await self.session_credit(user_id, course_id)

    async def session_credit(self, user_id: str, course_id: str, before: float | None = None) -> float:
        """The credit of the stored sessions of a user and course (started ``before``, if given).

        Reads every one of them: for reports, tests and the one-time building
        of a running total, never for an opening that has its running total.
        """
        match: dict = {"userId": user_id, "courseId": course_id}
        if before is not None:
            match["startedAt"] = {"$lt": to_date(before)}
        pipeline = [{"$match": match}, {"$group": {"_id": None, "seconds": {"$sum": "$seconds"}}}]
        async with errors():
            rows = await (await self.db[SESSIONS].aggregate(pipeline)).to_list()
        return float(rows[0]["seconds"]) if rows else 0.0

    async def upgrade(self) -> int:
        """Bring a database written by an earlier version to this schema; return the totals built.

        Version 1 kept no running totals: each (user, course) gets its
        ``seconds`` from the sum of its stored sessions, once. Idempotent and
        safe to run by several processes starting together: a total is only
        ever set where none exists, and a new database is marked current at
        once. Run on every start (``open``) and by ``study-time migrate``.
        """
        async with errors():
            meta = await self.db[META].find_one({"_id": "schema"})
            if meta is not None and meta.get("version", 0) >= SCHEMA_VERSION:
                return 0
            built = 0
            if await self.db[SESSIONS].find_one({}, {"_id": 1}) is not None:
                pipeline = [
                    {"$group": {"_id": {"u": "$userId", "c": "$courseId"}, "seconds": {"$sum": "$seconds"}}}
                ]
                rows = await (await self.db[SESSIONS].aggregate(pipeline)).to_list()
                for row in rows:
                    user, course = row["_id"]["u"], row["_id"]["c"]
                    fields = {"userId": user, "courseId": course, "seconds": float(row["seconds"])}
                    done = await self.db[LEASES].update_one(
                        {"_id": lease_key(user, course), "seconds": {"$exists": False}}, {"$set": fields}
                    )
                    if not done.matched_count:
                        # No document yet, or one that has its total already.
                        with contextlib.suppress(DuplicateKeyError):
                            await self.db[LEASES].insert_one({"_id": lease_key(user, course), **fields})
                            built += 1
                    else:
                        built += 1
            # Processes starting together race to create it: the loser's is a duplicate.
            with contextlib.suppress(DuplicateKeyError):
                await self.db[META].update_one(
                    {"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION}}, upsert=True
                )
        return built

    async def expire(self, ended_before: float) -> int:
        """One ``delete_many`` on ``endedAt`` (the ``open_by_process`` index); totals stay."""
        async with errors():
            result = await self.db[SESSIONS].delete_many(
                {"endedAt": {"$ne": None, "$lt": to_date(ended_before)}}
            )
        return result.deleted_count

    async def retain(self, seconds: float) -> bool:
        """Have the server delete the sessions that ended ``seconds`` ago: a TTL index on ``endedAt``.

        Brings the index to the setting: created, its ``expireAfterSeconds``
        changed (``collMod``, else dropped and created again), or dropped when
        ``seconds`` is 0 (keep everything). Returns whether the server now
        expires records itself. A server without TTL indexes (FerretDB 1.24)
        refuses the index: one INFO line, False, and the writer deletes hourly
        (:meth:`expire`); so does a build not confirmed in time (a warning).
        Failing to read the indexes or to drop the TTL index raises
        :class:`StoreUnavailable`.
        """
        expire_after = math.ceil(seconds)
        async with errors():
            index = await self._ttl_index()
            step = retention_step(index, expire_after)
            if step == "drop":
                try:
                    await self.db[SESSIONS].drop_index(index["name"])  # type: ignore[index]
                except OperationFailure as exc:
                    if exc.code != INDEX_NOT_FOUND:  # IndexNotFound: another process dropped it first
                        raise
                return False
            if step in ("none", "keep"):
                return step == "keep"
            try:
                if step == "create":
                    await self._create_ttl(expire_after)
                else:
                    await self._change_ttl(index["name"], expire_after)  # type: ignore[index]
            except OperationFailure as exc:
                log.info(
                    "the MongoDB server refused a TTL index on %s.endedAt (%s):"
                    " records older than --keep-sessions-days are deleted hourly instead",
                    SESSIONS,
                    (exc.details or {}).get("errmsg", exc),
                )
                return False
            except PyMongoError as exc:
                # Building the index over years of sessions can outlast the
                # socket timeout; the server goes on building it, and a later
                # start finds it. Until then the hourly delete does the same.
                log.warning(
                    "the TTL index on %s.endedAt was not confirmed (%s): deleting old records hourly",
                    SESSIONS,
                    _describe(exc),
                )
                return False
        return True

    async def _ttl_index(self) -> dict | None:
        """The ``study_sessions`` index on ``{endedAt: 1}`` alone, whatever its name (or None)."""
        async for index in await self.db[SESSIONS].list_indexes():
            if dict(index["key"]) == TTL_KEY:
                return dict(index)
        return None

    async def _create_ttl(self, expire_after: int) -> None:
        await self.db[SESSIONS].create_indexes(
            [IndexModel(list(TTL_KEY.items()), name=TTL_INDEX, expireAfterSeconds=expire_after)]
        )

    async def _change_ttl(self, name: str, expire_after: int) -> None:
        """Set an existing index's ``expireAfterSeconds``; drop and create it if ``collMod`` is refused."""
        try:
            await self.db.command(
                "collMod", SESSIONS, index={"name": name, "expireAfterSeconds": expire_after}
            )
        except OperationFailure:
            await self.db[SESSIONS].drop_index(name)
            await self._create_ttl(expire_after)

    async def live_processes(self, now: float) -> list[str]:
        """The ids of the server processes whose liveness record has not expired at ``now``."""
        async with errors():
            return [
                d["_id"]
                async for d in self.db[PROCESSES].find({"expiresAt": {"$gte": to_date(now)}}, {"_id": 1})
            ]

    async def recover(self, now: float) -> list[SessionRecord]:
        """Close the open sessions of every process that is not alive; free what they held.

        A process is alive while its ``study_processes`` record has not
        expired (see :mod:`storage.mongodb.coordination`); sessions saved without a
        live owner (by a process that is gone, or by a store used outside a
        server) are orphans. Each expired process is claimed first
        (``reaper``, atomically): of several survivors only the one that
        claims it closes its sessions, so each orphan is closed once. A
        session's credit is added to its running total by the same guarded
        statement as any other (:func:`~storage.mongodb.schema.fold`).
        """
        async with errors():
            processes = [d async for d in self.db[PROCESSES].find({}, {"expiresAt": 1})]
            live = [d["_id"] for d in processes if from_date(d["expiresAt"]) >= now]
            keep = live + await self._claim_expired(processes, live, now)
            orphan_filter = {"endedAt": None, "processId": {"$nin": keep}}
            orphan_docs = [d async for d in self.db[SESSIONS].find(orphan_filter)]
            owners = {d.get("processId") for d in orphan_docs if d.get("processId")}
            owners.update(d["_id"] for d in processes if d["_id"] not in keep)
            recovered = await self._close_orphans([record_from_document(d) for d in orphan_docs])
            await self._free_dead(keep, owners, now)
        recovered.sort(key=lambda r: (r.started_at, r.session_id))
        return recovered

    async def _claim_expired(self, processes: list[dict], live: list[str], now: float) -> list[str]:
        """Claim each expired process (``reaper``, atomically); the ids of those other survivors hold."""
        claimed_by_others = []
        for d in processes:
            if d["_id"] in live:
                continue
            won = await self.db[PROCESSES].find_one_and_update(
                {
                    "_id": d["_id"],
                    "expiresAt": {"$lt": to_date(now)},
                    "$or": [{"reapUntil": {"$exists": False}}, {"reapUntil": {"$lt": to_date(now)}}],
                },
                {"$set": {"reaper": self.process_id, "reapUntil": to_date(now + REAP_SECONDS)}},
            )
            if won is None:
                claimed_by_others.append(d["_id"])
        return claimed_by_others

    async def _close_orphans(self, orphans: list[SessionRecord]) -> list[SessionRecord]:
        """Close each orphan at its last checkpoint (``server_lost``), then add the closed ones' credit."""
        recovered = []
        for record in orphans:
            # Guarded by rev: a checkpoint landing meanwhile wins, and the
            # next recovery closes the session at that checkpoint instead.
            result = await self.db[SESSIONS].update_one(
                {**session_filter(record), "rev": record.rev, "endedAt": None},
                {
                    "$set": {
                        "endedAt": to_date(record.credited_until),
                        "exact.endedAt": record.credited_until,
                        "endReason": EndReason.SERVER_LOST.value,
                    },
                    "$inc": {"rev": 1},
                },
            )
            if result.modified_count:
                recovered.append(
                    replace(
                        record,
                        ended_at=record.credited_until,
                        end_reason=EndReason.SERVER_LOST.value,
                        rev=record.rev + 1,
                    )
                )
        if recovered:
            await self.db[LEASES].bulk_write(
                [UpdateOne(*fold(r.user_id, r.course_id, r.session_id, r.seconds)) for r in recovered],
                ordered=False,
            )
        return recovered

    async def _free_dead(self, keep: list[str], owners: set[str], now: float) -> None:
        """Free the leases and notices of every process not in ``keep``; delete the records claimed here."""
        await self.db[LEASES].update_many(
            {"processId": {"$exists": True, "$nin": keep}},
            {"$unset": dict.fromkeys(LEASE_FIELDS, "")},
        )
        await self.db[TAKEOVERS].delete_many({"processId": {"$nin": keep}})
        # A process presumed dead that is in fact alive (cut off from the
        # store) learns it from this notice at its next look for notices.
        gone = {r_doc for r_doc in owners if r_doc not in keep}
        if gone:
            with contextlib.suppress(BulkWriteError):
                await self.db[TAKEOVERS].insert_many(
                    [
                        {"_id": f"dead:{pid}", "processId": pid, "dead": True, "at": to_date(now)}
                        for pid in gone
                    ],
                    ordered=False,
                )
        await self.db[PROCESSES].delete_many({"expiresAt": {"$lt": to_date(now)}, "reaper": self.process_id})


def errors() -> _MapErrors:
    """``async with errors():`` turns PyMongo's errors into :class:`StoreUnavailable`."""
    return _MapErrors()


class _MapErrors:
    """Turns PyMongo's errors into :class:`StoreUnavailable`, without the connection string."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and isinstance(exc, PyMongoError):
            raise StoreUnavailable(f"MongoDB: {_describe(exc)}") from exc
        return False


def _describe(exc: PyMongoError) -> str:
    if isinstance(exc, OperationFailure):
        return f"{type(exc).__name__} (code {exc.code}): {str(exc)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _query_options(url: str) -> list[str]:
    query = url.split("?", 1)[1] if "?" in url else ""
    return [part.split("=", 1)[0] for part in query.replace(";", "&").split("&") if part]

"""The xAPI outbox in the MongoDB database: the collection ``xapi_outbox``, one document per session.

Its own client (the store's is the ``mongo`` store's business). Every
server process shares the collection: :meth:`MongoOutbox.claim` takes each
entry with one atomic ``findAndModify`` that puts it off by the lease, so two
processes never send the same entry at the same time (and if one did, after
a lease ran out, the statement id makes the LRS answer 204, not store it twice).
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import PyMongoError

from ..base import StoreUnavailable
from ..outbox import Entry, Outbox, OutboxStats

COLLECTION = "xapi_outbox"
UNDELIVERED = {"delivered_at": None, "failed_at": None}


class MongoOutbox(Outbox):
    def __init__(self, url: str) -> None:
        self._url = url
        self._client: AsyncMongoClient | None = None
        self._coll = None

    async def open(self) -> None:
        self._client = AsyncMongoClient(self._url, appname="study-time-xapi")
        self._coll = self._client.get_default_database()[COLLECTION]
        await self._do(self._coll.create_index([("next_attempt_at", ASCENDING)], name="due"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def enqueue(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        ops = []
        for e in entries:
            fields = {"rev": e.rev, "statement": e.statement}
            new = {"enqueued_at": e.enqueued_at, "attempts": 0, "next_attempt_at": 0.0}
            ops.append(
                UpdateOne(
                    {"_id": e.session_id}, {"$setOnInsert": {**fields, **new, **UNDELIVERED}}, upsert=True
                )
            )
            ops.append(
                UpdateOne({"_id": e.session_id, "rev": {"$lt": e.rev}, **UNDELIVERED}, {"$set": fields})
            )
        await self._do(self.coll.bulk_write(ops, ordered=True))

    async def claim(self, now: float, limit: int, lease: float) -> list[Entry]:
        taken: list[Entry] = []
        for _ in range(limit):
            doc = await self._do(
                self.coll.find_one_and_update(
                    {**UNDELIVERED, "next_attempt_at": {"$lte": now}},
                    {"$set": {"next_attempt_at": now + lease}},
                    sort=[("next_attempt_at", ASCENDING), ("enqueued_at", ASCENDING)],
                    return_document=ReturnDocument.BEFORE,
                )
            )
            if doc is None:
                break
            taken.append(
                Entry(
                    doc["_id"],
                    doc["rev"],
                    doc["statement"],
                    doc["enqueued_at"],
                    doc["attempts"],
                    doc["next_attempt_at"],
                )
            )
        return taken

    async def delivered(self, session_id: str, now: float) -> None:
        await self._set(session_id, {"delivered_at": now, "last_error": None})

    async def retry(self, session_id: str, attempts: int, at: float, error: str) -> None:
        await self._set(session_id, {"attempts": attempts, "next_attempt_at": at, "last_error": error})

    async def fail(self, session_id: str, now: float, error: str) -> None:
        await self._set(session_id, {"failed_at": now, "last_error": error})

    async def stats(self) -> OutboxStats:
        waiting = await self._do(self.coll.count_documents(UNDELIVERED))
        oldest = await self._do(self.coll.find_one(UNDELIVERED, sort=[("enqueued_at", ASCENDING)]))
        failed = await self._do(self.coll.count_documents({"failed_at": {"$ne": None}}))
        return OutboxStats(waiting, oldest["enqueued_at"] if oldest else None, failed)

    async def purge(self, before: float) -> int:
        result = await self._do(self.coll.delete_many({"delivered_at": {"$ne": None, "$lt": before}}))
        return result.deleted_count

    @property
    def coll(self):
        if self._coll is None or self._client is None:
            raise StoreUnavailable("the MongoDB outbox is not open")
        return self._coll

    async def _set(self, session_id: str, fields: dict) -> None:
        await self._do(self.coll.update_one({"_id": session_id}, {"$set": fields}))

    @staticmethod
    async def _do(awaitable):
        try:
            return await awaitable
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB error: {type(exc).__name__}") from exc

"""Report queries on the MongoDB store, as aggregations FerretDB 1.24 can run.

Only ``$match``, ``$group`` (``$sum``, ``$min``, ``$max``), ``$sort``,
``$skip``, ``$limit`` and ``$project`` are used: FerretDB supports no date
or arithmetic expressions, so the day of a session in an IANA zone and the
cut of a boundary session are computed by :mod:`reports.split` in the
service, on projected rows. Every ``$match`` starts with equality on
``courseId`` and/or ``userId`` and a range on ``startedAt``, the prefix of
the store's indexes ``course_started`` and ``user_course_started``
(FerretDB pushes the equality down to its SQL query; see docs/reports.md
for the plans and the benchmark).

Reports open a client of their own that only reads: it creates no
collection or index (the server's store does that when it opens), so a
report or ``server.py report`` run against a database never changes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError

from reports.params import Window
from reports.source import GroupBy, GroupSum, ReportSource, Scope, Span
from reports.split import micros
from tracking.session import SessionRecord

from ..base import StoreError
from . import policylog
from .schema import SESSIONS, from_date, record_from_document, to_date
from .store import DEFAULT_OPTIONS, _query_options, database_name, errors

#: A report reads many documents; it may take longer than the store's default operation timeout.
REPORT_TIMEOUT_MS = 300_000

_FIELD = {"user_id": "userId", "course_id": "courseId"}  # never from input
_SPAN_FIELDS = {"userId": 1, "courseId": 1, "startedAt": 1, "creditedUntil": 1, "seconds": 1, "endedAt": 1}


def scope_filter(scope: Scope) -> dict:
    found: dict = {}
    if scope.user_id is not None:
        found["userId"] = scope.user_id
    if scope.course_id is not None:
        found["courseId"] = scope.course_id
    return found


def in_window(window: Window) -> dict:
    """:func:`reports.split.in_window` as a filter: overlaps the range, or starts in it."""
    found: dict = {}
    if window.bounded_end:
        found["startedAt"] = {"$lt": to_date(window.end)}
    if window.bounded_start:
        start = to_date(window.start)
        found["$or"] = [{"creditedUntil": {"$gt": start}}, {"startedAt": {"$gte": start}}]
    return found


def contained(window: Window) -> dict:
    found: dict = {}
    started: dict = {}
    if window.bounded_start:
        started["$gte"] = to_date(window.start)
    if window.bounded_end:
        started["$lt"] = to_date(window.end)
        found["creditedUntil"] = {"$lte": to_date(window.end)}
    if started:
        found["startedAt"] = started
    return found


def crossing(window: Window) -> dict | None:
    edges = []
    if window.bounded_start:
        edges.append({"startedAt": {"$lt": to_date(window.start)}})
    if window.bounded_end:
        edges.append({"creditedUntil": {"$gt": to_date(window.end)}})
    if not edges:
        return None
    return {"$and": [in_window(window), {"$or": edges}]}


def span(d: dict) -> Span:
    return Span(
        d["userId"],
        d["courseId"],
        from_date(d["startedAt"]),
        from_date(d["creditedUntil"]),
        float(d["seconds"]),
        d.get("endedAt") is None,
    )


class MongoReports(ReportSource):
    """Report queries over a read-only client of their own, connected on first use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: AsyncMongoClient | None = None
        self._db: AsyncDatabase | None = None

    def _connect(self) -> AsyncDatabase:
        """The database, through a client made on first use; nothing is created in it."""
        if self._db is None:
            present = {key.lower() for key in _query_options(self._url)}
            defaults = {**DEFAULT_OPTIONS, "socketTimeoutMS": REPORT_TIMEOUT_MS}
            options = {k: v for k, v in defaults.items() if k.lower() not in present}
            try:
                self._client = AsyncMongoClient(
                    self._url, tz_aware=True, appname="study-time-reports", **options
                )
            except (ConfigurationError, ValueError, TypeError) as exc:
                # PyMongo's messages name the offending option, never the password.
                raise StoreError(f"invalid --store: {exc}") from None
            codecs = CodecOptions(
                tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_MS
            )
            self._db = self._client.get_database(database_name(self._url), codec_options=codecs)
        return self._db

    async def _sessions(self):
        return self._connect()[SESSIONS]

    def contained_pipeline(self, scope: Scope, window: Window, by: GroupBy, accumulator: dict) -> list[dict]:
        return [
            {"$match": {**scope_filter(scope), **contained(window)}},
            {"$group": {"_id": f"${_FIELD[by]}", "value": accumulator}},
        ]

    async def contained(self, scope: Scope, window: Window, by: GroupBy) -> list[GroupSum]:
        sessions = await self._sessions()
        async with errors():
            # One accumulator per $group: FerretDB 1.24 computes only the first
            # accumulator of a group correctly (the others come back 0), so
            # the sums and the counts are two aggregations.
            seconds = {
                g["_id"]: g["value"]
                async for g in await sessions.aggregate(
                    self.contained_pipeline(scope, window, by, {"$sum": "$seconds"})
                )
            }
            counts = {
                g["_id"]: g["value"]
                async for g in await sessions.aggregate(
                    self.contained_pipeline(scope, window, by, {"$sum": 1})
                )
            }
            # Open sessions are few (one per live connection): find them apart
            # rather than carry a flag through the group (no $cond in FerretDB).
            open_filter = {**scope_filter(scope), **contained(window), "endedAt": None}
            field = _FIELD[by]
            still_open = {d[field] async for d in sessions.find(open_filter, {field: 1})}
        return [
            GroupSum(
                key,
                micros(total),
                int(counts.get(key, 0)),
                None,  # FerretDB 1.24 has no $min/$max accumulators: see extents()
                None,
                key in still_open,
            )
            for key, total in seconds.items()
        ]

    async def extents(
        self, scope: Scope, window: Window, by: GroupBy, keys: list[str]
    ) -> dict[str, tuple[float, float]]:
        field = _FIELD[by]
        sessions = await self._sessions()
        found: dict[str, tuple[float, float]] = {}
        async with errors():
            for start in range(0, len(keys), 1000):
                query = {
                    **scope_filter(scope),
                    **contained(window),
                    field: {"$in": keys[start : start + 1000]},
                }
                async for d in sessions.find(query, {field: 1, "startedAt": 1, "creditedUntil": 1}):
                    first, last = from_date(d["startedAt"]), from_date(d["creditedUntil"])
                    seen = found.get(d[field])
                    found[d[field]] = (
                        (first, last) if seen is None else (min(seen[0], first), max(seen[1], last))
                    )
        return found

    async def learners(self, scope: Scope, window: Window) -> dict[str, int]:
        sessions = await self._sessions()
        # One group per (course, learner), then one per course counting them:
        # $group on a document _id and $sum, both of which FerretDB 1.24 runs.
        pipeline = [
            {"$match": {**scope_filter(scope), **in_window(window)}},
            {"$group": {"_id": {"course": "$courseId", "user": "$userId"}}},
            {"$group": {"_id": "$_id.course", "value": {"$sum": 1}}},
        ]
        async with errors():
            return {g["_id"]: int(g["value"]) async for g in await sessions.aggregate(pipeline)}

    async def crossing(self, scope: Scope, window: Window) -> list[Span]:
        edges = crossing(window)
        if edges is None:
            return []
        sessions = await self._sessions()
        async with errors():
            return [span(d) async for d in sessions.find({**scope_filter(scope), **edges}, _SPAN_FIELDS)]

    async def spans(self, scope: Scope, window: Window, batch: int = 10_000) -> AsyncIterator[list[Span]]:
        sessions = await self._sessions()
        pipeline = [{"$match": {**scope_filter(scope), **in_window(window)}}, {"$project": _SPAN_FIELDS}]
        async with errors():
            cursor = await sessions.aggregate(pipeline, batchSize=batch)
            rows: list[Span] = []
            async for d in cursor:
                rows.append(span(d))
                if len(rows) >= batch:
                    yield rows
                    rows = []
            if rows:
                yield rows

    def _find(self, sessions, scope: Scope, window: Window, offset: int):
        query = sessions.find({**scope_filter(scope), **in_window(window)})
        return query.sort([("startedAt", 1), ("_id", 1)]).skip(offset)

    async def records(self, scope: Scope, window: Window, limit: int, offset: int) -> list[SessionRecord]:
        sessions = await self._sessions()
        async with errors():
            docs = await self._find(sessions, scope, window, offset).limit(limit).to_list(None)
        return [record_from_document(d) for d in docs]

    async def record_batches(
        self, scope: Scope, window: Window, offset: int = 0, batch: int = 1000
    ) -> AsyncIterator[list[SessionRecord]]:
        sessions = await self._sessions()
        async with errors():
            rows: list[SessionRecord] = []
            async for d in self._find(sessions, scope, window, offset).batch_size(batch):
                rows.append(record_from_document(d))
                if len(rows) >= batch:
                    yield rows
                    rows = []
            if rows:
                yield rows

    async def explain(self, scope: Scope, window: Window, by: GroupBy = "user_id") -> dict:
        """The server's plan for the leaderboard aggregation (for tests and docs)."""
        db = self._connect()
        async with errors():
            return await db.command(
                "explain",
                {
                    "aggregate": SESSIONS,
                    "pipeline": self.contained_pipeline(scope, window, by, {"$sum": "$seconds"}),
                    "cursor": {},
                },
            )

    async def policies(self) -> list[tuple[float, str]]:
        return await policylog.read(self._connect())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None
        self._db = None

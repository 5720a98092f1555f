"""Delivery of xAPI statements from the store's outbox to a Learning Record Store.

The writer tells the forwarder about every snapshot it has written
(:meth:`Forwarder.saved`); the final ones, of ended sessions, become outbox
entries at the next round (:meth:`Forwarder.pump`, every
:data:`POLL_SECONDS`). Each round then claims the entries that are due and
``PUT``s each to ``/statements?statementId=ID``:

- 2xx: the LRS has it (``204``, also when it already had this very
  statement: a retry after a crash or a lost answer stores nothing twice);
- ``400`` (not a valid statement) or ``409`` (the LRS holds a *different*
  statement with this id): refused for good, kept in the outbox as failed and
  logged, never sent again;
- anything else (no answer, 5xx, 401/403, 404, 429): tried again after an
  exponential backoff with jitter, 1 s doubling up to ``--xapi-max-retry-delay``.

The outbox lives in the store, so an LRS outage or a restart loses nothing:
what was not delivered is delivered later. At start, :meth:`Forwarder.start`
also enqueues the ended sessions of the last ``--xapi-catch-up`` seconds the
outbox lacks (enqueueing never resurrects a delivered entry), which covers a
crash between a session's final write and its enqueue.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import Callable, Sequence

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import PeriodicCallback

from metrics import Metrics
from reports.params import Window
from reports.source import ReportSource, Scope
from storage import StoreUnavailable
from storage.outbox import Entry, Outbox
from tracking.session import SessionRecord

from .statements import VERSION, StatementConfig, statement

log = logging.getLogger("study_time.xapi")

POLL_SECONDS = 1.0
#: Entries claimed per round (a full round is followed at once by another).
BATCH = 50
#: A claimed entry is due again after this many seconds if its delivery never reported back.
LEASE_SECONDS = 60.0
INITIAL_RETRY_DELAY = 1.0
#: Delivered entries are kept this long (a catch-up finds them and adds nothing), then purged.
KEEP_DELIVERED_SECONDS = 7 * 86400.0
#: Seconds between two purges of delivered entries.
PURGE_INTERVAL = 600.0
#: Status codes after which a statement is never sent again.
REFUSED = frozenset({400, 409})


def basic_auth(credential: str) -> str:
    """``KEY:SECRET`` as an HTTP Basic ``Authorization`` value."""
    return "Basic " + base64.b64encode(credential.encode()).decode("ascii")


class Forwarder:
    """Sends each ended session's statement to the LRS, through the durable outbox."""

    def __init__(
        self,
        outbox: Outbox,
        config: StatementConfig,
        *,
        endpoint: str,
        authorization: str | None,
        clock: Callable[[], float],
        timeout: float,
        max_retry_delay: float,
        catch_up: float = 0.0,
        source: ReportSource | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.url = endpoint.rstrip("/") + "/statements"
        self._authorization = authorization
        self.clock = clock
        self.timeout = timeout
        self.max_retry_delay = max_retry_delay
        self.catch_up = catch_up
        self.source = source
        self.metrics = metrics
        self._waiting: dict[str, SessionRecord] = {}  # final snapshots written, not yet in the outbox
        self._timer: PeriodicCallback | None = None
        self._pumping = False
        self._purged_at = -float("inf")
        self._http = AsyncHTTPClient(force_instance=True)

    def saved(self, records: Sequence[SessionRecord]) -> None:
        """The writer wrote these snapshots: the final ones go into the outbox at the next round."""
        for record in records:
            if record.is_open:
                continue
            known = self._waiting.get(record.session_id)
            if known is None or record.rev > known.rev:
                self._waiting[record.session_id] = record

    async def start(self) -> None:
        """Open the outbox, catch up on the last ``catch_up`` seconds, and start the rounds."""
        await self.outbox.open()
        if self.catch_up > 0 and self.source is not None:
            now = self.clock()
            window = Window(now - self.catch_up, now)
            try:
                async for batch in self.source.record_batches(Scope(None, None), window):
                    self.saved(batch)
            finally:
                await self.source.close()
        self._timer = PeriodicCallback(self.pump, POLL_SECONDS * 1000)
        self._timer.start()

    async def stop(self) -> None:
        """Stop the rounds; put what the last writes ended into the outbox (delivered after the restart)."""
        if self._timer is not None:
            self._timer.stop()
        try:
            await self._enqueue()
        except StoreUnavailable as exc:
            log.error(
                "xAPI: %d ended sessions could not be put in the outbox at shutdown: %s",
                len(self._waiting),
                exc,
            )
        self._http.close()
        await self.outbox.close()

    async def pump(self) -> None:
        """One round: enqueue, then deliver what is due (again at once while rounds are full)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            await self._enqueue()
            while len(await self._deliver_due()) == BATCH:
                pass
            if self.metrics is not None:
                stats = await self.outbox.stats()
                age = 0.0 if stats.oldest is None else max(0.0, self.clock() - stats.oldest)
                self.metrics.xapi_outbox(stats.waiting, age, stats.failed)
            if self.clock() - self._purged_at >= PURGE_INTERVAL:
                self._purged_at = self.clock()
                await self.outbox.purge(self._purged_at - KEEP_DELIVERED_SECONDS)
        except StoreUnavailable as exc:
            log.warning("xAPI: the outbox is unavailable (%s); trying again in %gs", exc, POLL_SECONDS)
        finally:
            self._pumping = False

    async def _enqueue(self) -> None:
        if not self._waiting:
            return
        now = self.clock()
        taken = dict(self._waiting)
        entries = [
            Entry(r.session_id, r.rev, json.dumps(statement(r, self.config), separators=(",", ":")), now)
            for r in taken.values()
        ]
        await self.outbox.enqueue(entries)  # on failure everything stays waiting
        for session_id, record in taken.items():
            if self._waiting.get(session_id) is record:
                del self._waiting[session_id]

    async def _deliver_due(self) -> list[Entry]:
        due = await self.outbox.claim(self.clock(), BATCH, LEASE_SECONDS)
        for index, entry in enumerate(due):
            silent_until = await self._deliver(entry)
            if silent_until is not None:
                # The LRS does not answer: the rest of the round waits as long as this entry does,
                # rather than each taking the whole timeout too (its attempts are not counted).
                for rest in due[index + 1 :]:
                    await self.outbox.retry(
                        rest.session_id, rest.attempts, silent_until, "not tried: no answer"
                    )
                return []
        return due

    async def _deliver(self, entry: Entry) -> float | None:
        """Send one entry and record the outcome; if the LRS did not answer at all, when to try again."""
        statement_id = json.loads(entry.statement)["id"]
        headers = {"Content-Type": "application/json", "X-Experience-API-Version": VERSION}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = HTTPRequest(
            f"{self.url}?statementId={statement_id}",
            method="PUT",
            body=entry.statement,
            headers=headers,
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            response = await self._http.fetch(request, raise_error=False)
        except Exception as exc:  # no answer: timeouts, refused connections, resets (Tornado raises these)
            code, why = 599, f"no answer: {type(exc).__name__}: {exc}"
        else:
            code = response.code
            body = (response.body or b"")[:300].decode("utf-8", "replace")
            why = f"{code} {body or response.reason or ''}".strip()
        now = self.clock()
        if 200 <= code < 300:
            await self.outbox.delivered(entry.session_id, now)
            self._count("stored")
            return None
        if code in REFUSED:
            log.error(
                "xAPI: the LRS refused statement %s (session %s) for good: %s",
                statement_id,
                entry.session_id,
                why,
            )
            await self.outbox.fail(entry.session_id, now, why)
            self._count("refused")
            return None
        attempts = entry.attempts + 1
        ceiling = min(self.max_retry_delay, INITIAL_RETRY_DELAY * 2 ** min(attempts - 1, 30))
        delay = ceiling * (0.5 + random.random() * 0.5)
        log.warning(
            "xAPI: statement %s not delivered (attempt %d: %s); next attempt in %.1fs",
            statement_id,
            attempts,
            why,
            delay,
        )
        await self.outbox.retry(entry.session_id, attempts, now + delay, why)
        self._count("retry")
        return now + delay if code == 599 else None

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.xapi_deliveries[outcome].inc()

"""Starting and stopping: open the store, run the timers, reload on SIGHUP, drain and shut down.

:class:`Runtime` changes when what runs around the sessions changes (a new
timer, another step at shutdown); what happens to a session is
``service/sessions.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from auth import Authenticator
from settings import Settings
from storage import Store, StoreError, StoreUnavailable
from storage.coordination import Coordinator
from storage.writer import SessionWriter
from tracking.clock import Clock
from tracking.session import EndReason
from xapi.forwarder import Forwarder

from .connections import Connections
from .sessions import SessionCore

log = logging.getLogger("study_time.service")

# Once closes are sent at shutdown, wait at most this long for clients to
# answer them before the process exits.
CLOSE_GRACE_SECONDS = 1.0


class Runtime:
    """The lifecycle of one server process's service."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        auth: Authenticator,
        store: Store,
        writer: SessionWriter,
        coordinator: Coordinator,
        sessions: SessionCore,
        connections: Connections,
        closing: Sequence[object] = (),
        forwarder: Forwarder | None = None,
        note_policy: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """``closing`` are further things with an ``async close()`` to close at shutdown (the reports);
        ``forwarder`` sends ended sessions to an LRS (``--xapi-endpoint``); ``note_policy`` logs
        ``--overlap-policy`` in the store at start, for reports."""
        self.forwarder = forwarder
        self.note_policy = note_policy
        self.settings = settings
        self.clock = clock
        self.auth = auth
        self.store = store
        self.writer = writer
        self.coordinator = coordinator
        self.sessions = sessions
        self.connections = connections
        self._closing = list(closing)
        self.http_server: HTTPServer | None = None
        self._timers: list[PeriodicCallback] = []

    async def start(self, sockets: Sequence[socket.socket], http_server: HTTPServer) -> None:
        """Open the store, close what a crash left open, and serve on ``sockets`` with ``http_server``."""
        await self.store.open()
        recovered = await self.store.recover(self.clock())
        if recovered:
            log.warning(
                "closed %d sessions left open by a previous process (server_lost), keeping %.1fs of credit",
                len(recovered),
                sum(r.seconds for r in recovered),
            )
        try:
            # A TTL index where the store has one, else the writer's hourly delete.
            self.writer.store_expires = await self.store.retain(self.writer.keep_seconds)
        except StoreUnavailable as exc:
            raise StoreError(f"cannot apply --keep-sessions-days in the store: {exc}") from exc
        try:
            await self.coordinator.start(self.clock())
        except StoreUnavailable as exc:
            raise StoreError(f"cannot register this process in the store: {exc}") from exc
        if self.note_policy is not None:
            try:
                await self.note_policy(self.clock())
            except StoreUnavailable as exc:
                raise StoreError(f"cannot log --overlap-policy in the store: {exc}") from exc
        if self.forwarder is not None:
            self.forwarder.saved(recovered)  # ended here, not by the writer
            try:
                await self.forwarder.start()
            except StoreUnavailable as exc:
                raise StoreError(f"cannot open the xAPI outbox in the store: {exc}") from exc
        self.http_server = http_server
        http_server.add_sockets(sockets)
        self._start_timers()

    def _start_timers(self) -> None:
        settings = self.settings
        self._timers = [
            PeriodicCallback(self.sessions.sweep, settings.sweep_interval * 1000),
            PeriodicCallback(self.writer.flush, settings.flush_interval * 1000),
        ]
        if self.coordinator.poll_interval is not None:
            self._timers.append(
                PeriodicCallback(self.sessions.coordinate, self.coordinator.poll_interval * 1000)
            )
        for timer in self._timers:
            timer.start()

    async def shutdown(self) -> bool:
        """Close every session with 1001, save everything; return whether all was saved."""
        self.sessions.shutting_down = True
        if self.http_server is not None:
            self.http_server.stop()
        for timer in self._timers:
            timer.stop()
        self.sessions.end_all(EndReason.SERVER_SHUTDOWN, self.clock())
        await self.sessions.settle(self.settings.shutdown_timeout / 2)
        saved = await self.writer.drain(self.settings.shutdown_timeout)
        if not saved:
            log.error(
                "shutdown: the store did not take %d sessions within %gs (--shutdown-timeout)",
                self.writer.unsaved,
                self.settings.shutdown_timeout,
            )
        await self.connections.wait_closed(CLOSE_GRACE_SECONDS)
        if self.http_server is not None:
            await self.http_server.close_all_connections()
        await self.coordinator.stop(saved=saved)
        if self.forwarder is not None:
            await self.forwarder.stop()
        for other in self._closing:
            await other.close()  # type: ignore[attr-defined]
        await self.store.close()
        return saved

    async def reload(self) -> None:
        """SIGHUP: read again what the service reads from outside while it runs, and log what.

        That is the authentication backend's files and key sets
        (:meth:`auth.Authenticator.reload`). Then the sessions whose
        credential no longer stands (a revoked token, a withdrawn key:
        :mod:`auth.revocation`) end with 4401, credited up to now; the others
        are not touched. Settings are read once at start (a changed log level
        or store needs a restart).
        """
        try:
            done = await self.auth.reload()
        except Exception as exc:  # a plugin's bug must not take the server down
            log.error("reload: auth backend %s failed: %s", self.auth.name, type(exc).__name__)
            done = f"--auth={self.auth.name} failed, kept as it was"
            closed = 0
        else:
            closed = self.sessions.end_revoked()
        log.info(
            "reloaded on SIGHUP: %s; %d sessions kept open%s",
            done or f"nothing to reload for --auth={self.auth.name}",
            len(self.sessions.tracker),
            f", {closed} closed (credential revoked)" if closed else "",
            extra={"event": "reloaded"},
        )

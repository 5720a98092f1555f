"""The open connections: how many, from where, and how one is refused.

A :class:`Connection` is a client's socket as the service sees it
(``handlers.study_time.StudyTimeSocket``). :class:`Connections` counts them
against ``--max-connections-per-address`` and refuses one with a close code,
counted in the metrics; it knows nothing of sessions (``service/sessions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from metrics import Metrics
from settings import Settings
from tracking.limits import KeyedLimit
from tracking.protocol import Close, closing
from tracking.ratelimit import TokenBucket

log = logging.getLogger("study_time.service")


class Connection(Protocol):
    """A client's connection as the service sees it (``handlers.study_time.StudyTimeSocket``)."""

    @property
    def closed(self) -> bool:
        """Whether the client has gone (or the connection is closing)."""

    def close_with(self, close: Close) -> None:
        """Send ``close``'s ``error`` message, then close with its code and reason."""

    def session_ended(self, close: Close | None) -> None:
        """The service has ended this connection's session: forget it, and close with ``close`` if given.

        Called once per session, whatever ended it; the connection then has
        no session to report when it goes (so nothing is ended twice).
        """


class Connections:
    """Every open client connection, with or without a session, and the per-address cap."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._open: set[Connection] = set()
        #: Open connections per client address, against ``--max-connections-per-address``.
        self.per_address = KeyedLimit(settings.max_connections_per_address)
        self._none_open = asyncio.Event()

    def __len__(self) -> int:
        return len(self._open)

    def flood_limit(self, now: float) -> TokenBucket:
        """The message allowance of a new connection (``--flood-rate``, ``--flood-burst``)."""
        return TokenBucket(self.settings.flood_rate, self.settings.flood_burst, now)

    def connected(self, connection: Connection, address: str) -> bool:
        """A client connected from ``address``; False (and refused, 4431) over the address's cap.

        Counted before its ids and credential are looked at, so an address
        over its cap costs no authentication work.
        """
        self._open.add(connection)
        if self.per_address.full(address):
            self.refuse_over_cap(
                connection,
                closing(
                    "too_many_connections",
                    f"{self.settings.max_connections_per_address} connections from this address"
                    " are open already; try again later",
                ),
                "--max-connections-per-address",
                address,
            )
            return False
        self.per_address.add(address)
        return True

    def gone(self, connection: Connection, address: str | None) -> None:
        """The connection is gone; ``address`` is what :meth:`connected` counted (None if refused)."""
        self._open.discard(connection)
        if not self._open:
            self._none_open.set()
        if address is not None:
            self.per_address.remove(address)

    def refuse(self, connection: Connection, close: Close) -> None:
        """Refuse a connection that has no session: counted by its code, then closed."""
        self.metrics.refused(close.code)
        connection.close_with(close)

    def refuse_over_cap(
        self,
        connection: Connection,
        close: Close,
        setting: str,
        address: str | None,
        user: str | None = None,
        course: str | None = None,
    ) -> None:
        """Refuse a connection over one of the caps, with a log line naming the setting."""
        log.info(
            "refused user=%s course=%s remote=%s code=%s (see %s)",
            user,
            course,
            address,
            close.code,
            setting,
            extra={
                "event": "over_cap",
                "user": user,
                "course": course,
                "remote": address,
                "reason": close.code,
            },
        )
        self.refuse(connection, close)

    async def wait_closed(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for every connection to go."""
        if self._open:
            self._none_open.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_open.wait(), timeout)

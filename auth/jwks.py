"""The signing keys published at ``--jwt-jwks-url``, cached for a bounded time.

PyJWT's ``PyJWKClient`` keeps every key it ever matched in a per-``kid``
cache that never expires, so a key the identity provider removed from its
set (because it leaked, say) kept verifying tokens until the process
restarted. This cache owns its keys instead, with two rules:

- the keys are exactly those of the last successful fetch: a key that has
  left the published set stops working the moment the set is fetched again;
- a fetched set is trusted for ``lifespan`` seconds at most. After that it
  is fetched again before any token is checked, and if that fetch fails,
  tokens are refused ("signing keys unavailable") rather than checked against
  keys that may have been withdrawn meanwhile.

A fetched set that cannot be used (not JSON, not a JWK set, an empty set,
no key usable for signatures) is refused: it never replaces the last good
set, and an ERROR names the URL (without credentials) and says how long the
last good set is still trusted. Like a failed fetch, it leaves the last good
set in use until ``lifespan`` after the fetch that brought it, and no
longer: tokens are then refused until a good set is fetched. So a broken or
emptied endpoint can neither lock everyone out at once nor keep a key
working forever.

A token naming a ``kid`` the set does not hold makes the set be fetched again
(that is how a rotation, a new key appearing, is picked up without waiting
for the lifespan), but at most once per ``min_refetch_interval``, so tokens
with made-up ``kid`` values cannot make the server hammer the identity
provider. Failed fetches are retried no sooner either.

Fetches are asynchronous (Tornado's HTTP client) and single-flight: requests
that arrive while a fetch is under way wait for it instead of starting more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger("study_time.auth")

#: A key set larger than this is refused (a set of a few dozen keys is ~20 KB).
MAX_JWKS_BYTES = 1024 * 1024


class JwksUnavailable(Exception):
    """The key set could not be fetched and no key set within its lifespan is held."""


class JwksRefused(ValueError):
    """The endpoint answered with something that is not a usable key set (refused, never used)."""


def public_url(url: str) -> str:
    """``url`` without ``user:password@`` or query, for logs and start-up lines."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class JwksKeys:
    """The signing keys of one JWKS URL (see the module docstring for the rules)."""

    def __init__(
        self,
        url: str,
        *,
        lifespan: float,
        min_refetch_interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.lifespan = lifespan
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._last_failed = False
        self._lock = asyncio.Lock()
        self._http: AsyncHTTPClient | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The signing key ``kid`` names, or None when the current set does not hold it.

        Raises :class:`JwksUnavailable` when no set within its lifespan can be had.
        """
        if not self._fresh():
            await self._refetch(self._stale)
            if not self._fresh():
                raise JwksUnavailable
        if kid not in self._keys:
            await self._refetch(lambda: kid not in self._keys and self._may_refetch())
            if not self._fresh():
                raise JwksUnavailable
        return self._keys.get(kid)

    async def refresh(self) -> bool:
        """Fetch the set now, whatever its age or the refetch interval (SIGHUP); whether it worked.

        A failed fetch keeps the set held while it is within its lifespan.
        """
        await self._refetch(lambda: True)
        return not self._last_failed

    def withdrawn(self, kid: str) -> bool:
        """Whether a set within its lifespan is held and lacks ``kid`` (a key taken out of use).

        Without such a set nothing is known: an unreachable endpoint withdraws nothing.
        """
        return self._fresh() and kid not in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self.clock() - self._fetched_at < self.lifespan

    def _may_refetch(self) -> bool:
        """Whether the last fetch (successful or not) is at least ``min_refetch_interval`` old."""
        return self._attempted_at is None or self.clock() - self._attempted_at >= self.min_refetch_interval

    def _stale(self) -> bool:
        """The set has outlived its lifespan and may be fetched again now.

        A set that merely aged out is fetched at once; after a failed fetch,
        the next waits ``min_refetch_interval`` (tokens are refused meanwhile).
        """
        return not self._fresh() and (not self._last_failed or self._may_refetch())

    async def _refetch(self, still_needed: Callable[[], bool]) -> None:
        """Fetch the set if ``still_needed()``, asked again once the lock is ours."""
        async with self._lock:
            # Whoever held the lock before may have fetched what we need.
            if not still_needed():
                return
            self._attempted_at = self.clock()
            try:
                keys = await self._fetch()
            except JwksRefused as exc:
                self._failed()
                log.error(
                    "refused the JWKS key set from --jwt-jwks-url %s: %s; %s",
                    public_url(self.url),
                    exc,
                    self.trust_left(),
                )
                return
            except Exception as exc:
                self._failed()
                log.warning(
                    "cannot fetch JWKS keys from --jwt-jwks-url %s: %s; %s",
                    public_url(self.url),
                    exc,
                    self.trust_left(),
                )
                return
            if self._last_failed:
                log.info("JWKS keys from %s: a good set again", public_url(self.url))
            self._last_failed = False
            removed = sorted(set(self._keys) - set(keys))
            added = sorted(set(keys) - set(self._keys))
            self._keys, self._fetched_at = keys, self.clock()
            if added or removed:
                log.info(
                    "JWKS keys from %s: %d signing keys (added %s; removed %s)",
                    public_url(self.url),
                    len(keys),
                    ",".join(added) or "none",
                    ",".join(removed) or "none",
                )

    def trust_left(self) -> str:
        """How long the keys in use are still trusted, as a phrase for the log."""
        if not self._fresh():
            return "no good set within --jwt-jwks-lifespan: tokens are refused until one is fetched"
        assert self._fetched_at is not None
        left = self.lifespan - (self.clock() - self._fetched_at)
        return (
            f"keeping the last good set ({len(self._keys)} signing keys) for at most {left:.0f}s more"
            " (--jwt-jwks-lifespan), then refusing tokens until a good set is fetched"
        )

    def _failed(self) -> None:
        self._last_failed = True
        if not self._fresh():
            self._keys = {}  # past their lifespan: never used again

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        """Fetch the set; its signing keys (``use`` sig or unset, with a ``kid``) by ``kid``."""
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_body_size=MAX_JWKS_BYTES)
        try:
            response = await self._http.fetch(
                self.url,
                connect_timeout=self.timeout,
                request_timeout=self.timeout,
                headers={"Accept": "application/json"},
            )
        except HTTPClientError as exc:
            raise ValueError(f"HTTP {exc.code}") from None
        except OSError as exc:
            raise ValueError(exc.strerror or type(exc).__name__) from None
        try:
            data = json.loads(response.body)
        except ValueError:
            raise JwksRefused("not JSON") from None
        if isinstance(data, dict) and data.get("keys") == []:
            raise JwksRefused("the set is empty")
        try:
            keys = jwt.PyJWKSet.from_dict(data)
        except Exception as exc:  # PyJWT raises KeyError, TypeError, ... for odd sets
            raise JwksRefused(f"not a JWK set ({type(exc).__name__})") from None
        signing = {key.key_id: key for key in keys if key.key_id and key.public_key_use in ("sig", None)}
        if not signing:
            raise JwksRefused("the set has no signing key with a kid")
        return signing

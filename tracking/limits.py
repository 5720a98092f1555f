"""Caps on how many of something one key holds at once.

The tracker counts live sessions per learner with it (``--max-sessions-per-user``,
close 4430) and the service counts open connections per client address
(``--max-connections-per-address``, close 4431). A cap of 0 means no cap, as
``--flood-rate=0`` turns the flood limit off.
"""

from __future__ import annotations

from collections.abc import Hashable


class KeyedLimit:
    """How many of something each key holds now, against one cap for every key.

    Keys are kept only while they hold something, so the memory used follows
    what is open now, not every key ever seen.
    """

    __slots__ = ("_counts", "cap")

    def __init__(self, cap: int) -> None:
        if cap < 0:
            raise ValueError("a cap is zero (no cap) or positive")
        self.cap = cap
        self._counts: dict[Hashable, int] = {}

    def __len__(self) -> int:
        """The number of keys holding something now."""
        return len(self._counts)

    def count(self, key: Hashable) -> int:
        return self._counts.get(key, 0)

    def full(self, key: Hashable) -> bool:
        """Whether ``key`` already holds as many as the cap allows (never, with no cap)."""
        return self.cap > 0 and self._counts.get(key, 0) >= self.cap

    def add(self, key: Hashable) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key: Hashable) -> None:
        left = self._counts.get(key, 0) - 1
        if left < 0:
            raise ValueError(f"{key!r} holds nothing to remove")
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]

"""A real store that can be switched into an outage, and counts what it is asked to write."""

from __future__ import annotations

import gc

from storage.base import StoreUnavailable
from tracking.session import SessionRecord


class FaultyStore:
    """A real store with a switch that makes every call fail, as an outage does.

    It also counts the records handed to ``save``: the store writes.
    """

    def __init__(self, store) -> None:
        self.store = store
        self.down = False
        #: What a call raises while the store is down: an outage, unless a test says otherwise.
        self.failure: Exception = StoreUnavailable("outage (test)")
        self.saved_records = 0
        self.save_calls = 0
        self.gc_enabled_during_save: list[bool] = []
        #: When set, the snapshots of this course alive in the process at each save
        #: (slow: scans every object).
        self.count_snapshots: str | None = None
        self.snapshots_alive_during_save: list[int] = []
        #: Called with the number of each save call (1, 2, ...) before it runs.
        self.before_save = None
        #: Awaited with the number of each save call and its records once the store
        #: has them (committed), before the caller hears of it: the window in which
        #: a total read on the IOLoop sees the commit the writer has not yet seen.
        self.after_save = None

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        if name == "total_seconds_now":  # synchronous: an outage makes it unavailable
            return lambda *args: None if self.down else attr(*args)

        async def call(*args, **kwargs):
            if name == "save" and self.before_save is not None:
                self.before_save(self.save_calls + 1)
            if self.down:
                raise self.failure
            if name == "save":
                self.gc_enabled_during_save.append(gc.isenabled())
                self.save_calls += 1
                self.saved_records += len(args[0])
                if self.count_snapshots:
                    # type(), not isinstance(): the heap may hold a weak proxy whose
                    # object is gone, and isinstance() on it raises ReferenceError.
                    alive = sum(
                        1
                        for o in gc.get_objects()
                        if type(o) is SessionRecord and o.course_id == self.count_snapshots
                    )
                    self.snapshots_alive_during_save.append(alive)
            result = await attr(*args, **kwargs)
            if name == "save" and self.after_save is not None:
                await self.after_save(self.save_calls, args[0])
            return result

        return call

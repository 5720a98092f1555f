"""Our server, as production runs it, with store writes counted for the benchmarks.

    python bench/ours.py [server.py settings ...]

Runs ``server.main`` unchanged, except that the store it opens has its
``save`` wrapped to count the records passed to it (the "store writes" of
scenario 4). The counts go to ``$BENCH_STORE_STATS.<pid>`` as JSON after each
save, so each forked process reports its own. Production code knows nothing
of this.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import server
from storage import Store


def counting(store: Store, stats_path: str | None) -> Store:
    """Wrap ``store.save`` (an instance attribute, so any store class works)."""
    inner_save = store.save
    gc_pauses: list[tuple[float, int, float]] = []  # (when, generation, seconds) of slow collections
    started_gc = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started_gc[0] = time.perf_counter()
        elif (took := time.perf_counter() - started_gc[0]) > 0.005:
            gc_pauses.append((time.time(), info["generation"], round(took, 4)))

    gc.callbacks.append(on_gc)
    saves: list[tuple[float, int, float]] = []  # (when, records, seconds taken) of each save
    last_dump = [0.0]

    async def save(records):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        await inner_save(records)
        saves.append((time.time(), len(records), time.monotonic() - started))
        # A checkpoint is several saves (Store.save_slice): write the stats at
        # most once a second, so the measuring does not load the IOLoop.
        if stats_path and time.monotonic() - last_dump[0] >= 1.0:
            last_dump[0] = time.monotonic()
            path = f"{stats_path}.{os.getpid()}"
            with open(path + ".tmp", "w") as f:
                json.dump({"saves": saves[-1000:], "gc": gc_pauses[-1000:]}, f)
            os.replace(path + ".tmp", path)

    store.save = save  # type: ignore[method-assign]
    return store


def main() -> int:
    real_open_store = server.open_store
    stats_path = os.environ.get("BENCH_STORE_STATS")
    if os.environ.get("BENCH_GC_YOUNG"):  # an experiment: another young-generation threshold
        server.GC_YOUNG_THRESHOLD = int(os.environ["BENCH_GC_YOUNG"])
    server.open_store = lambda url, **kwargs: counting(real_open_store(url, **kwargs), stats_path)
    return server.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

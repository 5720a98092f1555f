"""Our server, as production runs it, with store writes counted for the benchmarks.

    python bench/ours.py [server.py settings ...]

Runs ``server.main`` unchanged, except that the store it opens has its
``save`` wrapped to count the records passed to it (the "store writes" of
scenario 4), and the writer's checkpoints are timed and counted. The counts
go to ``$BENCH_STORE_STATS.<pid>`` as JSON after each checkpoint, so each
forked process reports its own. Production code knows nothing of this.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import server
import service
from storage import Store
from storage.backends import Backend
from storage.writer import SessionWriter


def counting(store: Store, stats_path: str | None) -> Store:
    """Count store writes: records per ``save`` call, and per checkpoint (``SessionWriter.flush``).

    A checkpoint may be several saves (``Store.save_slice``), so the rate of
    store writes is counted per checkpoint; the slowest single save is kept too.
    """
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
    checkpoints: list[tuple[float, int, float]] = []  # (when it began, records, seconds taken)
    saved = [0]  # records saved so far

    def dump() -> None:
        if not stats_path:
            return
        path = f"{stats_path}.{os.getpid()}"
        with open(path + ".tmp", "w") as f:
            stats = {"saves": saves[-1000:], "checkpoints": checkpoints[-1000:], "gc": gc_pauses[-1000:]}
            json.dump(stats, f)
        os.replace(path + ".tmp", path)

    async def save(records):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        await inner_save(records)
        saved[0] += len(records)
        saves.append((time.time(), len(records), time.monotonic() - started))

    inner_flush = SessionWriter.flush

    async def flush(writer: SessionWriter, *, force: bool = False) -> bool:
        began, started, before = time.time(), time.monotonic(), saved[0]
        try:
            return await inner_flush(writer, force=force)
        finally:
            if saved[0] > before:
                checkpoints.append((began, saved[0] - before, time.monotonic() - started))
                dump()  # once per checkpoint: every flush interval

    SessionWriter.flush = flush  # type: ignore[method-assign]
    store.save = save  # type: ignore[method-assign]
    return store


def main() -> int:
    real_backend_for = service.backend_for
    stats_path = os.environ.get("BENCH_STORE_STATS")
    if os.environ.get("BENCH_GC_YOUNG"):  # an experiment: another young-generation threshold
        server.GC_YOUNG_THRESHOLD = int(os.environ["BENCH_GC_YOUNG"])

    def backend_for(url: str) -> Backend:
        backend = real_backend_for(url)
        real_store = backend.store
        backend.store = lambda **kwargs: counting(real_store(**kwargs), stats_path)  # type: ignore[method-assign]
        return backend

    # The service builds its store through the name it imported (service/__init__.py).
    service.backend_for = backend_for
    return server.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

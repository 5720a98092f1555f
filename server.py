"""study-time server: the entry point.

``python server.py [--setting=value ...]`` starts the service; ``--help``
lists every setting. It parses the settings, builds the service
(``service/``) and its web application (``handlers/app.py``), serves until
SIGTERM or SIGINT, and shuts down gracefully: every open session is closed
with 1001 and saved, and the process exits 0. SIGHUP reloads the
authentication backend's files and keys (``Service.reload``), sessions kept. ``report`` and ``tokens`` are
subcommands.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import tornado.netutil
from tornado.httpserver import HTTPServer

import settings as settings_module
import supervisor
from auth import Authenticator, build_authenticator
from handlers.app import make_metrics_server, make_server
from service import Service
from settings import Settings, SettingsError, command, program
from storage import StoreError, StoreUnavailable
from storage.backends import backend_for
from tracking.clock import Clock

log = logging.getLogger("study_time.server")

# Python's cyclic garbage collector runs a young collection every 700 net
# allocations of tracked objects; Tornado allocates several (a Task and
# Futures) per WebSocket message, so at thousands of heartbeats a second it
# ran hundreds of collections a second (bench/, docs/performance.md). The
# service keeps almost nothing cyclic, so collect young objects 70x less often.
GC_YOUNG_THRESHOLD = 50_000
#: Seconds between a worker's checks that its supervisor is still there.
PARENT_CHECK_INTERVAL = 1.0


async def start(
    settings: Settings,
    sockets: Sequence[socket.socket],
    *,
    clock: Clock | None = None,
    auth: Authenticator | None = None,
    worker: int = 0,
) -> Service:
    """Build the service and its web application, and serve them on ``sockets``."""
    service = Service(settings, clock=clock, auth=auth, worker=worker)
    await service.start(sockets, make_server(service))
    return service


async def serve(
    settings: Settings,
    sockets: Sequence[socket.socket],
    auth: Authenticator | None,
    worker: int = 0,
    supervisor_pid: int | None = None,
) -> int:
    """Run the service until SIGTERM or SIGINT; return the exit status.

    ``auth`` None builds the backend here, from its files as they are now:
    each worker under ``--processes`` does, so one restarted after a SIGHUP
    reads the keys and tokens that reload read, not what the supervisor read
    at start. A worker (``supervisor_pid`` given) also stops when the
    supervisor is gone.
    """
    try:
        service = await start(settings, sockets, auth=auth, worker=worker)
    except SettingsError as exc:  # an auth setting the backend cannot work with
        print(f"{program()}: error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 1
    tune_gc()
    stop = handle_signals(service)
    loop = asyncio.get_running_loop()
    host, port = sockets[0].getsockname()[:2]
    log.info("authentication: %s", service.auth.describe())
    log.info(
        "listening on http://%s:%d (store %s, event loop %s)",
        host,
        port,
        settings.store.split(":", 1)[0],
        "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
    )
    try:
        metrics_server = serve_metrics(service, worker)
    except OSError as exc:
        log.error("cannot start: cannot listen on --metrics-port: %s", exc.strerror)
        await service.shutdown()
        return 1
    watch = None if supervisor_pid is None else asyncio.ensure_future(watch_supervisor(supervisor_pid, stop))
    await stop.wait()
    if watch is not None:
        watch.cancel()
    if metrics_server is not None:
        metrics_server.stop()
    log.info("shutting down: closing %d sessions", len(service.tracker))
    saved = await service.shutdown()
    log.info("stopped")
    return 0 if saved else 1


def handle_signals(service: Service) -> asyncio.Event:
    """SIGTERM and SIGINT set the event returned (stop serving); SIGHUP reloads (``Service.reload``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task] = set()  # referenced until done

    def reload() -> None:
        task = asyncio.ensure_future(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    return stop


async def watch_supervisor(supervisor_pid: int, stop: asyncio.Event) -> None:
    """Stop (gracefully, as on SIGTERM) once the supervisor is gone: the fallback where
    ``PR_SET_PDEATHSIG`` is not available (supervisor.die_with_parent)."""
    while not supervisor.parent_lost(supervisor_pid):  # noqa: ASYNC110 (no event to wait on: polled)
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    log.warning("the supervisor (pid %d) is gone: shutting down", supervisor_pid)
    stop.set()


def serve_metrics(service: Service, worker: int) -> HTTPServer | None:
    """With ``--metrics-port``, serve this process's ``/metrics`` on a port of its own.

    With ``--processes=N`` the processes share ``--port``, so a scrape there
    reaches whichever accepts it; Prometheus scrapes each process as its own
    target instead, process N on ``--metrics-port`` + N.
    """
    settings = service.settings
    if settings.metrics_port is None:
        return None
    wanted = settings.metrics_port + worker if settings.metrics_port else 0
    sockets = tornado.netutil.bind_sockets(wanted, settings.host)
    server = make_metrics_server(service)
    server.add_sockets(sockets)
    host, port = sockets[0].getsockname()[:2]
    log.info("metrics of server process %d on http://%s:%d/metrics", worker, host, port)
    return server


def tune_gc() -> None:
    """Tune the garbage collector once start-up is done (see GC_YOUNG_THRESHOLD).

    ``gc.freeze`` moves everything alive after start-up (modules, settings,
    the app) out of the collector's reach, so full collections only scan what
    connections created.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_subcommand(argv: list[str]) -> int | None:
    """Run a subcommand (``report``, ``tokens``) and return its exit status; None to serve."""
    if argv[:1] == ["report"]:
        from reports.cli import StoreAccess
        from reports.cli import main as report_main

        # The command reaches the store only through this (reports/ imports no storage backend).
        access = StoreAccess(
            connect=lambda url: backend_for(url).report_source(),
            invalid=StoreError,
            unavailable=(StoreError, StoreUnavailable),
        )
        return report_main(argv[1:], access)
    if argv[:1] == ["migrate"]:
        from storage.migrate import main as migrate_main

        return migrate_main(argv[1:])
    if argv[:1] == ["tokens"]:
        from auth.tokens import cli

        return cli(argv[1:])
    if argv and not argv[0].startswith("-"):
        # A misspelt command: say so in one line, not with the settings' long usage.
        print(
            f"{program()}: error: unknown command {argv[0][:40]!r}: the commands are 'report',"
            f" 'tokens' and 'migrate'; settings start with -- (see {command()} --help)",
            file=sys.stderr,
        )
        return 2
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    status = run_subcommand(argv)
    if status is not None:
        return status
    try:
        settings = settings_module.load(argv)
    except SettingsError as exc:
        print(f"{program()}: error: {exc}", file=sys.stderr)
        return 2
    settings_module.configure_logging(settings.log_level, settings.log_format)
    # Every setting is checked before the port is bound: an invalid one is
    # reported as such (exit 2), not hidden behind "Address already in use".
    if uvloop_missing(settings.event_loop):
        print("server.py: error: invalid --event-loop: uvloop is not installed", file=sys.stderr)
        return 2
    try:
        auth = build_authenticator(settings)
        backend = backend_for(settings.store)  # checks the URL; connects to nothing
    except (SettingsError, StoreError) as exc:
        print(f"{program()}: error: {exc}", file=sys.stderr)
        return 2
    processes = supervisor.resolve(settings.processes)
    if settings.metrics_port and settings.metrics_port + processes - 1 > 65535:
        print(
            f"{program()}: error: invalid --metrics-port: {settings.metrics_port} + {processes} processes"
            " passes port 65535",
            file=sys.stderr,
        )
        return 2
    if processes > 1 and not backend.supports_many_processes:
        print(
            f"{program()}: error: invalid --processes: {settings.processes} starts {processes} processes,"
            " but the SQLite store serves one process; use --processes=1 or a mongodb:// store",
            file=sys.stderr,
        )
        return 2
    # SIGHUP reloads once serving (serve()); until then it must not end the
    # process (its default action), nor a worker forked below.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        # Bound before the IOLoop starts (and before any fork), so that
        # several processes can share them.
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    if processes == 1:
        return run_loop(settings.event_loop, serve(settings, sockets, auth))
    # The backend built above only checked the settings: each worker builds
    # its own (serve), so a worker restarted after a SIGHUP reads the files anew.
    del auth
    workers = supervisor.Workers(processes)
    status = workers.run()
    if status is not None:  # the parent, once every worker has exited
        return status
    return run_loop(
        settings.event_loop, serve(settings, sockets, None, workers.index, workers.supervisor_pid)
    )


def uvloop_missing(choice: str) -> bool:
    """Whether ``--event-loop`` asks for uvloop and it is not installed."""
    return choice == "uvloop" and importlib.util.find_spec("uvloop") is None


def run_loop(choice: str, main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on the event loop ``--event-loop`` names (``auto``: uvloop when installed).

    uvloop (libuv, in C) does the event loop's per-message work (re-arming a
    socket's reader, scheduling callbacks) several times faster than asyncio's
    pure-Python loop, which is most of a heartbeat's cost (docs/performance.md).
    Tornado runs on either unchanged.
    """
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass  # auto: asyncio's own loop (an explicit uvloop was checked before binding)
        else:
            return uvloop.run(main)
    return asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())

"""``--processes=N``: fork N server processes on the sockets the parent bound.

Tornado's ``fork_processes`` forks and restarts crashed children, but its
parent neither forwards SIGTERM/SIGINT nor stops restarting on them, so a
graceful stop of the parent would orphan the workers with their unsaved
credit. This does the same forking and restarting of workers killed by a signal, and
on SIGTERM or SIGINT forwards the signal to every worker (each then shuts
down gracefully: closes with 1001 and saves) and waits for them. SIGHUP is
forwarded too: each worker reloads (``Service.reload``) and keeps serving. A worker
that exits with an error status (say, it cannot reach the store at start)
stops them all, with status 1, instead of being restarted in a loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

log = logging.getLogger("study_time.supervisor")

#: A worker that keeps dying is not restarted forever.
MAX_RESTARTS = 100


def resolve(processes: int) -> int:
    """The number of processes ``--processes`` asks for (0 = one per CPU core)."""
    return processes if processes > 0 else (os.cpu_count() or 1)


class Workers:
    """Forks the workers; in the parent, supervises them until they have all exited."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        #: In a worker, its index (0 .. count-1): its metrics and its --metrics-port say it.
        self.index = 0

    def run(self) -> int | None:
        """Fork the workers and supervise them.

        Returns None in a worker, which then serves; in the parent, returns
        the exit status once every worker has exited. Call before any event
        loop exists (the sockets are already bound).
        """
        for index in range(self.count):
            if self._start(index):
                return None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        signal.signal(signal.SIGHUP, self._forward_reload)
        log.info("started %d server processes: %s", self.count, " ".join(map(str, self.children)))
        status, restarts = 0, 0
        while self.children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if code == 0:
                continue
            status = 1
            if code > 0 or self.stopping or restarts >= MAX_RESTARTS:
                # A worker that chose to exit with an error (it could not
                # start, or could not save at shutdown) would fail again:
                # stop them all rather than restart it in a loop.
                log.error("server process %d (pid %d) exited with status %d", index, pid, code)
                self._forward(signal.SIGTERM, None)
                continue
            # Killed by a signal (a crash, the OOM killer): its sessions are
            # recovered by the others; a fresh worker takes its place.
            restarts += 1
            log.warning("server process %d (pid %d) killed by signal %d, restarting it", index, pid, -code)
            if self._start(index):
                return None
        return status

    def _start(self, index: int) -> bool:
        """Fork one worker; True in the worker."""
        pid = os.fork()
        if pid == 0:
            self.index = index
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            # Ignored until the worker serves and handles it (server.serve).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            return True
        self.children[pid] = index
        return False

    def _forward_reload(self, signum: int, frame: object) -> None:
        """SIGHUP: every worker reloads (and logs what); nobody stops."""
        log.info("forwarding SIGHUP to %d server processes", len(self.children))
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _forward(self, signum: int, frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

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

A worker never outlives the supervisor: it gets SIGTERM when the supervisor
dies, even by SIGKILL (``PR_SET_PDEATHSIG`` on Linux), and checks its parent
every second as well (:func:`parent_lost`, for other systems).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger("study_time.supervisor")

#: A worker that keeps dying is not restarted forever.
MAX_RESTARTS = 100


def resolve(processes: int) -> int:
    """The number of processes ``--processes`` asks for (0 = one per CPU core)."""
    return processes if processes > 0 else (os.cpu_count() or 1)


#: The signals the supervisor acts on, in its main loop (never in a handler).
SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})
#: How often the supervisor looks for exited workers even without a SIGCHLD (a safety net).
WAKE_INTERVAL = 1.0
#: linux/prctl.h: deliver a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


class Workers:
    """Forks the workers; in the parent, supervises them until they have all exited.

    Signals are blocked in the supervisor and taken in its main loop with
    ``sigtimedwait``: no signal handler runs, so nothing is done (``os.kill``,
    logging) at a point where the interrupted code may hold a lock.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        #: In a worker, its index (0 .. count-1): its metrics and its --metrics-port say it.
        self.index = 0
        #: In a worker, the supervisor's pid: a worker whose parent is another has lost it.
        self.supervisor_pid = os.getpid()

    def run(self) -> int | None:
        """Fork the workers and supervise them.

        Returns None in a worker, which then serves; in the parent, returns
        the exit status once every worker has exited. Call before any event
        loop exists (the sockets are already bound).
        """
        self.supervisor_pid = os.getpid()
        # Blocked before the first fork: a signal arriving in between waits for the loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for index in range(self.count):
            if self._start(index):
                return None
        log.info("started %d server processes: %s", self.count, " ".join(map(str, self.children)))
        self.status, self.restarts = 0, 0
        while self.children:
            received = signal.sigtimedwait(SIGNALS, WAKE_INTERVAL)
            if received is not None and received.si_signo == signal.SIGHUP:
                self._forward_reload()
            elif received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                self._forward(received.si_signo)
            if self._reap():
                return None  # in a worker started in place of one that died
        return self.status

    def _reap(self) -> bool:
        """Collect every exited worker; restart those killed by a signal. True in a restarted worker."""
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return False
            if pid == 0:
                return False
            index = self.children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if code == 0:
                continue
            self.status = 1
            if code > 0 or self.stopping or self.restarts >= MAX_RESTARTS:
                # A worker that chose to exit with an error (it could not
                # start, or could not save at shutdown) would fail again:
                # stop them all rather than restart it in a loop.
                log.error("server process %d (pid %d) exited with status %d", index, pid, code)
                self._forward(signal.SIGTERM)
                continue
            # Killed by a signal (a crash, the OOM killer): its sessions are
            # recovered by the others; a fresh worker takes its place, and
            # loads the auth backend's files itself (server.serve): whatever a
            # SIGHUP reloaded, it reads the files as they are now.
            self.restarts += 1
            log.warning("server process %d (pid %d) killed by signal %d, restarting it", index, pid, -code)
            if self._start(index):
                return True
        return False

    def _start(self, index: int) -> bool:
        """Fork one worker; True in the worker."""
        pid = os.fork()
        if pid == 0:
            self.index = index
            self.children.clear()
            die_with_parent(self.supervisor_pid)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            # Ignored until the worker serves and handles it (server.serve).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            return True
        self.children[pid] = index
        return False

    def _forward_reload(self) -> None:
        """SIGHUP: every worker reloads (and logs what); nobody stops."""
        log.info("forwarding SIGHUP to %d server processes", len(self.children))
        self._signal_all(signal.SIGHUP)

    def _forward(self, signum: int) -> None:
        self.stopping = True
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def die_with_parent(parent_pid: int) -> None:
    """In a worker: get SIGTERM (a graceful shutdown) when the supervisor dies, however it dies.

    ``prctl(PR_SET_PDEATHSIG)`` on Linux; elsewhere, or if the supervisor
    died before this ran, :func:`parent_lost` (polled by the worker) notices.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log.warning("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if parent_lost(parent_pid):  # it died between the fork and the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def parent_lost(parent_pid: int) -> bool:
    """Whether the supervisor ``parent_pid`` is gone (this process was handed to another parent)."""
    return os.getppid() != parent_pid

"""The process supervisor behind ``jobq worker``: P worker processes, kept alive.

``jobq worker MODULE:APP --processes P`` runs a :class:`Supervisor` in the process the user
started. It runs no jobs itself: it starts P child processes, each
``python -m jobq.cli worker MODULE:APP --child ...`` (one :class:`jobq.worker.Worker` with its T
threads), and keeps P of them running.

The contract between the two:

* **Exit codes of a child.** ``0``: the worker stopped because it was told to (a signal) or, with
  ``--burst``, because the queues were empty. :data:`EXIT_RECYCLE` (3): the worker recycled
  itself: it reached ``--max-jobs-per-process`` or ``--max-memory-per-process``, or a thread
  stayed stuck in a timed-out job for longer than ``--grace``; it stopped claiming, finished its
  running jobs and exited, and wants a fresh process in its place. Anything else (another code,
  or death by a signal) is a crash.
* **Replacing children.** A recycled child is replaced at once. A crashed child is restarted
  after a delay that starts at 0.5 s and doubles with each crash of that slot, up to 30 s, and
  starts again from 0.5 s once a child of the slot has stayed up for 60 s (:class:`Backoff`);
  so a job that kills its process every time costs a few restarts, not a spinning loop. Jobs a
  crashed child held come back when their leases expire. With ``burst``, a child exiting 0 is
  not replaced, and the supervisor exits 0 once every slot's child has exited 0.
* **Signals.** Children run in sessions of their own, so a terminal's Ctrl-C reaches only the
  supervisor. The first SIGTERM or SIGINT is passed to every child as
  :data:`jobq.worker.GRACEFUL_STOP_SIGNAL` (SIGUSR2; it never counts as a second signal, so a
  child that systemd also sent a SIGTERM still drains). Each child stops
  claiming, lets its running jobs finish within ``--grace``, hands the rest back and exits 0);
  nothing is restarted any more, and the supervisor exits 0 once all have exited cleanly, else
  1. A second SIGTERM or SIGINT kills every child with SIGKILL and exits ``128 + signum`` at
  once; the leases of the jobs they held expire and those jobs run again elsewhere.
* **Losing the supervisor.** Each child inherits the read end of a pipe whose write end only
  the supervisor holds; if the supervisor dies without stopping its children (kill -9, say),
  the pipe reaches end-of-file and every child stops gracefully by itself
  (:func:`watch_supervisor`).

Signal handlers only record the signal (and wake the main loop through
:func:`signal.set_wakeup_fd`); the main loop waits on that pipe with a short timeout and polls
its children, so it neither spins nor misses an exit for long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from jobq.worker import GRACEFUL_STOP_SIGNAL

log = logging.getLogger("jobq.supervisor")

#: A child's exit code when its worker recycled itself (max jobs, max memory, or a thread stuck
#: in a timed-out job): not a failure; the supervisor starts a fresh process in its place.
EXIT_RECYCLE = 3

#: The environment variable through which a child learns the file descriptor of the pipe that
#: tells it the supervisor is still there (see :func:`watch_supervisor`).
SUPERVISOR_FD_ENV = "JOBQ_SUPERVISOR_FD"

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a slot waits before restarting a crashed child: ``initial`` seconds after the
    first crash, doubling with each further crash up to ``maximum``; a child that stayed up for
    ``reset_after`` seconds or more starts the sequence again."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0

    def next_delay(self, previous: float, uptime: float) -> float:
        """The delay after a crash, given the slot's ``previous`` delay (0 if none yet) and how
        long the child that crashed had been running."""
        if previous <= 0 or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


def worker_command(app_spec: str, worker_args: Sequence[str] = ()) -> list[str]:
    """The command line of one child: ``python -m jobq.cli worker APP --child ARGS...``."""
    return [sys.executable, "-m", "jobq.cli", "worker", app_spec, "--child", *worker_args]


def describe_exit(returncode: int) -> str:
    """``"exited with code 1"``, ``"recycled itself (exit code 3)"`` or ``"was killed by
    SIGKILL"``, for a ``Popen.returncode``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    if returncode == EXIT_RECYCLE:
        return f"recycled itself (exit code {EXIT_RECYCLE})"
    return f"exited with code {returncode}"


@dataclass(slots=True)
class _Slot:
    """One of the P places a child runs in."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic, when proc was started
    restart_at: float | None = 0.0  # monotonic; None: not to be started again
    delay: float = 0.0  # the last crash backoff of this slot, 0 before any


class Supervisor:
    """Starts ``processes`` children running ``command`` and keeps that many alive until
    stopped (see the module docstring for the whole contract).

    ``command`` is normally :func:`worker_command`. ``env`` (default: this process's
    environment) and ``cwd`` are the children's. :meth:`run` blocks and returns the exit code
    for the supervisor's process.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int = 1,
        *,
        burst: bool = False,
        backoff: Backoff = Backoff(),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        self.command = list(command)
        self.processes = processes
        self.burst = burst
        self.backoff = backoff
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.poll_interval = poll_interval
        self._slots = [_Slot(n) for n in range(1, processes + 1)]
        self._pending: list[int] = []  # stop requests (signal numbers), appended by handlers
        self._stops = 0
        self._stopping = False
        self._clean = True  # every child stopped by the first signal exited cleanly
        self._wake_w: int | None = None

    # -- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop, as SIGTERM does (a second call: stop at once). Safe from any
        thread and from signal handlers."""
        self._request(signal.SIGTERM)

    def pids(self) -> list[int]:
        """The pids of the children running now."""
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def run(self) -> int:
        """Run the children until stopped (or, with ``burst``, until they have all finished).

        Returns 0 after a graceful stop in which every child exited cleanly (and after a burst
        run), 1 if a child failed to stop cleanly, ``128 + signum`` after a second signal.
        Handles SIGTERM and SIGINT only when called from the main thread; elsewhere use
        :meth:`stop`.
        """
        wake_r, wake_w = os.pipe()
        alive_r, alive_w = os.pipe()  # children see EOF on alive_r once we are gone
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        self._wake_w = wake_w
        try:
            with self._signals(wake_w):
                log.info(
                    "supervisor (pid %d) starting %d worker process%s",
                    os.getpid(),
                    self.processes,
                    "" if self.processes == 1 else "es",
                )
                return self._loop(wake_r, alive_r)
        finally:
            self._wake_w = None
            for fd in (wake_r, wake_w, alive_r, alive_w):
                os.close(fd)

    # -- internals ---------------------------------------------------------------------------

    def _request(self, signum: int) -> None:
        self._pending.append(signum)
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    @contextlib.contextmanager
    def _signals(self, wake_w: int) -> Iterator[None]:
        """SIGTERM/SIGINT only record a stop request; the wakeup fd wakes the main loop."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            self._pending.append(signum)

        previous = {sig: signal.signal(sig, handle) for sig in _STOP_SIGNALS}
        old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _loop(self, wake_r: int, alive_r: int) -> int:
        while True:
            while self._pending:
                code = self._on_stop_request(self._pending.pop(0))
                if code is not None:
                    return code
            now = time.monotonic()
            for slot in self._slots:
                if slot.proc is not None:
                    rc = slot.proc.poll()
                    if rc is not None:
                        self._exited(slot, rc, now)
            if not self._stopping:
                for slot in self._slots:
                    if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot, alive_r)
            if all(s.proc is None for s in self._slots):
                if self._stopping:
                    code = 0 if self._clean else 1
                    log.info("all worker processes have exited; exiting with code %d", code)
                    return code
                if all(s.restart_at is None for s in self._slots):  # burst: all finished
                    log.info("all worker processes finished (queues empty); exiting")
                    return 0
            timeout = self.poll_interval
            waits = [s.restart_at - now for s in self._slots if s.restart_at is not None]
            if waits and not self._stopping:
                timeout = max(0.0, min(timeout, *waits))
            ready, _, _ = select.select([wake_r], [], [], timeout)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass

    def _on_stop_request(self, signum: int) -> int | None:
        """The first request stops gracefully; a second kills. Returns an exit code to exit
        with at once, or None."""
        self._stops += 1
        name = _signal_name(signum)
        if self._stops == 1:
            running = [s for s in self._slots if s.proc is not None]
            log.warning(
                "received %s: stopping %d worker process%s (running jobs may finish first); "
                "send again to exit at once",
                name,
                len(running),
                "" if len(running) == 1 else "es",
            )
            self._stopping = True
            for slot in running:
                assert slot.proc is not None
                slot.proc.send_signal(GRACEFUL_STOP_SIGNAL)
            return None
        log.warning("received %s again: killing the worker processes and exiting now", name)
        procs = [s.proc for s in self._slots if s.proc is not None]
        for proc in procs:
            proc.kill()
        give_up = time.monotonic() + 2.0
        for proc in procs:  # reap them (SIGKILL is quick); never wait long
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, give_up - time.monotonic()))
        return 128 + signum

    def _start(self, slot: _Slot, alive_r: int) -> None:
        env = dict(self.env)
        env[SUPERVISOR_FD_ENV] = str(alive_r)
        try:
            slot.proc = subprocess.Popen(
                self.command,
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches only the supervisor
                pass_fds=(alive_r,),
            )
        except OSError as exc:
            slot.delay = self.backoff.next_delay(slot.delay, 0.0)
            slot.restart_at = time.monotonic() + slot.delay
            log.error(
                "worker process %d could not be started (%s); trying again in %.1fs",
                slot.number,
                exc,
                slot.delay,
            )
            return
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker process %d started (pid %d)", slot.number, slot.proc.pid)

    def _exited(self, slot: _Slot, rc: int, now: float) -> None:
        assert slot.proc is not None
        pid, uptime = slot.proc.pid, now - slot.started
        slot.proc = None
        what = describe_exit(rc)
        if self._stopping:
            # killed by our stop signal: it came before the child installed its handlers, so
            # the child held no jobs.
            if rc in (0, EXIT_RECYCLE, -signal.SIGTERM, -GRACEFUL_STOP_SIGNAL):
                if rc in (-signal.SIGTERM, -GRACEFUL_STOP_SIGNAL):
                    what += " (outside its worker loop: it held no jobs)"
                log.info("worker process %d (pid %d) %s", slot.number, pid, what)
            else:
                self._clean = False
                log.error("worker process %d (pid %d) %s while stopping", slot.number, pid, what)
            return
        if rc == EXIT_RECYCLE:
            log.info("worker process %d (pid %d) %s; starting a new one", slot.number, pid, what)
            slot.restart_at = now
        elif rc == 0 and self.burst:
            log.info("worker process %d (pid %d) finished: its queues are empty", slot.number, pid)
        else:
            slot.delay = self.backoff.next_delay(slot.delay, uptime)
            slot.restart_at = now + slot.delay
            log.error(
                "worker process %d (pid %d) %s after %.1fs%s; restarting it in %.1fs",
                slot.number,
                pid,
                what,
                uptime,
                " without being asked to stop" if rc == 0 else "",
                slot.delay,
            )


def watch_supervisor(on_lost: Callable[[], None]) -> None:
    """In a child: call ``on_lost`` (from a daemon thread) once the supervisor that started this
    process is gone, so that an orphaned worker stops gracefully instead of running on alone.
    Does nothing in a process not started by a :class:`Supervisor`."""
    text = os.environ.pop(SUPERVISOR_FD_ENV, "")
    try:
        fd = int(text)
        os.fstat(fd)
    except (ValueError, OSError):
        return
    os.set_inheritable(fd, False)  # not for the task's own subprocesses

    def watch() -> None:
        try:
            while os.read(fd, 512):  # the supervisor never writes: this blocks until EOF
                pass
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        on_lost()

    threading.Thread(target=watch, name="jobq-supervisor-watch", daemon=True).start()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"

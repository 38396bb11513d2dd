"""Distributed locks for application code: a lease-based mutex kept in the job store.

::

    with app.lock("import:customer-7", ttl=60, wait=10) as lock:
        for batch in batches:
            lock.check()                 # raises LockLost if the lease was lost meanwhile
            write(batch, fence=lock.token)

While held, a daemon thread renews the lease every third of ``ttl``; if a renewal finds the lock
taken over (it expired: the process stalled, or lost the store, for longer than ``ttl``), the
lock is *lost*: :attr:`Lock.lost` turns true, :meth:`Lock.check` raises
:class:`jobq.LockLost`, and leaving the ``with`` block raises it too (unless the block is
already raising). Another holder gets the lock only after the lease expired, or once it is
released; every acquisition gets a fencing token larger than any before it for that name, so a
resource that remembers the largest token it saw can refuse a late write from a former holder.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from jobq.exceptions import ConfigurationError, JobqError, LockError, LockLost, LockTimeout

if TYPE_CHECKING:
    from jobq.backends.base import Backend

__all__ = ["Lock"]

log = logging.getLogger("jobq.locks")

MAX_NAME = 200
MIN_TTL = timedelta(seconds=1)
#: Polling for a held lock starts at this and backs off to ``_POLL_MAX``.
_POLL_MIN = 0.02
_POLL_MAX = 1.0


class Lock:
    """A distributed mutex named ``name``, held for ``ttl`` at a time and renewed while held.

    ``wait``: how long :meth:`acquire` (or ``with``) polls a held lock before raising
    :class:`jobq.LockTimeout` (``None``: as long as it takes; ``0``: one try). ``owner``
    labels the holder in the store (default: host, pid and thread). ``clock`` replaces the
    store's clock in calls (tests). Not re-entrant; one ``Lock`` object can be acquired again
    after it was released.
    """

    def __init__(
        self,
        backend: Backend,
        name: str,
        ttl: timedelta | float,
        *,
        wait: timedelta | float | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\x00" in name:
            raise ConfigurationError(
                f"invalid lock name {name!r}: use a non-empty string of at most {MAX_NAME} "
                "characters, e.g. 'import:customer-7'"
            )
        self.ttl = _duration(ttl, "ttl", name)
        if self.ttl < MIN_TTL:
            raise ConfigurationError(
                f"lock {name!r}: ttl must be at least {MIN_TTL.total_seconds():g} second, got "
                f"{self.ttl.total_seconds():g}s; it is renewed every third of it, so a shorter "
                "lease would be lost under load"
            )
        self.wait = _duration(wait, "wait", name) if wait is not None else None
        if owner is None:
            owner = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
            owner = owner[:MAX_NAME]
        elif not isinstance(owner, str) or not owner or len(owner) > MAX_NAME:
            raise ConfigurationError(
                f"lock {name!r}: owner must be a non-empty string of at most {MAX_NAME} "
                f"characters, got {owner!r}"
            )
        self.backend = backend
        self.name = name
        self.owner = owner
        self._clock = clock
        self._state = threading.Lock()
        self._token: int | None = None
        self._held = False
        self._lost = False
        self._confirmed = 0.0  # monotonic time the current lease was last known to start
        self._stop: threading.Event | None = None

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self._held else "not held"
        return f"<jobq.Lock {self.name!r} {state} token={self._token}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) acquisition: larger than every token
        issued for this name before it."""
        if self._token is None:
            raise LockError(f"lock {self.name!r} was never acquired, so it has no token")
        return self._token

    @property
    def held(self) -> bool:
        """Acquired, not released, and not known to be lost."""
        return self._held and not self.lost

    @property
    def lost(self) -> bool:
        """Whether the lease was lost while held: a renewal found it taken over or released,
        or no renewal got through to the store within ``ttl``. Stays true until the next
        acquisition."""
        if self._lost:
            return True
        if self._held and time.monotonic() - self._confirmed > self.ttl.total_seconds():
            self._mark_lost("no renewal reached the store within its ttl")
            return True
        return False

    def check(self) -> None:
        """Raise :class:`jobq.LockLost` if the lock was lost (LockError if it is not held)."""
        if self.lost:
            raise LockLost(
                f"lock {self.name!r} (token {self._token}) was lost: its lease ran out and "
                "another holder may have taken it over; stop the work it protects"
            )
        if not self._held:
            raise LockError(f"lock {self.name!r} is not held; acquire it first (with ...:)")

    # -- acquire / renew / release -----------------------------------------------------------

    def acquire(self) -> int:
        """Take the lock, polling with backoff for up to ``wait``; returns the fencing token.
        Raises :class:`jobq.LockTimeout` when ``wait`` ran out."""
        with self._state:
            if self._held:
                raise LockError(
                    f"lock {self.name!r} is already held by this Lock (token {self._token}); "
                    "locks are not re-entrant"
                )
        wait = self.wait.total_seconds() if self.wait is not None else None
        deadline = None if wait is None else time.monotonic() + wait
        delay = _POLL_MIN
        while True:
            sent = time.monotonic()
            token = self.backend.acquire_lock(self.name, self.owner, self.ttl, now=self._now())
            if token is not None:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockTimeout(
                    f"lock {self.name!r} was not acquired within {wait:g}s: another holder has "
                    "it (it is free once released, or once its ttl runs out without renewal); "
                    "retry later or pass a longer wait"
                )
            pause = delay * random.uniform(0.5, 1.0)
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)
            delay = min(delay * 1.5, _POLL_MAX)
        stop = threading.Event()
        with self._state:
            self._token = token
            self._held = True
            self._lost = False
            self._confirmed = sent
            self._stop = stop
        threading.Thread(
            target=self._renew_loop,
            args=(token, stop),
            name=f"jobq-lock-{self.name[:40]}",
            daemon=True,
        ).start()
        return token

    def renew(self) -> bool:
        """Extend the lease to now + ttl at once; False (and the lock lost) if it was taken
        over or released. The renewal thread calls this every third of ``ttl``."""
        with self._state:
            if not self._held or self._lost or self._token is None:
                return False
            token = self._token
        return self._renew(token, None)

    def release(self) -> bool:
        """Free the lock; True if it was still held under its token (False if it was lost).
        A store error is logged, not raised: the lease then runs out by itself."""
        with self._state:
            if not self._held:
                return False
            token, stop = self._token, self._stop
            self._held = False
            self._stop = None
        if stop is not None:
            stop.set()
        assert token is not None
        try:
            ok = self.backend.release_lock(self.name, token)
        except JobqError as exc:
            log.warning(
                "lock %r (token %d): release failed, its lease will run out by itself within "
                "%ss: %s",
                self.name,
                token,
                self.ttl.total_seconds(),
                exc,
            )
            return False
        if not ok:
            self._lost = True
        return ok

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _ = self.lost  # notices a lease that ran out unrenewed
        self.release()
        if exc_type is None and self._lost:
            raise LockLost(
                f"lock {self.name!r} (token {self._token}) was lost while the block ran: its "
                "lease ran out and another holder may have run at the same time"
            )

    # -- internals ---------------------------------------------------------------------------

    def _now(self) -> datetime | None:
        return self._clock() if self._clock is not None else None

    def _renew(self, token: int, stop: threading.Event | None) -> bool:
        sent = time.monotonic()
        ok = self.backend.renew_lock(self.name, token, self.ttl, now=self._now())
        with self._state:
            if stop is not None and stop.is_set():
                return ok  # released meanwhile: the answer no longer matters
            if self._token != token or not self._held:
                return ok
            if ok:
                self._confirmed = max(self._confirmed, sent)
                return True
        self._mark_lost("a renewal found it taken over or released")
        return False

    def _mark_lost(self, why: str) -> None:
        if not self._lost:
            self._lost = True
            log.warning(
                "lock %r (token %s) lost: %s; the code holding it should stop",
                self.name,
                self._token,
                why,
            )

    def _renew_loop(self, token: int, stop: threading.Event) -> None:
        every = self.ttl.total_seconds() / 3
        pause = every
        while not stop.wait(pause):
            try:
                ok = self._renew(token, stop)
            except JobqError as exc:
                # the store is unreachable: try again soon, until the lease is known lost
                log.warning("lock %r (token %d): renewal failed: %s", self.name, token, exc)
                if self.lost:
                    return
                pause = min(every, max(0.2, every / 5))
                continue
            except Exception:  # never let the thread die silently
                log.exception("lock %r (token %d): renewal failed", self.name, token)
                if self.lost:
                    return
                pause = min(every, max(0.2, every / 5))
                continue
            if not ok:
                return
            pause = every


def _duration(value: object, what: str, name: str) -> timedelta:
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        if value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"lock {name!r}: {what} must be finite, got {value!r}")
        td = timedelta(seconds=value)
    else:
        raise ConfigurationError(
            f"lock {name!r}: {what} must be a timedelta or seconds, got {value!r}"
        )
    if td < timedelta(0):
        raise ConfigurationError(f"lock {name!r}: {what} must not be negative, got {value!r}")
    return td

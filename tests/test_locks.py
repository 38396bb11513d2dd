"""Distributed locks (``jobq.locks.Lock``) on every backend, and mutual exclusion between two
real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobq import ConfigurationError
from jobq.backends import Backend
from jobq.exceptions import LockError, LockLost, LockTimeout
from jobq.locks import Lock
from tests.conftest import T0, Clock, fresh_schema

WAIT = 120.0


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Spy:
    """A backend that records the lock calls made through it."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.calls: list[tuple[str, Any]] = []

    def acquire_lock(self, name: str, owner: str, ttl: timedelta, *, now: datetime | None = None):
        result = self._backend.acquire_lock(name, owner, ttl, now=now)
        self.calls.append(("acquire", result))
        return result

    def renew_lock(self, name: str, token: int, ttl: timedelta, *, now: datetime | None = None):
        result = self._backend.renew_lock(name, token, ttl, now=now)
        self.calls.append(("renew", (now, result)))
        return result

    def release_lock(self, name: str, token: int) -> bool:
        result = self._backend.release_lock(name, token)
        self.calls.append(("release", result))
        return result

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


_made: list[Lock] = []


@pytest.fixture(autouse=True)
def _release_all() -> Iterator[None]:
    """Release every lock a test left held, so no renewal thread outlives its store."""
    yield
    while _made:
        _made.pop().release()


def lock(backend: Any, clock: Clock, name: str = "import:customer-7", **kw: Any) -> Lock:
    kw.setdefault("ttl", 30)
    made = Lock(backend, name, clock=lambda: clock.now, **kw)
    _made.append(made)
    return made


def renewal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jobq-lock-")]


# -- definitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"name": ""}, "invalid lock name ''"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"name": 7}, "invalid lock name 7"),
        ({"name": "a\x00b"}, "invalid lock name"),
        ({"ttl": 0.5}, "ttl must be at least 1 second"),
        ({"ttl": "10"}, "ttl must be a timedelta or seconds"),
        ({"ttl": float("nan")}, "ttl must be a timedelta or seconds"),
        ({"ttl": float("inf")}, "ttl must be finite"),
        ({"wait": -1}, "wait must not be negative"),
        ({"owner": ""}, "owner must be a non-empty string"),
        ({"owner": "o" * 201}, "owner must be a non-empty string"),
    ],
)
def test_bad_arguments(args: dict[str, Any], fragment: str) -> None:
    fields: dict[str, Any] = {"name": "n", "ttl": 10}
    fields.update(args)
    name = fields.pop("name")
    ttl = fields.pop("ttl")
    with pytest.raises(ConfigurationError) as exc:
        Lock(None, name, ttl, **fields)  # type: ignore[arg-type]
    assert fragment in str(exc.value)


def test_a_200_character_name_is_fine(backend: Backend, clock: Clock) -> None:
    with lock(backend, clock, "n" * 200, wait=0) as held:
        assert held.token >= 1


# -- on every backend ----------------------------------------------------------------------------


def test_mutual_exclusion_and_increasing_tokens(backend: Backend, clock: Clock) -> None:
    a = lock(backend, clock, wait=0)
    with a:
        assert a.held and not a.lost
        a.check()
        first = a.token
        with pytest.raises(LockTimeout, match="'import:customer-7' was not acquired within 0s"):
            lock(backend, clock, wait=0).acquire()
        with pytest.raises(LockError, match="not re-entrant"):
            a.acquire()
        # another name is another lock
        with lock(backend, clock, "import:customer-8", wait=0):
            pass
    assert not a.held
    with pytest.raises(LockError, match="is not held"):
        a.check()
    b = lock(backend, clock, wait=0)
    with b:
        assert b.token > first
    with a:  # a Lock can be taken again after release, with a new token
        assert a.token > b.token
    assert repr(a).startswith("<jobq.Lock 'import:customer-7' not held token=")


def test_released_on_exception(backend: Backend, clock: Clock) -> None:
    with pytest.raises(KeyError), lock(backend, clock, wait=0):
        raise KeyError("boom")
    with lock(backend, clock, wait=0) as again:
        assert again.held


def test_expiry_takeover_and_fencing(backend: Backend, clock: Clock) -> None:
    a = lock(backend, clock, ttl=30, wait=0)
    a.acquire()
    clock.advance(30)  # held up to and including its expiry instant
    with pytest.raises(LockTimeout):
        lock(backend, clock, wait=0).acquire()
    clock.advance(1)
    b = lock(backend, clock, ttl=30, wait=0)
    b.acquire()  # a's lease ran out unrenewed: taken over
    assert b.token > a.token
    assert a.renew() is False
    assert a.lost and not a.held
    with pytest.raises(LockLost, match="was lost"):
        a.check()
    assert a.release() is False  # a stale token frees nothing
    with pytest.raises(LockTimeout):
        lock(backend, clock, wait=0).acquire()
    assert b.release() is True
    lock(backend, clock, wait=0).acquire()


def test_leaving_the_block_after_losing_the_lock_raises(backend: Backend, clock: Clock) -> None:
    with (
        pytest.raises(LockLost, match="was lost while the block ran"),
        lock(backend, clock, ttl=10, wait=0),
    ):
        clock.advance(11)
        lock(backend, clock, ttl=10, wait=0).acquire()
    # but an exception of the block's own is not masked
    with pytest.raises(ValueError), lock(backend, clock, "other", ttl=10, wait=0):
        clock.advance(11)
        lock(backend, clock, "other", ttl=10, wait=0).acquire()
        raise ValueError("mine")


def test_renew_extends_the_lease(backend: Backend, clock: Clock) -> None:
    a = lock(backend, clock, ttl=30, wait=0)
    a.acquire()
    clock.advance(20)
    assert a.renew() is True  # now until T0+50
    clock.advance(25)
    with pytest.raises(LockTimeout):
        lock(backend, clock, wait=0).acquire()
    clock.advance(6)
    lock(backend, clock, wait=0).acquire()


def test_the_renewal_thread_keeps_the_lease(backend: Backend, clock: Clock) -> None:
    spy = Spy(backend)
    a = lock(spy, clock, ttl=3, wait=0)  # renewed every second
    with a:
        clock.now = T0 + timedelta(seconds=2)
        wait_for(
            lambda: ("renew", (T0 + timedelta(seconds=2), True)) in spy.calls,
            "a renewal at the new time",
        )
        clock.now = T0 + timedelta(seconds=4)  # past the first lease: only renewed it holds
        with pytest.raises(LockTimeout):
            lock(backend, clock, wait=0).acquire()
        assert a.held
    assert spy.count("release") == 1
    wait_for(lambda: not renewal_threads(), "the renewal thread to stop")


def test_the_renewal_thread_notices_a_takeover(backend: Backend, clock: Clock) -> None:
    a = lock(backend, clock, ttl=3, wait=0)
    a.acquire()
    clock.advance(10)
    b = lock(backend, clock, ttl=60, wait=0)
    b.acquire()
    wait_for(lambda: a.lost, "the renewal thread to notice")
    with pytest.raises(LockLost):
        a.check()
    assert b.held and not b.lost
    b.release()
    a.release()
    wait_for(lambda: not renewal_threads(), "the renewal threads to stop")


def test_no_renewal_within_the_ttl_means_lost(backend: Backend, clock: Clock) -> None:
    a = lock(backend, clock, ttl=30, wait=0)
    a.acquire()
    a._confirmed -= 31  # as if the renewals had not reached the store for longer than the ttl
    assert a.lost
    with pytest.raises(LockLost):
        a.check()
    a.release()


def test_waiting_for_a_release(open_store: Callable[[], Backend], clock: Clock) -> None:
    first, second = open_store(), open_store()
    holder = lock(first, clock, wait=0)
    holder.acquire()
    spy = Spy(second)
    waiter = lock(spy, clock, wait=WAIT)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(waiter.acquire()))
    t.start()
    wait_for(lambda: spy.count("acquire") >= 2, "the waiter to poll")
    holder.release()
    t.join(WAIT)
    assert got and got[0] > holder.token
    waiter.release()


def test_wait_runs_out(backend: Backend, clock: Clock) -> None:
    lock(backend, clock, wait=0).acquire()
    spy = Spy(backend)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match=r"within 0\.3s"):
        lock(spy, clock, wait=timedelta(seconds=0.3)).acquire()
    assert time.monotonic() - started >= 0.3
    assert spy.count("acquire") >= 2  # polled, with backoff


# -- two processes -------------------------------------------------------------------------------

LOCKER = textwrap.dedent("""
    import os, sys, time
    from jobq import JobqError
    from jobq.backends import open_backend
    from jobq.exceptions import LockTimeout
    from jobq.locks import Lock

    backend = open_backend(os.environ["JOBQ_URL"])
    log = os.environ["SIDE_LOG"]
    rounds = int(sys.argv[1])

    def note(event, token):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{event} {os.getpid()} {token}\\n".encode())
        finally:
            os.close(fd)

    for _ in range(rounds):
        lock = Lock(backend, "shared-resource", ttl=60, wait=120)
        while True:
            try:
                lock.acquire()
                break
            except LockTimeout:
                raise
            except JobqError:  # a dropped connection: try again
                time.sleep(0.1)
        try:
            note("enter", lock.token)
            time.sleep(0.002)
            note("exit", lock.token)
        finally:
            lock.release()
    backend.close()
""")


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
    else:
        with fresh_schema() as url:
            yield url


@pytest.mark.slow
def test_two_processes_exclude_each_other(shared_url: str, tmp_path: Path) -> None:
    from jobq.backends import open_backend

    open_backend(shared_url).close()  # schema in place before both start
    log = tmp_path / "side.log"
    env = dict(os.environ, JOBQ_URL=shared_url, SIDE_LOG=str(log))
    rounds = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(rounds)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=WAIT)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 2 * 2 * rounds
    last_token = 0
    pids = set()
    for i in range(0, len(events), 2):
        enter, exit_ = events[i], events[i + 1]
        assert enter[0] == "enter" and exit_[0] == "exit", events[i : i + 2]
        assert enter[1:] == exit_[1:], "another holder entered before this one left"
        token = int(enter[2])
        assert token > last_token, "fencing tokens must increase"
        last_token = token
        pids.add(enter[1])
    assert len(pids) == 2

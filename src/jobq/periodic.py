"""Periodic jobs: cron schedules whose ticks become jobs, each exactly once.

A :class:`Periodic` says what to enqueue on which :class:`~jobq.cron.Cron` ticks; a
:class:`Scheduler` holds the schedules of an app and, on :meth:`Scheduler.tick`, enqueues every
tick that has come due. Any number of schedulers may run, on any number of machines: each tick
goes through :meth:`jobq.Backend.enqueue_tick`, which stores the schedule's last tick and the
job in one transaction only if the tick is newer than the stored one, so exactly one of them
enqueues it.

Ticks missed while no scheduler ran (every worker down) are handled by the schedule's ``missed``
policy:

* ``"skip"`` (default): enqueue only the latest due tick;
* ``"catch_up"``: also enqueue up to ``catch_up_limit`` of the missed ticks before it, the most
  recent ones, oldest first (older ones are dropped: a long outage does not flood the queue).

A schedule with no stored tick (it never ran) starts from the first tick after the scheduler
first saw it: it does not backfill history.

Each tick's job is tagged ``cron:<name>`` and ``cron-tick:<tick in UTC>``; with ``tick_kwarg``
the task also receives the tick (ISO 8601 text, UTC) as that keyword argument.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobq.backends.base import NewJob
from jobq.cron import Cron
from jobq.exceptions import ConfigurationError, InvalidJobError, QueueFull, UniqueConflict
from jobq.options import JobOptions, TaskDefaults, build_job, validate_task_name
from jobq.payload import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from jobq.backends.base import Backend
    from jobq.job import JobRecord

__all__ = ["MISSED_POLICIES", "Fired", "Periodic", "Scheduler"]

log = logging.getLogger("jobq.periodic")

MISSED_POLICIES = ("skip", "catch_up")
#: Most missed ticks a ``catch_up`` schedule may enqueue at once.
MAX_CATCH_UP = 1000
TAG = "cron:"
TICK_TAG = "cron-tick:"
#: How soon a scheduler tries a schedule again after its tick could not be enqueued (a full
#: queue, a unique key held).
RETRY_AFTER = timedelta(seconds=10)

# A name fits in a 100-character tag after "cron:".
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:<>\-]{0,94}")
_KWARG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAMPLE_TICK = datetime(2000, 1, 1, tzinfo=UTC)


class Periodic:
    """Enqueue ``task(*args, **kwargs)`` with ``options`` on every tick of ``cron``.

    ``cron`` is a :class:`~jobq.cron.Cron` or an expression (then read in ``timezone``,
    default UTC). ``name`` identifies the schedule in the store (its last tick is kept under
    it): 1-95 characters from letters, digits and ``_ . : < > -``. ``defaults`` are the task's
    (queue, priority, ...), which ``options`` override. Everything is checked here: a bad
    value raises :class:`jobq.ConfigurationError`, at definition time.
    """

    def __init__(
        self,
        name: str,
        cron: Cron | str,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: JobOptions | None = None,
        *,
        timezone: str | None = None,
        missed: str = "skip",
        catch_up_limit: int = 10,
        tick_kwarg: str | None = None,
        defaults: TaskDefaults | None = None,
        max_payload_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigurationError(
                f"invalid periodic schedule name {name!r}: use 1-95 characters from letters, "
                "digits and _ . : < > -, starting with a letter, digit or _ (pass name=... to "
                "choose one)"
            )
        if isinstance(cron, Cron):
            if timezone is not None and timezone != cron.timezone:
                raise ConfigurationError(
                    f"periodic schedule {name!r}: timezone={timezone!r} conflicts with the "
                    f"Cron's own {cron.timezone!r}; give the timezone in one place"
                )
        else:
            cron = Cron.parse(cron, timezone=timezone or "UTC")
        try:
            validate_task_name(task)
        except InvalidJobError as exc:
            raise ConfigurationError(f"periodic schedule {name!r}: {exc}") from None
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise ConfigurationError(
                f"periodic schedule {name!r}: args must be a list or tuple, got {args!r}"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigurationError(
                f"periodic schedule {name!r}: kwargs must be a dict, got {kwargs!r}"
            )
        if missed not in MISSED_POLICIES:
            raise ConfigurationError(
                f"periodic schedule {name!r}: missed={missed!r} is not a policy; use 'skip' "
                "(enqueue only the latest missed tick) or 'catch_up' (up to catch_up_limit)"
            )
        if (
            isinstance(catch_up_limit, bool)
            or not isinstance(catch_up_limit, int)
            or not 0 <= catch_up_limit <= MAX_CATCH_UP
        ):
            raise ConfigurationError(
                f"periodic schedule {name!r}: catch_up_limit must be an int from 0 to "
                f"{MAX_CATCH_UP}, got {catch_up_limit!r}"
            )
        if tick_kwarg is not None and (
            not isinstance(tick_kwarg, str) or not _KWARG_RE.fullmatch(tick_kwarg)
        ):
            raise ConfigurationError(
                f"periodic schedule {name!r}: tick_kwarg must be a parameter name, got "
                f"{tick_kwarg!r}"
            )
        if tick_kwarg is not None and kwargs is not None and tick_kwarg in kwargs:
            raise ConfigurationError(
                f"periodic schedule {name!r}: kwargs already has {tick_kwarg!r}, which "
                "tick_kwarg would overwrite with the tick time; choose another name"
            )
        options = options if options is not None else JobOptions()
        if options.run_at is not None or options.deadline is not None:
            raise ConfigurationError(
                f"periodic schedule {name!r}: run_at and deadline are fixed instants, which a "
                "repeating job cannot have; use delay (relative to each tick's enqueue)"
            )
        self.name = name
        self.cron = cron
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = options
        self.missed = missed
        self.catch_up_limit = catch_up_limit
        self.tick_kwarg = tick_kwarg
        self.defaults = defaults if defaults is not None else TaskDefaults()
        self.max_payload_bytes = max_payload_bytes
        try:
            self.build(_SAMPLE_TICK)
        except InvalidJobError as exc:
            raise ConfigurationError(f"periodic schedule {name!r}: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"<Periodic {self.name} {self.cron.expression!r} tz={self.cron.timezone} "
            f"task={self.task} missed={self.missed}>"
        )

    def build(self, tick: datetime) -> NewJob:
        """The job for ``tick`` (validated; raises :class:`jobq.InvalidJobError`)."""
        kwargs = dict(self.kwargs)
        if self.tick_kwarg is not None:
            kwargs[self.tick_kwarg] = tick.astimezone(UTC).isoformat()
        tags = (*(self.options.tags or ()), TAG + self.name, TICK_TAG + _tick_text(tick))
        options = replace(self.options, tags=tags)
        return build_job(
            self.task, self.args, kwargs, options, self.defaults, self.max_payload_bytes
        )

    def due_ticks(self, after: datetime, now: datetime) -> list[datetime]:
        """The ticks to enqueue at ``now`` when every tick up to ``after`` was handled, oldest
        first, by the ``missed`` policy (the latest due tick always; with ``catch_up``, up to
        ``catch_up_limit`` of the missed ones before it, the most recent ones)."""
        latest = self.cron.last_at_or_before(now, after=after)
        if latest is None:
            return []
        limit = self.catch_up_limit if self.missed == "catch_up" else 0
        if limit == 0:
            return [latest]
        earlier = self.cron.ticks_between(after, latest, limit=limit + 1)
        if len(earlier) <= limit:  # the latest, and every missed tick before it
            return earlier
        missed: list[datetime] = []
        t = latest
        while len(missed) < limit:
            prev = self.cron.last_at_or_before(t - _US, after=after)
            if prev is None:
                break
            missed.append(prev)
            t = prev
        return [*reversed(missed), latest]


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick enqueued by :meth:`Scheduler.tick`."""

    name: str
    tick: datetime
    job: JobRecord


class Scheduler:
    """The periodic schedules of an app, and the loop step that enqueues their due ticks.

    Call :meth:`tick` from one place per process (the worker's maintenance leader does), at
    or after :meth:`next_wakeup`; as many schedulers as you like may run at once.
    """

    def __init__(self, schedules: Iterable[Periodic] = ()) -> None:
        self._lock = threading.Lock()
        self._schedules: dict[str, Periodic] = {}
        #: when this scheduler first saw a schedule with no stored tick (it starts from there)
        self._first_seen: dict[str, datetime] = {}
        self._failed: set[str] = set()
        for p in schedules:
            self.add(p)

    def __repr__(self) -> str:
        return f"<Scheduler {len(self._schedules)} schedules>"

    def add(self, periodic: Periodic) -> Periodic:
        """Register ``periodic``; a second schedule of the same name is refused."""
        if not isinstance(periodic, Periodic):
            raise ConfigurationError(f"expected a jobq.periodic.Periodic, got {periodic!r}")
        with self._lock:
            existing = self._schedules.get(periodic.name)
            if existing is not None and existing is not periodic:
                raise ConfigurationError(
                    f"a periodic schedule named {periodic.name!r} is already registered "
                    f"({existing!r}); give this one another name with name=..."
                )
            self._schedules[periodic.name] = periodic
        return periodic

    def remove(self, name: str) -> None:
        """Forget a schedule (its last tick stays in the store)."""
        with self._lock:
            self._schedules.pop(name, None)
            self._first_seen.pop(name, None)
            self._failed.discard(name)

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        """Registered schedules by name."""
        with self._lock:
            return dict(self._schedules)

    def due(
        self, last_ticks: Mapping[str, datetime], now: datetime
    ) -> list[tuple[Periodic, datetime]]:
        """(schedule, tick) pairs due at ``now`` given the stored last ticks, each schedule's
        oldest first. Remembers when it first saw a schedule that has no stored tick."""
        out: list[tuple[Periodic, datetime]] = []
        with self._lock:
            schedules = list(self._schedules.values())
            for p in schedules:
                after = last_ticks.get(p.name)
                if after is None:
                    after = self._first_seen.setdefault(p.name, now)
                out.extend((p, t) for t in p.due_ticks(after, now))
        return out

    def tick(self, backend: Backend, now: datetime | None = None) -> list[Fired]:
        """Enqueue every due tick of every schedule (exactly once across all schedulers);
        returns those this call enqueued. ``now`` defaults to the store's clock.

        A tick the store refuses (its queue is full, a unique key is held, ...) is logged and
        tried again on a later call; a store that cannot be reached raises.
        """
        with self._lock:
            if not self._schedules:
                return []
        if now is None:
            now = backend.now()
        due = self.due(backend.cron_ticks(), now)
        fired: list[Fired] = []
        failed: set[str] = set()
        for p, tick in due:
            if p.name in failed:
                continue  # its later ticks wait for this one
            try:
                record = backend.enqueue_tick(p.name, tick, p.build(tick), now=now)
            except (QueueFull, UniqueConflict, InvalidJobError) as exc:
                failed.add(p.name)
                log.warning(
                    "periodic schedule %r: tick %s not enqueued, will try again: %s",
                    p.name,
                    tick.isoformat(),
                    exc,
                )
                continue
            if record is not None:
                fired.append(Fired(p.name, tick, record))
                log.info(
                    "periodic schedule %r: enqueued job %d for tick %s",
                    p.name,
                    record.id,
                    tick.isoformat(),
                )
        with self._lock:
            self._failed = failed
        return fired

    def next_wakeup(self, now: datetime) -> datetime | None:
        """When :meth:`tick` next has something to do, after a call at ``now``: the earliest
        next tick of any schedule (sooner if a tick could not be enqueued); None without
        schedules."""
        with self._lock:
            schedules = list(self._schedules.values())
            retry = bool(self._failed)
        if not schedules:
            return None
        wake = min(p.cron.next_after(now) for p in schedules)
        return min(wake, now + RETRY_AFTER) if retry else wake


_US = timedelta(microseconds=1)


def _tick_text(tick: datetime) -> str:
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

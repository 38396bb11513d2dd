"""Per-task defaults and per-call options, and their validation into a :class:`NewJob`.

Everything a caller passes is checked here, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from jobq import payload
from jobq.backends.base import NewJob
from jobq.clock import as_duration, require_aware
from jobq.exceptions import ConfigurationError, InvalidJobError
from jobq.retry import DEFAULT_RETRY, RetryPolicy

_QUEUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}")
_TASK_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:<>\-]{0,254}")
PRIORITY_LIMIT = 1_000_000
MAX_ATTEMPTS_LIMIT = 10_000


def validate_queue(name: object) -> str:
    if not isinstance(name, str) or not _QUEUE_RE.fullmatch(name):
        raise InvalidJobError(
            f"invalid queue name {name!r}: use 1-128 characters from letters, digits and _ . : -, "
            "not starting with . : or -"
        )
    return name


def validate_task_name(name: object) -> str:
    if not isinstance(name, str) or not _TASK_RE.fullmatch(name):
        raise InvalidJobError(
            f"invalid task name {name!r}: use 1-255 characters from letters, digits and "
            "_ . : < > -, starting with a letter or _"
        )
    return name


def validate_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"priority must be an int, got {value!r}")
    if not -PRIORITY_LIMIT <= value <= PRIORITY_LIMIT:
        raise InvalidJobError(
            f"priority {value} is out of range; use -{PRIORITY_LIMIT:,}..{PRIORITY_LIMIT:,} "
            "(higher runs first)"
        )
    return value


def validate_max_attempts(value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (1 <= value <= MAX_ATTEMPTS_LIMIT)
    ):
        raise InvalidJobError(
            f"max_attempts must be an int from 1 to {MAX_ATTEMPTS_LIMIT}, got {value!r}"
        )
    return value


LIMIT_MAX = 1_000_000
ON_CONFLICT = ("skip", "replace", "raise")
_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600}
_UNITS |= {"hour": 3600, "d": 86400, "day": 86400}

#: A concurrency key given as a function of the call's arguments: ``f(args, kwargs) -> str``.
KeyFunction = Callable[[Sequence[Any], Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` starts per ``period`` (a sliding window), across every worker."""

    limit: int
    period: timedelta

    @classmethod
    def parse(cls, value: object, what: str = "rate_limit") -> RateLimit:
        """``"10/s"``, ``"100/m"``, ``"5/10s"``, ``"1000/h"``, ``"50/d"``, ``(10, 1.5)`` or a
        RateLimit; raises InvalidJobError naming the value otherwise."""
        if isinstance(value, RateLimit):
            return cls(validate_limit(value.limit, what), value.period)
        if isinstance(value, tuple) and len(value) == 2:
            period = as_duration(value[1], f"{what} period", allow_zero=False)
            return cls(validate_limit(value[0], what), period)
        if isinstance(value, str) and (m := _RATE_RE.fullmatch(value)):
            n, mult, unit = int(m[1]), int(m[2] or 1), m[3]
            if mult < 1:
                raise InvalidJobError(f"{what} {value!r}: the period must be positive")
            return cls(validate_limit(n, what), timedelta(seconds=mult * _UNITS[unit]))
        raise InvalidJobError(
            f"{what} must look like '10/s', '100/m', '5/10s', '1000/h' or (limit, seconds), got "
            f"{value!r}"
        )


def validate_limit(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise InvalidJobError(f"{what} must be an int from 1 to {LIMIT_MAX:,}, got {value!r}")
    return value


def validate_key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidJobError(
            f"{what} must be a non-empty string of at most 255 characters, got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """What a task's jobs get unless a call says otherwise."""

    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    timeout: timedelta | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    run_late: bool = False
    #: at most this many of the task's jobs run at once (per concurrency key, if one is set)
    concurrency_limit: int | None = None
    #: a fixed key, or ``f(args, kwargs) -> str`` (e.g. one key per customer)
    concurrency_key: str | KeyFunction | None = None
    rate_limit: RateLimit | None = None
    rate_key: str | None = None
    #: names of secret kwargs and str(index) of secret positional args
    secret: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            validate_queue(self.queue)
            validate_priority(self.priority)
            validate_max_attempts(self.max_attempts)
            if self.timeout is not None:
                as_duration(self.timeout, "timeout", allow_zero=False)
            if self.concurrency_limit is not None:
                validate_limit(self.concurrency_limit, "concurrency_limit")
            if isinstance(self.concurrency_key, str):
                validate_key(self.concurrency_key, "concurrency_key")
            elif self.concurrency_key is not None and not callable(self.concurrency_key):
                raise InvalidJobError(
                    f"concurrency_key must be a string or a function (args, kwargs) -> str, "
                    f"got {self.concurrency_key!r}"
                )
            if self.concurrency_key is not None and self.concurrency_limit is None:
                raise InvalidJobError(
                    "concurrency_key needs concurrency_limit (how many may run at once per key)"
                )
            if self.rate_key is not None:
                validate_key(self.rate_key, "rate_key")
                if self.rate_limit is None:
                    raise InvalidJobError("rate_key needs rate_limit, e.g. rate_limit='10/s'")
        except InvalidJobError as exc:
            raise ConfigurationError(str(exc)) from None
        if not callable(getattr(self.retry, "delay", None)):
            raise ConfigurationError(
                f"retry={self.retry!r} has no delay(attempt, error) method; pass e.g. "
                "jobq.ExponentialBackoff() or jobq.NoRetry()"
            )


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-call overrides; ``None`` means "use the task's default"."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: timedelta | float | None = None
    delay: timedelta | float | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None
    unique_key: str | None = None
    tags: Sequence[str] | None = None
    on_conflict: str | None = None
    unique_window: timedelta | float | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None
    rate_limit: RateLimit | str | tuple[int, float] | None = None
    #: jobs (handles) or job ids this job waits for
    depends_on: Sequence[Any] | None = None
    allow_failed: bool | None = None
    #: when the queue is full (max_depth), wait up to this long for room instead of raising
    wait_if_full: timedelta | float | None = None

    def merged(self, other: JobOptions) -> JobOptions:
        """These options with every field that ``other`` sets taken from ``other``."""
        changes = {f.name: v for f in fields(other) if (v := getattr(other, f.name)) is not None}
        return replace(self, **changes)


def build_job(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: JobOptions,
    defaults: TaskDefaults,
    max_payload_bytes: int | None,
) -> NewJob:
    """Validate one call into a :class:`NewJob`; raise a :class:`jobq.InvalidJobError` if bad."""
    return _new_job(_fields(task, args, kwargs, options, defaults), args, kwargs, max_payload_bytes)


def job_builder(
    task: str, options: JobOptions, defaults: TaskDefaults, max_payload_bytes: int | None
) -> Callable[[Sequence[Any], Mapping[str, Any] | None], NewJob]:
    """``build_job`` for many calls of one task with the same options: what does not depend on
    a call's arguments is validated with the first call only (so it raises the same errors, in
    the same order, as ``build_job`` for each call)."""
    fixed: dict[str, Any] | None = None
    per_call_key = options.concurrency_key is None and callable(defaults.concurrency_key)

    def build(args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> NewJob:
        nonlocal fixed
        if fixed is None:
            fields = fixed = _fields(task, args, kwargs, options, defaults)
        elif per_call_key:
            key, limit = _concurrency(task, args, kwargs, options, defaults)
            fields = {**fixed, "concurrency_key": key, "concurrency_limit": limit}
        else:
            fields = fixed
        return _new_job(fields, args, kwargs, max_payload_bytes)

    return build


def _new_job(
    fields: dict[str, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    max_payload_bytes: int | None,
) -> NewJob:
    args_json, kwargs_json = payload.encode_args(
        list(args) if isinstance(args, tuple | list) else args,  # type: ignore[arg-type]
        dict(kwargs) if isinstance(kwargs, Mapping) else ({} if kwargs is None else kwargs),
        max_payload_bytes,
    )
    return NewJob(args_json=args_json, kwargs_json=kwargs_json, **fields)


def _fields(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: JobOptions,
    defaults: TaskDefaults,
) -> dict[str, Any]:
    """Every field of the call's NewJob but its payload, validated."""
    validate_task_name(task)
    queue = validate_queue(options.queue if options.queue is not None else defaults.queue)
    priority = validate_priority(
        options.priority if options.priority is not None else defaults.priority
    )
    max_attempts = validate_max_attempts(
        options.max_attempts if options.max_attempts is not None else defaults.max_attempts
    )
    timeout = (
        as_duration(options.timeout, "timeout", allow_zero=False)
        if options.timeout is not None
        else defaults.timeout
    )
    if options.delay is not None and options.run_at is not None:
        raise InvalidJobError(
            f"give delay ({options.delay!r}) or run_at ({options.run_at!r}), not both"
        )
    delay = as_duration(options.delay, "delay") if options.delay is not None else None
    run_at = require_aware(options.run_at, "run_at") if options.run_at is not None else None
    deadline = require_aware(options.deadline, "deadline") if options.deadline is not None else None
    unique_key = options.unique_key
    if unique_key is not None and (
        not isinstance(unique_key, str) or not unique_key or len(unique_key) > 255
    ):
        raise InvalidJobError(
            f"unique_key must be a non-empty string of at most 255 characters, got {unique_key!r}"
        )
    tags: tuple[str, ...] = ()
    if options.tags is not None:
        if isinstance(options.tags, str) or not all(
            isinstance(t, str) and 0 < len(t) <= 100 for t in options.tags
        ):
            raise InvalidJobError(f"tags must be a list of non-empty strings, got {options.tags!r}")
        tags = tuple(options.tags)
    on_conflict = options.on_conflict if options.on_conflict is not None else "skip"
    if on_conflict not in ON_CONFLICT:
        raise InvalidJobError(
            f"on_conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}"
        )
    unique_window = (
        as_duration(options.unique_window, "unique_window", allow_zero=False)
        if options.unique_window is not None
        else None
    )
    if unique_key is None and (options.on_conflict is not None or unique_window is not None):
        raise InvalidJobError("on_conflict and unique_window need a unique_key")
    concurrency_key, concurrency_limit = _concurrency(task, args, kwargs, options, defaults)
    rate: RateLimit | None = (
        RateLimit.parse(options.rate_limit)
        if options.rate_limit is not None
        else defaults.rate_limit
    )
    rate_key = options.rate_key if options.rate_key is not None else defaults.rate_key
    if rate_key is not None:
        validate_key(rate_key, "rate_key")
        if rate is None:
            raise InvalidJobError("rate_key needs rate_limit, e.g. rate_limit='10/s'")
    elif rate is not None:
        rate_key = f"task:{task}"
    depends_on = dependency_ids(options.depends_on) if options.depends_on is not None else ()
    return dict(
        queue=queue,
        task=task,
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
        run_at=run_at,
        delay=delay,
        deadline=deadline,
        unique_key=unique_key,
        tags=tags,
        on_conflict=on_conflict,
        unique_window=unique_window,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        rate_key=rate_key,
        rate_limit=rate.limit if rate is not None else None,
        rate_period=rate.period if rate is not None else None,
        depends_on=depends_on,
        allow_failed=bool(options.allow_failed),
        secret=defaults.secret,
    )


def _concurrency(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: JobOptions,
    defaults: TaskDefaults,
) -> tuple[str | None, int | None]:
    limit = (
        validate_limit(options.concurrency_limit, "concurrency_limit")
        if options.concurrency_limit is not None
        else defaults.concurrency_limit
    )
    key: str | None
    if options.concurrency_key is not None:
        key = validate_key(options.concurrency_key, "concurrency_key")
    elif callable(defaults.concurrency_key):
        try:
            computed = defaults.concurrency_key(args, kwargs or {})
        except Exception as exc:
            raise InvalidJobError(
                f"the task's concurrency_key function failed for this call: {exc!r}"
            ) from exc
        key = validate_key(computed, "concurrency_key (computed)")
    else:
        key = defaults.concurrency_key
    if key is not None and limit is None:
        raise InvalidJobError(
            f"concurrency_key {key!r} needs a concurrency_limit (how many may run at once)"
        )
    if key is None and limit is not None:
        key = f"task:{task}"
    return key, limit


def dependency_ids(items: object) -> tuple[int, ...]:
    """Job ids from ``depends_on``: handles (anything with an int ``id``) or ints."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence | set | frozenset):
        raise InvalidJobError(f"depends_on must be a list of jobs or job ids, got {items!r}")
    out: list[int] = []
    for item in items:
        job_id = getattr(item, "id", item)
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise InvalidJobError(
                f"depends_on item {item!r} is not a job or a job id (a positive int)"
            )
        if job_id not in out:
            out.append(job_id)
    return tuple(out)

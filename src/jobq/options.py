"""Per-task defaults and per-call options, and their validation into a :class:`NewJob`.

Everything a caller passes is checked here, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """What a task's jobs get unless a call says otherwise."""

    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    timeout: timedelta | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    run_late: bool = False

    def __post_init__(self) -> None:
        try:
            validate_queue(self.queue)
            validate_priority(self.priority)
            validate_max_attempts(self.max_attempts)
            if self.timeout is not None:
                as_duration(self.timeout, "timeout", allow_zero=False)
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
    args_json, kwargs_json = payload.encode_args(
        list(args) if isinstance(args, tuple | list) else args,  # type: ignore[arg-type]
        dict(kwargs) if isinstance(kwargs, Mapping) else ({} if kwargs is None else kwargs),
        max_payload_bytes,
    )
    return NewJob(
        queue=queue,
        task=task,
        args_json=args_json,
        kwargs_json=kwargs_json,
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
        run_at=run_at,
        delay=delay,
        deadline=deadline,
        unique_key=unique_key,
        tags=tags,
    )

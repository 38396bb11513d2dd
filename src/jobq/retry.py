"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from jobq.clock import as_duration
from jobq.exceptions import ConfigurationError, JobqError


class RetryPolicy(Protocol):
    """Decides the wait before attempt ``attempt + 1`` after ``error``; ``None``: do not retry.

    ``attempt`` is the number of the attempt that just failed (1 for the first).
    """

    def delay(self, attempt: int, error: BaseException) -> timedelta | None: ...


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """``base * factor ** (attempt - 1)``, capped at ``max_delay``, minus up to ``jitter`` of it.

    Jitter spreads the retries of jobs that failed together (e.g. when a mail server went down)
    so they do not all return at the same instant.
    """

    base: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    max_delay: timedelta = timedelta(hours=1)
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.base < timedelta(0) or self.max_delay < timedelta(0):
            raise ConfigurationError(
                f"ExponentialBackoff base {self.base} and max_delay {self.max_delay} must not be "
                "negative"
            )
        if self.factor < 1:
            raise ConfigurationError(f"ExponentialBackoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                f"ExponentialBackoff jitter must be between 0 and 1, got {self.jitter}"
            )

    def delay(self, attempt: int, error: BaseException) -> timedelta:
        exponent = max(0, attempt - 1)
        cap = self.max_delay.total_seconds()
        seconds = min(cap, self.base.total_seconds() * self.factor ** min(exponent, 64))
        return timedelta(seconds=seconds * (1 - self.jitter * random.random()))


@dataclass(frozen=True, slots=True)
class FixedDelay:
    """The same wait before every retry."""

    wait: timedelta

    def __post_init__(self) -> None:
        try:
            wait = as_duration(self.wait, "FixedDelay wait")
        except JobqError as exc:
            raise ConfigurationError(str(exc)) from None
        object.__setattr__(self, "wait", wait)  # seconds given as a number become a timedelta

    def delay(self, attempt: int, error: BaseException) -> timedelta:
        return self.wait


@dataclass(frozen=True, slots=True)
class NoRetry:
    """Never retry: the first failure makes the job ``dead``."""

    def delay(self, attempt: int, error: BaseException) -> None:
        return None


DEFAULT_RETRY = ExponentialBackoff()

"""Time: UTC, tz-aware, stored as integer microseconds since the Unix epoch."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from jobq.exceptions import InvalidJobError

#: Sort key for "no deadline": after every real deadline.
NO_DEADLINE_US = 2**62


def now_us() -> int:
    """The local wall clock in microseconds since the epoch."""
    return time.time_ns() // 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch for a tz-aware datetime."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def td_us(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def require_aware(value: object, what: str) -> datetime:
    """Return ``value`` if it is a tz-aware datetime, else raise a clear error."""
    if not isinstance(value, datetime):
        raise InvalidJobError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidJobError(
            f"{what} {value!r} is a naive datetime; pass a tz-aware one, "
            "e.g. datetime.now(timezone.utc) or dt.replace(tzinfo=timezone.utc)"
        )
    return value


def as_duration(value: object, what: str, *, allow_zero: bool = True) -> timedelta:
    """Accept a ``timedelta`` or a number of seconds; refuse negatives, NaN and other types."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise InvalidJobError(f"{what} must be a timedelta or seconds, got {value!r}")
    if isinstance(value, timedelta):
        td = value
    else:
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidJobError(f"{what} must be a finite number of seconds, got {value!r}")
        td = timedelta(seconds=value)
    if td < timedelta(0) or (not allow_zero and td == timedelta(0)):
        raise InvalidJobError(
            f"{what} must be {'zero or ' if allow_zero else ''}positive, got {value!r}"
        )
    return td


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
